"""The debugger core: run state, gdb's breakpoints and watchpoints, the slot table, stop decoding.

It knows an architecture only through gdbstub.arch and talks to a backend only through
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
    X86DebugRegs,
)
from gdbstub.arch import Event, arch_for
from gdbstub.logfmt import kv
from gdbstub.slots import GdbPoint, PointKind, SlotError

log = logging.getLogger("gdbstub.target")

# gdb's own signal numbers (include/gdb/signals.def), which differ from Linux's for SIGBUS.
GDB_SIGINT, GDB_SIGILL, GDB_SIGTRAP, GDB_SIGBUS, GDB_SIGSEGV = 2, 4, 5, 10, 11
_HOST_TO_GDB_SIGNAL = {4: GDB_SIGILL, 5: GDB_SIGTRAP, 7: GDB_SIGBUS, 11: GDB_SIGSEGV}


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
    vcpu: int = 0  # which vCPU stopped (gdb thread vcpu + 1)


_STEPPED = StopEvent(GDB_SIGTRAP)  # a completed single step (immutable: one for all)
_PAGE_BITS = 12  # translations are asked for and kept per 4 KiB page (the smallest granule)
_PAGE_SIZE = 1 << _PAGE_BITS
_PAGE_MASK = _PAGE_SIZE - 1


class TargetError(Exception):
    """A request gdb made that cannot be carried out; ``errno`` picks the E NN reply."""

    def __init__(self, message: str, errno: int = 22) -> None:
        super().__init__(message)
        self.errno = errno


class Target:
    def __init__(self, backend: Backend, vcpu: int = 0) -> None:
        self.backend = backend
        self._regs: dict[str, int] | None = None  # see _drop_registers()
        self._some_regs: dict[str, int] = {}
        self.regs_version = 0
        self.vcpu = vcpu
        caps = backend.capabilities()
        self.caps = caps
        self.arch = arch_for(caps.arch)
        self.slots = self.arch.new_slot_table(caps)
        self.sw_breakpoints: dict[int, bytes] = {}  # address -> the original instruction bytes
        self.sw_phys: dict[int, int] = {}  # address -> where the BRK went in guest physical memory
        self._tlb: dict[int, int] = {}  # virtual page -> physical page, valid for one stop (_tlb_version)
        self._tlb_version = -1
        self.irq_raised: set[int] = set()  # vCPUs whose IRQ line `monitor irq on` raised
        self.last_stop = StopEvent(GDB_SIGTRAP, detail="halted at entry")
        self.exited = False
        self._pushed: tuple[int, int, int] | None = None  # (control, slots.generation, _guest_generation) pushed
        self._guest_points: DebugRegs | X86DebugRegs | None = None  # the guest's own, as read at this resume
        self._guest_generation = 0  # bumped whenever they differ from the previous read
        self.last_run_slots: list[str] = []  # `monitor slots` while stopped: gdb has removed its points by then
        self._described = -1
        self.cont_vcpu: int | None = None  # Hc: the thread s/c act on (None: the selected one)
        self._guest_bps = self._guest_wps = False  # the guest's own points are loaded (see _with_guest_points)
        self._skip: bool | None = None  # an invisible hit to step over next (the value: with watches off)
        self._interrupt = threading.Event()
        self._resuming = False  # between begin_resume() and the end of resume(): only then does 0x03 count
        self._lock = threading.Lock()

    @property
    def vcpu(self) -> int:
        """The vCPU the registers, runs and debug state are for."""
        return self._vcpu

    @vcpu.setter
    def vcpu(self, value: int) -> None:
        self._vcpu = value
        self._drop_registers()  # another vCPU's registers

    # ---- registers and memory (guest stopped) ---------------------------------------------------
    def read_register(self, name: str) -> int:
        regs = self._regs if self._regs is not None else self._some_regs
        value = regs.get(name)
        if value is None:
            value = self.backend.get_reg(name, self.vcpu)
            if name in self.arch.NARROWED:
                value = self.arch.narrow(name, value)
            self._some_regs[name] = value
        return value

    def read_registers(self) -> dict[str, int]:
        """Every register of the arch table (a fresh dict: the caller may keep or change it)."""
        if self._regs is None:
            regs = self.backend.get_regs(self.vcpu)
            for name in self.arch.NARROWED:
                regs[name] = self.arch.narrow(name, regs[name])
            self._regs = regs
        return dict(self._regs)

    def _drop_registers(self) -> None:
        """The vCPU's registers may change (a write, a run, another vCPU): forget what was read.

        The registers as gdb sees them are read once per stop: a stop reply's single reads (_some_regs),
        or all of them (_regs) for the `g` and `p` after it.  regs_version counts the drops, so that callers
        can cache what they encode from them (the session's `g` reply)."""
        self._regs = None
        if self._some_regs:
            self._some_regs = {}
        self.regs_version += 1

    def write_registers(self, values: dict[str, int]) -> None:
        """Write what gdb sent; registers gdb sees narrower than the hardware (cpsr) keep their other bits."""
        self._drop_registers()
        try:
            values = {
                name: self.arch.widen(name, v, self.backend.get_reg(name, self.vcpu))
                if name in self.arch.NARROWED
                else v
                for name, v in values.items()
            }
            self.backend.set_regs(values, self.vcpu)
        except BackendError as e:
            raise TargetError(str(e)) from None

    # Guest memory by virtual address, as the selected vCPU's MMU maps it now (the backend translates; the
    # answers are kept per 4 KiB page until the vCPU runs or gdb writes memory, which may move them).
    def _phys(self, addr: int) -> int:
        if self._tlb_version != self.regs_version:
            self._tlb.clear()
            self._tlb_version = self.regs_version
        page = addr >> _PAGE_BITS
        base = self._tlb.get(page)
        if base is None:
            base = self.backend.translate(page << _PAGE_BITS, self.vcpu)
            self._tlb[page] = base
        return base | (addr & _PAGE_MASK)

    def _chunks(self, addr: int, size: int) -> list[tuple[int, int]]:
        """(physical address, length) runs covering [addr, addr + size): one run while the MMU is off."""
        runs: list[tuple[int, int]] = []
        while size > 0:
            n = min(size, _PAGE_SIZE - (addr & _PAGE_MASK))
            pa = self._phys(addr)
            if runs and runs[-1][0] + runs[-1][1] == pa:
                runs[-1] = (runs[-1][0], runs[-1][1] + n)
            else:
                runs.append((pa, n))
            addr, size = addr + n, size - n
        return runs

    def read_virtual(self, addr: int, size: int) -> bytes:
        """Guest memory at a virtual address as it is (our BRKs included); GuestMemoryError if unmapped."""
        return b"".join(self.backend.read_memory(pa, n) for pa, n in self._chunks(addr, size))

    def write_virtual(self, addr: int, data: bytes) -> None:
        runs = self._chunks(addr, len(data))
        self._tlb_version = -1  # the write may have changed page tables
        off = 0
        for pa, n in runs:
            self.backend.write_memory(pa, data[off : off + n])
            off += n

    def read_memory(self, addr: int, size: int) -> bytes:
        """Guest memory as gdb should see it: our BRKs hidden behind the original bytes."""
        if addr < 0 or size < 0 or addr + size > 1 << 64:
            raise TargetError("address out of range", 14)
        try:
            data = self.read_virtual(addr, size)
        except GuestMemoryError as e:
            raise TargetError(str(e), 14) from None
        if self.sw_breakpoints:
            buf = bytearray(data)
            for bp, orig in self.sw_breakpoints.items():
                lo, hi = max(bp, addr), min(bp + len(orig), addr + size)
                if lo < hi:
                    buf[lo - addr : hi - addr] = orig[lo - bp : hi - bp]
            data = bytes(buf)
        return data

    def write_memory(self, addr: int, data: bytes) -> None:
        if addr < 0 or addr + len(data) > 1 << 64:
            raise TargetError("address out of range", 14)
        buf = bytearray(data)
        for bp, orig in list(self.sw_breakpoints.items()):  # keep our BRKs; the new bytes become the shadow
            lo, hi = max(bp, addr), min(bp + len(orig), addr + len(data))
            if lo < hi:
                shadow = bytearray(orig)
                shadow[lo - bp : hi - bp] = buf[lo - addr : hi - addr]
                buf[lo - addr : hi - addr] = self.arch.SW_BREAK[lo - bp : hi - bp]
                self.sw_breakpoints[bp] = bytes(shadow)
        try:
            self.write_virtual(addr, bytes(buf))
        except GuestMemoryError as e:
            raise TargetError(str(e), 14) from None

    # ---- breakpoints and watchpoints ----------------------------------------------------------
    def insert_sw_breakpoint(self, addr: int, kind: int) -> None:
        if not self.arch.sw_break_ok(addr, kind):
            raise TargetError(f"no {self.arch.NAME} software breakpoint of kind {kind} at {addr:#x}")
        if addr in self.sw_breakpoints:
            return
        try:
            pa = self._phys(addr)  # (one page: the instruction is aligned)
            orig = self.backend.read_memory(pa, len(self.arch.SW_BREAK))
            self.backend.write_memory(pa, self.arch.SW_BREAK)
        except GuestMemoryError as e:
            raise TargetError(str(e), 14) from None
        self.sw_breakpoints[addr] = orig
        self.sw_phys[addr] = pa  # removed from there even if the guest remaps the page meanwhile

    def remove_sw_breakpoint(self, addr: int, kind: int) -> None:
        orig = self.sw_breakpoints.pop(addr, None)
        pa = self.sw_phys.pop(addr, addr)
        if orig is not None:
            self.backend.write_memory(pa, orig)

    def insert_hw_point(self, point: GdbPoint) -> None:
        try:
            self.slots.insert(point)
        except SlotError as e:
            raise TargetError(str(e), 28) from None

    def remove_hw_point(self, point: GdbPoint) -> None:
        self.slots.remove(point)

    def plan_resume(self, run: frozenset[int] | None, step: int | None) -> None:
        """vCont's per-thread actions for the next resume(): one vCPU has nothing to choose."""

    def clear_debugger_state(self) -> None:
        """Remove everything a gdb client planted (detach, disconnect, new connection)."""
        for addr in list(self.sw_breakpoints):
            self.remove_sw_breakpoint(addr, 4)
        self.slots.clear()
        self._push(0)
        self.lower_irq_lines()

    def set_irq_line(self, level: bool) -> None:
        """`monitor irq on|off`: the selected vCPU's IRQ input (BackendError if the backend has none)."""
        vcpu = self.vcpu
        self.backend.set_irq_line(level, vcpu)
        if level:
            self.irq_raised.add(vcpu)
        else:
            self.irq_raised.discard(vcpu)

    def lower_irq_lines(self) -> None:
        """A line gdb raised goes low when gdb leaves: the guest must not take IRQs nobody will clear."""
        for vcpu in sorted(self.irq_raised):
            try:
                self.backend.set_irq_line(False, vcpu)
            except BackendError as e:
                log.warning(kv("irq", vcpu=vcpu, error=str(e)))
        self.irq_raised.clear()

    # ---- run control --------------------------------------------------------------------------
    def begin_resume(self) -> None:
        """Called before resume() is started (on whatever thread): an interrupt from now on stops it, even
        one that arrives before the worker thread gets going; one after resume() returned is stale."""
        with self._lock:
            self._resuming = True
            self._interrupt.clear()

    def interrupt(self) -> None:
        """Thread-safe (gdb's Ctrl-C): the running resume() returns a SIGINT stop soon."""
        with self._lock:
            if not self._resuming:
                return
            self._interrupt.set()
        self.backend.kick(self.vcpu)

    def _push(self, control: int, regs: DebugRegs | X86DebugRegs | None = None) -> None:
        key = (control, self.slots.generation if regs is None else -1, self._guest_generation)
        if regs is None and self._pushed == key:
            return
        ours = regs is None  # the table's registers (not a one-step variant of them)
        self.backend.set_guest_debug(control, self._with_guest_points(control) if ours else regs, self.vcpu)
        self._pushed = key if ours else None
        if ours and control and self._described != self.slots.generation:
            self.last_run_slots = self.slots.describe()
            self._described = self.slots.generation

    def _with_guest_points(self, control: int) -> DebugRegs | X86DebugRegs:
        """The table's registers, plus the guest's own breakpoints if gdb uses none, and its own watchpoints
        if gdb uses none: KVM loads one set into the hardware, so while gdb debugs, the guest's points fire
        only if we load them; their hits are then re-injected into the guest (E6).  Read when gdb's points
        change (a guest changing its own registers meanwhile is seen at the next change)."""
        regs = self.slots.debug_regs()
        self._guest_bps = self._guest_wps = False
        guest = self._guest_points
        if not (control & GUESTDBG_USE_HW and isinstance(regs, DebugRegs) and isinstance(guest, DebugRegs)):
            return regs
        kinds = {p.kind for p in self.slots.points()}
        want_bps = PointKind.HW_BREAK not in kinds
        want_wps = not any(k.is_watch for k in kinds)
        merged = regs.copy()
        if want_bps and any(b & 1 for b in guest.bcr):
            merged.bcr, merged.bvr, self._guest_bps = list(guest.bcr), list(guest.bvr), True
        if want_wps and any(w & 1 for w in guest.wcr):
            merged.wcr, merged.wvr, self._guest_wps = list(guest.wcr), list(guest.wvr), True
        return merged

    def _read_guest_points(self) -> None:
        """At each resume: the guest's own breakpoints and watchpoints, if it has any armed (one register
        read when it has none: MDSCR_EL1.MDE off)."""
        try:
            guest = self.arch.guest_debug_regs(
                lambda name: self.backend.get_reg(name, self.vcpu), self.caps.hw_breakpoints, self.caps.hw_watchpoints
            )
        except BackendError:  # a backend that cannot show the guest's debug registers
            guest = None
        if guest != self._guest_points:
            self._guest_points = guest
            self._guest_generation += 1

    def _guest_debug_event(self, ex: Exit, *, watch: bool) -> None:
        """A hit of the guest's own breakpoint or watchpoint: delivered to its vectors if the guest would have
        taken it (its MDSCR_EL1.KDE, PSTATE.D, OS lock), else stepped over unseen (as the hardware would
        have let the instruction run)."""
        get = lambda name: self.backend.get_reg(name, self.vcpu)  # noqa: E731
        if self.arch.guest_takes_debug(get) and self._reinject(ex):
            log.info(kv("reinject", what="guest watchpoint" if watch else "guest breakpoint", esr=f"{ex.esr:#x}"))
            return
        self._skip = watch

    def _control(self, step: bool) -> int:
        if self.arch.IDLE_GUEST_OWNS_DEBUG and not (step or self.sw_breakpoints or self.slots.points()):
            return 0  # nothing to debug: the guest owns its debug registers, as KVM gives them back
        control = GUESTDBG_ENABLE | GUESTDBG_USE_SW_BP
        if self.caps.hw_breakpoints or self.caps.hw_watchpoints:
            control |= GUESTDBG_USE_HW
        return control | (GUESTDBG_SINGLESTEP if step else 0)

    def _pc(self) -> int:
        return self.backend.get_reg(self.arch.PC, self.vcpu)

    def _step_over(self, pc: int, *, no_watch: bool) -> Exit:
        """One step with whatever sits at pc (our BRK, a BRP on pc, and watchpoints if no_watch) out of the way."""
        regs = self.arch.step_over_regs(self.slots, pc, no_watch)
        orig = self.sw_breakpoints.get(pc)
        pa = self.sw_phys.get(pc, pc)
        if orig is not None:
            self.backend.write_memory(pa, orig)
        try:
            self._push(self._control(True), regs)
            return self.backend.run(self.vcpu)
        finally:
            if orig is not None:
                self.backend.write_memory(pa, self.arch.SW_BREAK)

    def resume(self, step: bool) -> StopEvent:
        """Run (or step) until something gdb must see happens; blocking, on a worker thread."""
        if self.exited:
            return self.last_stop
        with self._lock:
            self._resuming = True  # callers that skipped begin_resume(): interrupts count from here
        pc = (self._regs if self._regs is not None else self._some_regs).get(self.arch.PC)
        self._drop_registers()
        try:
            stop = self._resume(step, pc)
        except Exception as e:  # a failing vCPU must become a stop gdb sees, never kill the server
            log.error(
                kv("error", where="run", error=f"{type(e).__name__}: {e}"), exc_info=not isinstance(e, BackendError)
            )
            self._pushed = None  # the backend's debug state is unknown now: push it again next run
            stop = StopEvent(GDB_SIGBUS, detail=f"backend error: {e}")
        self._drop_registers()  # (again: a reader racing the run must not leave stale values behind)
        with self._lock:
            self._resuming = False
            if self._interrupt.is_set():
                self._interrupt.clear()
        self.last_stop = stop
        return stop

    def _resume(self, step: bool, pc: int | None = None) -> StopEvent:
        """PC: where the guest stands if known from the register cache (saves a backend read per step)."""
        self._skip = None
        if self.arch.IDLE_GUEST_OWNS_DEBUG and (self.sw_breakpoints or self.slots.points()):
            self._read_guest_points()  # gdb debugs: the guest's own points are merged in (_with_guest_points)
        if pc is None:
            pc = self._pc()
        parked_on_watch = self.arch.WATCH_BEFORE_ACCESS and self.last_stop.kind in (
            StopKind.WATCH,
            StopKind.RWATCH,
            StopKind.AWATCH,
        )
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
            self._skip = None
            stop = self._decode(ex, stepping=step)
            if stop is not None:
                return stop
            if self._skip is not None:  # an invisible hit (padding, a guest point it would not take): step over
                no_watch, self._skip = self._skip, None
                stop = self._decode(self._step_over(self._pc(), no_watch=no_watch), stepping=step)
                if stop is not None:
                    return stop
            if step:  # the step was consumed by an invisible event
                return StopEvent(GDB_SIGTRAP)

    def _reinject(self, ex: Exit) -> bool:
        """Deliver a debug exception we do not own to the guest (E6), if it has a vector table in memory."""
        try:
            writes = self.arch.guest_exception(ex, lambda name: self.backend.get_reg(name, self.vcpu))
            if not writes:
                return False
            self.read_virtual(writes[self.arch.PC], 4)  # no vector there: stop instead of looping
            self.backend.set_regs(writes, self.vcpu)
        except (BackendError, KeyError):
            return False
        return True

    def _code_at_pc(self) -> bytes | None:
        try:
            return self.read_virtual(self._pc(), 4)
        except GuestMemoryError:
            return None

    def _decode(self, ex: Exit, *, stepping: bool) -> StopEvent | None:
        """Turn a backend exit into the stop gdb sees, or None for an exit gdb must not see."""
        if ex.reason is ExitReason.INTERRUPTED:
            return StopEvent(GDB_SIGINT) if self._interrupt.is_set() else None
        if ex.reason is ExitReason.SHUTDOWN:
            self.exited = True
            return StopEvent(0, StopKind.EXITED, status=ex.status, detail=ex.detail)
        if ex.reason is ExitReason.FAULT:
            return StopEvent(_HOST_TO_GDB_SIGNAL.get(ex.signal, GDB_SIGSEGV), detail=ex.detail)
        d = self.arch.decode_exit(ex)
        if d.event is Event.STEP:
            return _STEPPED if stepping else None
        if d.event is Event.HWBREAK:
            if self._guest_bps and self.slots.breakpoint_at(self._pc()) is None:
                self._guest_debug_event(ex, watch=False)
                return None
            return StopEvent(GDB_SIGTRAP, StopKind.HWBREAK)
        if d.event is Event.WATCH:
            if self._guest_wps:
                self._guest_debug_event(ex, watch=True)
                return None
            point = self.arch.watch_point(self.slots, d, self._code_at_pc)
            if point is None:
                self._skip = True  # a hit on padding of an approximate cover
                return None
            where = d.detail or f"far={d.addr:#x}"
            return StopEvent(GDB_SIGTRAP, _WATCH_STOP[point.kind], addr=point.addr, detail=where)
        if d.event is Event.SWBREAK:
            pc = self._pc()
            if pc in self.sw_breakpoints:
                return StopEvent(GDB_SIGTRAP, StopKind.SWBREAK)
            if self._reinject(ex):  # the guest's own BRK (a kernel's BUG/WARN): its handler runs, gdb never sees it
                log.info(kv("reinject", what=d.detail, pc=f"{pc:#x}"))
                return None
            return StopEvent(GDB_SIGTRAP, detail=f"guest's own {d.detail} at {pc:#x}, and no vector to take it")
        return StopEvent(GDB_SIGTRAP, detail=f"unexpected debug exit {d.detail}")
