"""The one interface every backend implements, shaped on the KVM vCPU uAPI.

gdbstub/ talks to a backend only through this module: capabilities (the
KVM_CHECK_EXTENSION answers), guest memory, per-vCPU registers,
set_guest_debug (KVM_SET_GUEST_DEBUG) and a blocking run() that returns an
Exit as KVM_RUN would (KVM_EXIT_DEBUG carries hsr/hsr_high as ``esr`` and
``far``).  kick() is the only method that may be called from another thread.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

# KVM_SET_GUEST_DEBUG control bits (include/uapi/linux/kvm.h).
GUESTDBG_ENABLE = 0x1
GUESTDBG_SINGLESTEP = 0x2
GUESTDBG_USE_SW_BP = 0x10000
GUESTDBG_USE_HW = 0x20000
GUESTDBG_VALID_MASK = GUESTDBG_ENABLE | GUESTDBG_SINGLESTEP | GUESTDBG_USE_SW_BP | GUESTDBG_USE_HW
# x86-64 only (arch/x86/include/uapi/asm/kvm.h): USE_HW is KVM_GUESTDBG_USE_HW_BP there.
GUESTDBG_INJECT_DB = 0x40000
GUESTDBG_INJECT_BP = 0x80000
GUESTDBG_BLOCKIRQ = 0x100000
GUESTDBG_VALID_MASK_X86 = GUESTDBG_VALID_MASK | GUESTDBG_INJECT_DB | GUESTDBG_INJECT_BP | GUESTDBG_BLOCKIRQ

MAX_DBG_REGS = 16  # KVM_ARM_MAX_DBG_REGS

# x86 exception vectors a DEBUG exit can carry.
X86_DB_VECTOR = 1
X86_BP_VECTOR = 3

# Exception classes (ESR_ELx.EC) a DEBUG exit can carry.
EC_BREAKPT_LOW = 0x30
EC_SOFTSTP_LOW = 0x32
EC_WATCHPT_LOW = 0x34
EC_BKPT32 = 0x38
EC_BRK64 = 0x3C


class BackendError(Exception):
    """A request the backend refuses (the EINVAL/EFAULT of an ioctl)."""


class GuestMemoryError(BackendError):
    """An access outside guest memory."""


class ExitReason(enum.Enum):
    DEBUG = "debug"  # KVM_EXIT_DEBUG: esr/far are meaningful
    INTERRUPTED = "interrupted"  # kick() (KVM_EXIT_INTR after a signal)
    FAULT = "fault"  # the guest faulted in a way it cannot handle; ``signal`` says how
    SHUTDOWN = "shutdown"  # the guest powered off (PSCI SYSTEM_OFF); ``status`` is its code


@dataclass(frozen=True)
class Exit:
    reason: ExitReason
    esr: int = 0  # arm64: hsr | hsr_high << 32
    far: int = 0  # arm64: only written on watchpoint exits; stale otherwise, as in KVM
    signal: int = 0  # for FAULT: 4 (SIGILL), 11 (SIGSEGV), 7 (SIGBUS)
    status: int = 0  # for SHUTDOWN
    detail: str = ""
    # x86-64 (struct kvm_debug_exit_arch): the vector (1 #DB, 3 #BP), the linear rip, DR6 and DR7
    exception: int = 0
    pc: int = 0
    dr6: int = 0
    dr7: int = 0

    @property
    def ec(self) -> int:
        return (self.esr >> 26) & 0x3F


@dataclass(frozen=True)
class Capabilities:
    """What the backend can do; gdbstub derives qSupported and slot counts from it."""

    arch: str  # "aarch64"
    hw_breakpoints: int  # KVM_CAP_GUEST_DEBUG_HW_BPS
    hw_watchpoints: int  # KVM_CAP_GUEST_DEBUG_HW_WPS
    single_step: bool = True
    sw_breakpoints: bool = True
    guest_debug_flags: int = GUESTDBG_VALID_MASK
    vcpus: int = 1
    interrupt_controller: bool = False  # a GIC (or APIC) and a timer: the guest can take interrupts
    irq_line: bool = False  # set_irq_line drives each vCPU's IRQ input (arm64 KVM_ARM_IRQ_TYPE_CPU, no GIC)
    debug_id: int | None = None  # arm64: ID_AA64DFR0_EL1 as the guest reads it (BRPs, WRPs, CTX_CMPs...)
    far_policy: str = ""  # which address a watchpoint exit reports in FAR (sim: configurable)
    notes: tuple[str, ...] = ()  # free text for `monitor caps` (unsupported features etc.)


def _zeros() -> list[int]:
    return [0] * MAX_DBG_REGS


@dataclass
class DebugRegs:
    """struct kvm_guest_debug_arch for arm64: 16 of each debug register."""

    bcr: list[int] = field(default_factory=_zeros)
    bvr: list[int] = field(default_factory=_zeros)
    wcr: list[int] = field(default_factory=_zeros)
    wvr: list[int] = field(default_factory=_zeros)

    def copy(self) -> DebugRegs:
        return DebugRegs(list(self.bcr), list(self.bvr), list(self.wcr), list(self.wvr))


@dataclass
class X86DebugRegs:
    """struct kvm_guest_debug_arch for x86-64: debugreg[0..3] = DR0-DR3, [6] = DR6, [7] = DR7."""

    debugreg: list[int] = field(default_factory=lambda: [0] * 8)

    def copy(self) -> X86DebugRegs:
        return X86DebugRegs(list(self.debugreg))


ConsoleSink = Callable[[bytes], None]


class Backend(Protocol):
    """One virtual machine.  Registers use the arch register table's names
    (aarch64: x0..x30, sp, pc, cpsr (full 64-bit PSTATE), v0..v31 (128-bit), fpsr, fpcr;
    x86_64: gdb's amd64 names, see gdbstub/x86_64.py)."""

    def capabilities(self) -> Capabilities: ...

    def read_memory(self, addr: int, size: int) -> bytes:
        """Guest physical addresses (what the guest's MMU maps to; translate() gives them).  Raises
        GuestMemoryError if any byte is outside guest memory."""
        ...

    def write_memory(self, addr: int, data: bytes) -> None: ...

    def translate(self, addr: int, vcpu: int = 0) -> int:
        """The guest physical address that this vCPU's MMU maps the virtual address to now (itself with
        the MMU off), as x86's KVM_TRANSLATE answers; GuestMemoryError if nothing is mapped there."""
        ...

    def get_regs(self, vcpu: int = 0) -> dict[str, int]:
        """Every register of the arch table (KVM_GET_ONE_REG for each, or GET_REGS)."""
        ...

    def get_reg(self, name: str, vcpu: int = 0) -> int:
        """One register (KVM_GET_ONE_REG): the cheap path for pc and the stop-reply registers."""
        ...

    def set_regs(self, regs: dict[str, int], vcpu: int = 0) -> None:
        """Writes only the registers named; unknown names raise BackendError."""
        ...

    def set_guest_debug(self, control: int, regs: DebugRegs | X86DebugRegs | None = None, vcpu: int = 0) -> None:
        """KVM_SET_GUEST_DEBUG: unknown control bits raise BackendError (EINVAL).  The registers are the
        backend's arch's: DebugRegs on arm64, X86DebugRegs on x86-64."""
        ...

    def run(self, vcpu: int = 0) -> Exit:
        """Blocks until the vCPU exits (debug event, kick, fault, shutdown)."""
        ...

    def kick(self, vcpu: int = 0) -> None:
        """Thread-safe: makes a blocking run() return INTERRUPTED soon (or the next one at once)."""
        ...

    def set_irq_line(self, level: bool, vcpu: int = 0) -> None:
        """Thread-safe: raise or lower the vCPU's level-sensitive IRQ input (KVM_IRQ_LINE, type CPU), as an
        interrupt controller outside the kernel would.  The guest takes the IRQ while the line is high and
        its PSTATE.I is clear; a WFI waits for the line.  BackendError unless ``irq_line`` is reported."""
        ...

    def close(self) -> None: ...
