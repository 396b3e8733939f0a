"""`monitor ...` commands (qRcmd): what a user asks the stub itself, not the guest."""

from __future__ import annotations

from backends.api import BackendError
from gdbstub.target import Target

HELP = """\
monitor caps    the backend's capabilities: BRP and WRP counts, single-step, notes
monitor slots   every BRP/WRP: free, or which gdb point owns it, with its encoded registers
monitor irq on|off
                raise or lower the selected thread's (vCPU's) IRQ line; gdb's lines go low when it leaves
monitor gva2gpa ADDR
                the guest physical address the selected vCPU's MMU maps virtual address ADDR to
monitor help    this text"""


def run_command(target: Target, command: str) -> str:
    words = command.split()
    if not words or words[0] == "help":
        return HELP
    if words[0] == "caps":
        c = target.caps
        lines = [
            f"arch: {c.arch}",
            f"vCPUs: {c.vcpus}",
            f"hardware breakpoints (BRPs): {c.hw_breakpoints}",
            f"hardware watchpoints (WRPs): {c.hw_watchpoints}",
            f"single-step: {'yes' if c.single_step else 'no'}",
            f"software breakpoints: {'yes' if c.sw_breakpoints else 'no'}",
            f"guest-debug control mask (KVM_GUESTDBG_*): {c.guest_debug_flags:#x}",
        ]
        if c.debug_id is not None:
            lines.append(f"ID_AA64DFR0_EL1: {c.debug_id:#x}")
        if c.far_policy:
            lines.append(f"watchpoint FAR policy: {c.far_policy}")
        lines.append(f"IRQ line per vCPU (monitor irq): {'yes' if c.irq_line else 'no'}")
        lines += [f"note: {n}" for n in c.notes]
        return "\n".join(lines)
    if words[0] == "slots":
        current = target.slots.describe()
        if target.slots.points() or not target.last_run_slots:
            return "\n".join(current)
        # gdb removes every point while the guest is stopped (unless `set breakpoint always-inserted on`):
        # what the user wants to see is how the slots were programmed while the guest ran.
        return "\n".join(
            ["all slots free now (gdb removes its points while stopped); during the last run:"]
            + ["  " + line for line in target.last_run_slots]
        )
    if words[0] == "irq":
        return _irq(target, words[1:])
    if words[0] == "gva2gpa":
        return _gva2gpa(target, words[1:])
    return f"unknown monitor command {words[0]!r}\n{HELP}"


def _irq(target: Target, args: list[str]) -> str:
    levels = {"on": True, "1": True, "high": True, "off": False, "0": False, "low": False}
    if len(args) != 1 or args[0] not in levels:
        return "usage: monitor irq on|off"
    if not target.caps.irq_line:
        return "this backend has no IRQ line (capability irq_line: no)"
    try:
        target.set_irq_line(levels[args[0]])
    except BackendError as e:
        return f"error: {e}"
    return f"vCPU {target.vcpu}: IRQ line {'high' if levels[args[0]] else 'low'}"


def _gva2gpa(target: Target, args: list[str]) -> str:
    try:
        if len(args) != 1:
            raise ValueError
        va = int(args[0], 0)
        if not 0 <= va < 1 << 64:
            raise ValueError
    except ValueError:
        return "usage: monitor gva2gpa ADDR (an address such as 0xffffff8000200000)"
    try:
        pa = target.backend.translate(va, target.vcpu)
    except BackendError as e:
        return f"{va:#x}: {e}"
    return f"{va:#x} -> {pa:#x}"
