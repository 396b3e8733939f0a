"""What the debugger core needs from an architecture, and the registry of architectures.

An arch module (gdbstub/aarch64.py, gdbstub/x86_64.py) provides the register table (target.xml,
g/G, p/P, the registers expedited at stops), the software breakpoint, a slot table for the
hardware debug registers, and the decoding of the backend's debug exits.  The Target picks one by
the backend's reported `Capabilities.arch`; it never names a concrete architecture itself.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from backends.api import Capabilities, DebugRegs, Exit, X86DebugRegs
from gdbstub.slots import GdbPoint


class Event(enum.Enum):
    """What a DEBUG exit means, before the target decides what gdb sees."""

    STEP = "step"  # a single step completed
    HWBREAK = "hwbreak"  # a hardware breakpoint, before its instruction
    WATCH = "watch"  # a hardware watchpoint; ``addr`` is the reported data address
    SWBREAK = "swbreak"  # a software breakpoint instruction (ours or the guest's own)
    OTHER = "other"


@dataclass(frozen=True)
class Decoded:
    event: Event
    addr: int = 0  # WATCH: the data address the hardware reported (arm64 FAR, x86 the DR's address)
    is_write: bool | None = None
    slot: int | None = None  # the debug register that fired, where the hardware says (x86 DR6)
    detail: str = ""


class SlotTable(Protocol):
    """The gdb points held in the hardware debug registers (gdbstub/slots.py for arm64)."""

    generation: int

    def insert(self, point: GdbPoint) -> None: ...
    def remove(self, point: GdbPoint) -> bool: ...
    def clear(self) -> None: ...
    def points(self) -> list[GdbPoint]: ...
    def debug_regs(self) -> DebugRegs | X86DebugRegs: ...
    def breakpoint_at(self, pc: int) -> GdbPoint | None: ...
    def describe(self) -> list[str]: ...


class Reg(Protocol):
    name: str
    bits: int


class Arch(Protocol):
    NAME: str
    PC: str  # the program counter's register name
    READ_WATCHPOINTS: bool  # the hardware can watch loads only (Z3); else gdb emulates rwatch with Z4
    WATCH_BEFORE_ACCESS: bool  # True: a watch stop leaves the guest on the access (arm64); False: after (x86)
    NARROWED: frozenset[str]  # registers gdb sees narrower than the backend holds them (widen() merges)
    # True: with nothing inserted and no step, run with guest debug off, so that the guest owns its debug
    # registers (its own breakpoints, watchpoints, single step and BRK go to it, as without a debugger)
    IDLE_GUEST_OWNS_DEBUG: bool
    REGISTERS: tuple[Reg, ...]
    EXPEDITED: tuple[int, ...]
    G_SIZE: int
    SW_BREAK_KIND: int  # gdb's Z0 kind
    SW_BREAK: bytes  # the instruction bytes planted for Z0

    def target_xml(self) -> bytes: ...
    def encode_g(self, regs: dict[str, int]) -> str: ...
    def decode_g(self, text: str) -> dict[str, int]: ...
    def encode_reg(self, num: int, value: int) -> str: ...
    def decode_reg(self, num: int, text: str) -> int: ...
    def narrow(self, name: str, value: int) -> int: ...
    def widen(self, name: str, value: int, current: int) -> int: ...
    def new_slot_table(self, caps: Capabilities) -> SlotTable: ...
    def decode_exit(self, ex: Exit) -> Decoded: ...
    def watch_point(self, table: SlotTable, d: Decoded, code_at_pc: Callable[[], bytes | None]) -> GdbPoint | None: ...
    def step_over_regs(self, table: SlotTable, pc: int, no_watch: bool) -> DebugRegs | X86DebugRegs: ...
    def sw_break_ok(self, addr: int, kind: int) -> bool: ...
    def guest_exception(self, ex: Exit, get: Callable[[str], int]) -> dict[str, int]: ...

    def guest_debug_regs(self, get: Callable[[str], int], brps: int, wrps: int) -> DebugRegs | X86DebugRegs | None: ...

    def guest_takes_debug(self, get: Callable[[str], int]) -> bool: ...


def arch_for(name: str) -> Arch:
    """The arch module for a backend's `Capabilities.arch`."""
    if name == "aarch64":
        from gdbstub import aarch64

        return aarch64  # type: ignore[return-value]  # each arch's functions take its own slot table
    if name == "x86_64":
        from gdbstub import x86_64

        return x86_64  # type: ignore[return-value]  # each arch's functions take its own slot table
    raise ValueError(f"no architecture support for {name!r}")
