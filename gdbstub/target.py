"""The debugger core: run state, gdb's breakpoints and watchpoints, the slot table, stop decoding.

It knows the aarch64 arch description and talks to a backend only through
backends.api.  resume() is blocking and runs on a worker thread; everything
else is called while the guest is stopped, from the server's thread.
interrupt() is the one thread-safe call.

Some exits are invisible to gdb by design: stepping over a breakpoint or
watchpoint the guest is parked on, and watchpoint hits on padding bytes of an
approximate (larger) watch cover.  resume() handles those itself and returns
only stops gdb must see.
"""

from __future__ import annotations

import enum
import logging
import threading
from dataclasses import dataclass

from backends.api import (
    EC_BKPT32,
    EC_BREAKPT_LOW,
    EC_BRK64,
    EC_SOFTSTP_LOW,
    EC_WATCHPT_LOW,
    GUESTDBG_ENABLE,
    GUESTDBG_SINGLESTEP,
    GUESTDBG_USE_HW,
    GUESTDBG_USE_SW_BP,
    Backend,
    BackendError,
    DebugRegs,
    Exit,
    ExitReason,
    GuestMemoryError,
)
from gdbstub import aarch64
from gdbstub.slots import GdbPoint, PointKind, SlotError, SlotTable

log = logging.getLogger("gdbstub.target")

# gdb's own signal numbers (include/gdb/signals.def), which differ from Linux's for SIGBUS.
GDB_SIGINT, GDB_SIGILL, GDB_SIGTRAP, GDB_SIGBUS, GDB_SIGSEGV = 2, 4, 5, 10, 11
_HOST_TO_GDB_SIGNAL = {4: GDB_SIGILL, 5: GDB_SIGTRAP, 7: GDB_SIGBUS, 11: GDB_SIGSEGV}

_BRK_BYTES = aarch64.BRK0.to_bytes(4, "little")


class StopKind(enum.Enum):
    SIGNAL = "signal"  # plain stop (step done, Ctrl-C, fault): only the signal matters
    SWBREAK = "swbreak"
    HWBREAK = "hwbreak"
    WATCH = "watch"
    RWATCH = "rwatch"
    AWATCH = "awatch"
    EXITED = "exited"


_WATCH_STOP = {PointKind.WATCH_WRITE: StopKind.WATCH, PointKind.WATCH_READ: StopKind.RWATCH,
               PointKind.WATCH_ACCESS: StopKind.AWATCH}  # fmt: skip


@dataclass(frozen=True)
class StopEvent:
    signal: int
    kind: StopKind = StopKind.SIGNAL
    addr: int = 0  # the watched address gdb asked for (watch stops)
    status: int = 0  # exit status (EXITED)
    detail: str = ""  # for the log


class TargetError(Exception):
    """A request gdb made that cannot be carried out; ``errno`` picks the E NN reply."""

    def __init__(self, message: str, errno: int = 22) -> None:
        super().__init__(message)
        self.errno = errno


