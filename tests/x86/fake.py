"""An in-memory x86-64 backend for driving the real Target, Session and Server without /dev/kvm.

Registers are a dict, RAM a bytearray at RAM_BASE, and set_guest_debug calls are recorded.  run()
returns a scripted Exit if one is queued; otherwise it interprets a toy program (``program``: address ->
Insn, anything else is a one-byte nop) with the debug behaviour KVM gives an x86-64 guest
(kvm-hw-debug.md section 4 and 7.D):

- an int3 byte (0xcc) with USE_SW_BP: exception 3, pc = rip = the int3's address;
- an enabled instruction breakpoint on rip: exception 1 before the instruction runs (fault, no RF: it
  re-fires on every run until disabled);
- a store (or load) touching an enabled data breakpoint's aligned block: exception 1 after the
  instruction, rip past it;
- SINGLESTEP: exception 1 with DR6.BS after one instruction (together with any data hit);
- DR6 B<i> is set for every register whose condition matched, enabled or not, as the SDM allows: the
  stub must mask it with DR7.

A continue runs until one of these happens or kick() is called.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from backends.api import (
    GUESTDBG_ENABLE,
    GUESTDBG_SINGLESTEP,
    GUESTDBG_USE_HW,
    GUESTDBG_USE_SW_BP,
    GUESTDBG_VALID_MASK_X86,
    BackendError,
    Capabilities,
    DebugRegs,
    Exit,
    ExitReason,
    GuestMemoryError,
    X86DebugRegs,
)
from gdbstub import x86_64

RAM_BASE = 0x100000
RAM_SIZE = 0x10000
DR6_FIXED = 0xFFFF0FF0  # DR6's active-low bits as KVM reports them
DR6_BS = 1 << 14
_LEN = {0b00: 1, 0b01: 2, 0b11: 4, 0b10: 8}

Step = Exit | Callable[["FakeX86Backend"], Exit]


@dataclass(frozen=True)
class Insn:
    """A toy instruction: ``store`` (address, size) writes the old value + 1; ``load`` only reads."""

    length: int = 1
    store: tuple[int, int] | None = None
    load: tuple[int, int] | None = None
    jump: int | None = None


class FakeX86Backend:
    def __init__(self, program: dict[int, Insn] | None = None) -> None:
        self.ram = bytearray(RAM_SIZE)
        self.program = dict(program or {})
        self.regs: dict[str, int] = {r.name: 0 for r in x86_64.REGISTERS}
        self.regs.update(rip=RAM_BASE, rsp=RAM_BASE + RAM_SIZE - 0x100, eflags=0x2, cs=0x10, ss=0x18, ds=0x18)
        self.regs.update(fctrl=0x37F, mxcsr=0x1F80)
        self.debug_calls: list[tuple[int, X86DebugRegs | None]] = []
        self.script: deque[Step] = deque()
        self.runs = 0
        self.executed = 0
        self._kicked = threading.Event()

    # ---- the Backend interface -------------------------------------------------------------
    def capabilities(self) -> Capabilities:
        flags = GUESTDBG_VALID_MASK_X86
        return Capabilities(arch="x86_64", hw_breakpoints=4, hw_watchpoints=4, guest_debug_flags=flags)

    def _span(self, addr: int, size: int) -> int:
        off = addr - RAM_BASE
        if off < 0 or off + size > RAM_SIZE:
            raise GuestMemoryError(f"{addr:#x}+{size} is outside guest RAM")
        return off

    def translate(self, addr: int, vcpu: int = 0) -> int:
        return addr  # the real backend's KVM_TRANSLATE: identity-mapped like its guests

    def read_memory(self, addr: int, size: int) -> bytes:
        off = self._span(addr, size)
        return bytes(self.ram[off : off + size])

    def write_memory(self, addr: int, data: bytes) -> None:
        off = self._span(addr, len(data))
        self.ram[off : off + len(data)] = data

    def get_regs(self, vcpu: int = 0) -> dict[str, int]:
        return dict(self.regs)

    def get_reg(self, name: str, vcpu: int = 0) -> int:
        return self.regs[name]

    def set_regs(self, regs: dict[str, int], vcpu: int = 0) -> None:
        unknown = set(regs) - set(self.regs)
        if unknown:
            raise BackendError(f"unknown registers {sorted(unknown)}")
        self.regs.update(regs)

    def set_guest_debug(self, control: int, regs: DebugRegs | X86DebugRegs | None = None, vcpu: int = 0) -> None:
        if control & ~GUESTDBG_VALID_MASK_X86:
            raise BackendError(f"control {control:#x} has unknown bits")
        if regs is not None and not isinstance(regs, X86DebugRegs):
            raise BackendError("x86-64 takes X86DebugRegs")
        self.debug_calls.append((control, regs.copy() if regs is not None else None))

    def kick(self, vcpu: int = 0) -> None:
        self._kicked.set()

    def close(self) -> None:
        pass

    # ---- what the stub last asked for ------------------------------------------------------
    @property
    def control(self) -> int:
        return self.debug_calls[-1][0] if self.debug_calls else 0

    @property
    def debugreg(self) -> list[int]:
        regs = self.debug_calls[-1][1] if self.debug_calls else None
        return list(regs.debugreg) if regs is not None else [0] * 8

    # ---- the toy CPU -----------------------------------------------------------------------
    def run(self, vcpu: int = 0) -> Exit:
        self.runs += 1
        if self.script:
            step = self.script.popleft()
            return step(self) if callable(step) else step
        deadline = time.monotonic() + 30
        while True:
            if self._kicked.is_set():
                self._kicked.clear()
                return Exit(ExitReason.INTERRUPTED)
            ex = self._one()
            if ex is not None:
                return ex
            if time.monotonic() > deadline:
                return Exit(ExitReason.INTERRUPTED)

    def _hw(self) -> tuple[bool, list[int], int]:
        control = self.control
        on = bool(control & GUESTDBG_ENABLE and control & GUESTDBG_USE_HW)
        dr = self.debugreg
        return on, dr, dr[7] if on else 0

    def _exit(self, dr6: int, dr7: int) -> Exit:
        return Exit(ExitReason.DEBUG, exception=1, pc=self.regs["rip"], dr6=DR6_FIXED | dr6, dr7=dr7 | 0x400)

    def _one(self) -> Exit | None:
        """One instruction at rip, or the exit that stops it."""
        rip = self.regs["rip"]
        on, dr, dr7 = self._hw()
        control = self.control
        if on:
            exec_hits = [i for i in range(4) if (dr7 >> (16 + 4 * i)) & 3 == 0 and dr[i] == rip]
            if any(dr7 >> (2 * i) & 3 for i in exec_hits):
                return self._exit(sum(1 << i for i in exec_hits), dr7)
        else:
            exec_hits = []
        if control & GUESTDBG_ENABLE and control & GUESTDBG_USE_SW_BP and self.read_memory(rip, 1) == b"\xcc":
            return Exit(ExitReason.DEBUG, exception=3, pc=rip)
        insn = self.program.get(rip, Insn())
        accesses: list[tuple[int, int, bool]] = []
        if insn.store is not None:
            addr, size = insn.store
            old = int.from_bytes(self.read_memory(addr, size), "little")
            self.write_memory(addr, ((old + 1) % (1 << (8 * size))).to_bytes(size, "little"))
            accesses.append((addr, size, True))
        if insn.load is not None:
            accesses.append((*insn.load, False))
        self.regs["rip"] = insn.jump if insn.jump is not None else rip + insn.length
        self.executed += 1
        data_hits = 0
        for i in range(4 if on else 0):
            rw, size = (dr7 >> (16 + 4 * i)) & 3, _LEN[(dr7 >> (18 + 4 * i)) & 3]
            if rw in (0b01, 0b11):
                lo = dr[i] & ~(size - 1)
                for addr, n, write in accesses:
                    if addr < lo + size and lo < addr + n and (write or rw == 0b11):
                        data_hits |= 1 << i
        enabled_data = any(data_hits >> i & 1 and dr7 >> (2 * i) & 3 for i in range(4))
        stale = sum(1 << i for i in exec_hits)  # matched while disabled: reported anyway
        if control & GUESTDBG_ENABLE and control & GUESTDBG_SINGLESTEP:
            return self._exit(DR6_BS | data_hits | stale, dr7)
        if enabled_data:
            return self._exit(data_hits | stale, dr7)
        return None