class Target:
    def __init__(self, backend: Backend, vcpu: int = 0) -> None:
        self.backend = backend
        self.vcpu = vcpu
        caps = backend.capabilities()
        self.caps = caps
        self.slots = SlotTable(caps.hw_breakpoints, caps.hw_watchpoints)
        self.sw_breakpoints: dict[int, bytes] = {}  # address -> the original instruction bytes
        self.last_stop = StopEvent(GDB_SIGTRAP, detail="halted at entry")
        self.exited = False
        self._pushed: tuple[int, int] | None = None  # (control, slots.generation) last given to the backend
        self.last_run_slots: list[str] = []  # `monitor slots` while stopped: gdb has removed its points by then
        self._described = -1
        self._interrupt = threading.Event()

    # ---- registers and memory (guest stopped) ---------------------------------------------------
    def read_register(self, name: str) -> int:
        value = self.backend.get_reg(name, self.vcpu)
        return value & 0xFFFF_FFFF if name == "cpsr" else value

    def read_registers(self) -> dict[str, int]:
        regs = self.backend.get_regs(self.vcpu)
        regs["cpsr"] &= 0xFFFF_FFFF
        return regs

    def write_registers(self, values: dict[str, int]) -> None:
        if "cpsr" in values:  # gdb's cpsr is 32 bits; keep PSTATE's upper bits
            full = self.backend.get_reg("cpsr", self.vcpu)
            values = dict(values, cpsr=(full & ~0xFFFF_FFFF) | (values["cpsr"] & 0xFFFF_FFFF))
        try:
            self.backend.set_regs(values, self.vcpu)
        except BackendError as e:
            raise TargetError(str(e)) from None

    def read_memory(self, addr: int, size: int) -> bytes:
        """Guest memory as gdb should see it: our BRKs hidden behind the original bytes."""
        if addr < 0 or size < 0 or addr + size > 1 << 64:
            raise TargetError("address out of range", 14)
        try:
            data = self.backend.read_memory(addr, size)
        except GuestMemoryError as e:
            raise TargetError(str(e), 14) from None
        if self.sw_breakpoints:
            buf = bytearray(data)
            for bp, orig in self.sw_breakpoints.items():
                lo, hi = max(bp, addr), min(bp + 4, addr + size)
                if lo < hi:
                    buf[lo - addr : hi - addr] = orig[lo - bp : hi - bp]
            data = bytes(buf)
        return data

    def write_memory(self, addr: int, data: bytes) -> None:
        if addr < 0 or addr + len(data) > 1 << 64:
            raise TargetError("address out of range", 14)
        buf = bytearray(data)
        for bp, orig in list(self.sw_breakpoints.items()):  # keep our BRKs; the new bytes become the shadow
            lo, hi = max(bp, addr), min(bp + 4, addr + len(data))
            if lo < hi:
                shadow = bytearray(orig)
                shadow[lo - bp : hi - bp] = buf[lo - addr : hi - addr]
                buf[lo - addr : hi - addr] = _BRK_BYTES[lo - bp : hi - bp]
                self.sw_breakpoints[bp] = bytes(shadow)
        try:
            self.backend.write_memory(addr, bytes(buf))
        except GuestMemoryError as e:
            raise TargetError(str(e), 14) from None

    # ---- breakpoints and watchpoints ----------------------------------------------------------
    def insert_sw_breakpoint(self, addr: int, kind: int) -> None:
        if kind != aarch64.SW_BREAK_KIND or addr % 4:
            raise TargetError(f"software breakpoint needs kind 4 at a 4-aligned address (got kind {kind})")
        if addr in self.sw_breakpoints:
            return
        try:
            orig = self.backend.read_memory(addr, 4)
            self.backend.write_memory(addr, _BRK_BYTES)
        except GuestMemoryError as e:
            raise TargetError(str(e), 14) from None
        self.sw_breakpoints[addr] = orig

    def remove_sw_breakpoint(self, addr: int, kind: int) -> None:
        orig = self.sw_breakpoints.pop(addr, None)
        if orig is not None:
            self.backend.write_memory(addr, orig)

    def insert_hw_point(self, point: GdbPoint) -> None:
        try:
            self.slots.insert(point)
        except SlotError as e:
            raise TargetError(str(e), 28) from None

    def remove_hw_point(self, point: GdbPoint) -> None:
        self.slots.remove(point)

    def clear_debugger_state(self) -> None:
        """Remove everything a gdb client planted (detach, disconnect, new connection)."""
        for addr in list(self.sw_breakpoints):
            self.remove_sw_breakpoint(addr, 4)
        self.slots.clear()
        self._push(0)

    # ---- run control --------------------------------------------------------------------------
    def interrupt(self) -> None:
        """Thread-safe (gdb's Ctrl-C): the running resume() returns a SIGINT stop soon."""
        self._interrupt.set()
        self.backend.kick(self.vcpu)

    def _push(self, control: int, regs: DebugRegs | None = None) -> None:
        key = (control, self.slots.generation if regs is None else -1)
        if regs is None and self._pushed == key:
            return
        self.backend.set_guest_debug(control, regs if regs is not None else self.slots.debug_regs(), self.vcpu)
        self._pushed = key if regs is None else None
        if regs is None and control and self._described != self.slots.generation:
            self.last_run_slots = self.slots.describe()
            self._described = self.slots.generation

    def _control(self, step: bool) -> int:
        control = GUESTDBG_ENABLE | GUESTDBG_USE_SW_BP
        if self.caps.hw_breakpoints or self.caps.hw_watchpoints:
            control |= GUESTDBG_USE_HW
        return control | (GUESTDBG_SINGLESTEP if step else 0)

    def _pc(self) -> int:
        return self.backend.get_reg("pc", self.vcpu)

    def _step_over(self, pc: int, *, no_watch: bool) -> Exit:
        """One step with whatever sits at pc (our BRK, a BRP on pc, and watchpoints if no_watch) out of the way."""
        regs = self.slots.debug_regs().copy()
        for i in range(len(regs.bcr)):
            if regs.bcr[i] & 1 and (regs.bvr[i] & ((1 << 53) - 1)) == pc:
                regs.bcr[i] &= ~1
        if no_watch:
            regs.wcr = [w & ~1 for w in regs.wcr]
        orig = self.sw_breakpoints.get(pc)
        if orig is not None:
            self.backend.write_memory(pc, orig)
        try:
            self._push(self._control(True), regs)
            return self.backend.run(self.vcpu)
        finally:
            if orig is not None:
                self.backend.write_memory(pc, _BRK_BYTES)

    def resume(self, step: bool) -> StopEvent:
        """Run (or step) until something gdb must see happens; blocking, on a worker thread."""
        if self.exited:
            return self.last_stop
        try:
            stop = self._resume(step)
        except Exception as e:  # a failing vCPU must become a stop gdb sees, never kill the server
            log.error("vCPU run failed: %s: %s", type(e).__name__, e, exc_info=not isinstance(e, BackendError))
            self._pushed = None  # the backend's debug state is unknown now: push it again next run
            stop = StopEvent(GDB_SIGBUS, detail=f"backend error: {e}")
        self._interrupt.clear()
        self.last_stop = stop
        return stop

    def _resume(self, step: bool) -> StopEvent:
        pc = self._pc()
        parked_on_watch = self.last_stop.kind in (StopKind.WATCH, StopKind.RWATCH, StopKind.AWATCH)
        if pc in self.sw_breakpoints or self.slots.breakpoint_at(pc) is not None or parked_on_watch:
            # The guest sits on something that would re-fire at once (KVM behaves the same): step over it.
            stop = self._decode(self._step_over(pc, no_watch=parked_on_watch), stepping=step)
            if stop is not None:
                return stop
            if step:
                return StopEvent(GDB_SIGTRAP)
        while True:
            if self._interrupt.is_set():
                return StopEvent(GDB_SIGINT)
            self._push(self._control(step))
            ex = self.backend.run(self.vcpu)
            stop = self._decode(ex, stepping=step)
            if stop is not None:
                return stop
            if ex.reason is ExitReason.DEBUG and ex.ec == EC_WATCHPT_LOW:
                # a hit on padding of an approximate cover: step over it unseen
                stop = self._decode(self._step_over(self._pc(), no_watch=True), stepping=step)
                if stop is not None:
                    return stop
            if step:  # the step was consumed by an invisible event
                return StopEvent(GDB_SIGTRAP)

    def _access_size(self) -> int:
        """How far the trapped load/store can reach (the guest is parked on it)."""
        try:
            insn = int.from_bytes(self.backend.read_memory(self._pc(), 4), "little")
        except GuestMemoryError:
            return aarch64.MAX_ACCESS
        return aarch64.access_size(insn)

    def _decode(self, ex: Exit, *, stepping: bool) -> StopEvent | None:
        """Turn a backend exit into the stop gdb sees, or None for an exit gdb must not see."""
        if ex.reason is ExitReason.INTERRUPTED:
            return StopEvent(GDB_SIGINT) if self._interrupt.is_set() else None
        if ex.reason is ExitReason.SHUTDOWN:
            self.exited = True
            return StopEvent(0, StopKind.EXITED, status=ex.status, detail=ex.detail)
        if ex.reason is ExitReason.FAULT:
            return StopEvent(_HOST_TO_GDB_SIGNAL.get(ex.signal, GDB_SIGSEGV), detail=ex.detail)
        ec = ex.ec
        if ec == EC_SOFTSTP_LOW:
            return StopEvent(GDB_SIGTRAP) if stepping else None
        if ec == EC_BREAKPT_LOW:
            return StopEvent(GDB_SIGTRAP, StopKind.HWBREAK)
        if ec == EC_WATCHPT_LOW:
            point = self.slots.watch_for(ex.far, bool(ex.esr & 0x40), self._access_size())
            if point is None:
                return None
            return StopEvent(GDB_SIGTRAP, _WATCH_STOP[point.kind], addr=point.addr, detail=f"far={ex.far:#x}")
        if ec in (EC_BRK64, EC_BKPT32):
            pc = self._pc()
            if pc in self.sw_breakpoints:
                return StopEvent(GDB_SIGTRAP, StopKind.SWBREAK)
            return StopEvent(GDB_SIGTRAP, detail=f"guest's own BRK #{ex.esr & 0xFFFF:#x} at {pc:#x}")
        return StopEvent(GDB_SIGTRAP, detail=f"unexpected debug exit esr={ex.esr:#x}")
