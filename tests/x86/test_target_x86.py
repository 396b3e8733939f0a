"""The arch-neutral Target with the x86-64 arch over the in-memory backend: what it pushes and reports."""

from __future__ import annotations

from backends.api import GUESTDBG_ENABLE, GUESTDBG_SINGLESTEP, GUESTDBG_USE_HW, GUESTDBG_USE_SW_BP
from gdbstub.rsp import Connection
from gdbstub.session import Resume, Session
from gdbstub.slots import GdbPoint, PointKind
from gdbstub.target import GDB_SIGTRAP, StopKind, Target
from tests.x86.fake import FakeX86Backend, Insn

A = 0x108000
PROGRAM = {0x100001: Insn(7, store=(A, 8)), 0x100008: Insn(6, load=(A, 4)), 0x100010: Insn(2, jump=0x100000)}


def make() -> tuple[FakeX86Backend, Target]:
    backend = FakeX86Backend(PROGRAM)
    return backend, Target(backend)


def test_target_picks_the_x86_arch() -> None:
    _, t = make()
    assert t.arch.NAME == "x86_64" and t.slots.debug_regs().debugreg[7] == 0x400


def test_int3_is_planted_hidden_and_stepped_over() -> None:
    b, t = make()
    b.ram[8] = 0x90
    t.insert_sw_breakpoint(0x100008, 1)
    assert b.ram[8] == 0xCC and t.read_memory(0x100008, 1) == b"\x90"
    stop = t.resume(step=False)
    assert (stop.signal, stop.kind, b.regs["rip"]) == (GDB_SIGTRAP, StopKind.SWBREAK, 0x100008)
    assert b.control == GUESTDBG_ENABLE | GUESTDBG_USE_SW_BP | GUESTDBG_USE_HW
    seen: list[int] = []
    b.script.append(lambda fb: (seen.append(fb.ram[8]), fb.run())[1])  # the step runs on the original byte
    stop = t.resume(step=True)
    assert seen == [0x90] and b.ram[8] == 0xCC  # planted again after the step
    assert (stop.kind, b.regs["rip"]) == (StopKind.SIGNAL, 0x10000E)
    t.remove_sw_breakpoint(0x100008, 1)
    assert b.ram[8] == 0x90


def test_hbreak_stop_and_step_over_with_its_dr7_bit_cleared() -> None:
    b, t = make()
    hb = GdbPoint(PointKind.HW_BREAK, 0x100008, 1)
    t.insert_hw_point(hb)
    stop = t.resume(step=False)
    assert (stop.kind, b.regs["rip"]) == (StopKind.HWBREAK, 0x100008)
    assert b.debugreg[0] == 0x100008 and b.debugreg[7] == 0x401
    calls = len(b.debug_calls)
    stop = t.resume(step=True)  # gdb kept the breakpoint inserted: the core steps off it
    step_control, step_regs = b.debug_calls[calls]
    assert step_control & GUESTDBG_SINGLESTEP and step_regs is not None and step_regs.debugreg[7] == 0x400
    assert (stop.kind, b.regs["rip"]) == (StopKind.SIGNAL, 0x10000E)  # DR6.B0 of the disabled slot is ignored
    stop = t.resume(step=False)  # around the loop to the breakpoint again
    assert (stop.kind, b.regs["rip"]) == (StopKind.HWBREAK, 0x100008)


def test_watch_stops_after_the_access_and_names_the_point() -> None:
    b, t = make()
    t.insert_hw_point(GdbPoint(PointKind.HW_BREAK, 0x100010, 1))
    w = GdbPoint(PointKind.WATCH_WRITE, A + 4, 4)
    t.insert_hw_point(w)
    stop = t.resume(step=False)
    assert (stop.kind, stop.addr, b.regs["rip"]) == (StopKind.WATCH, A + 4, 0x100008)
    assert "DR1" in t.slots.describe()[1]
    stop = t.resume(step=False)  # not parked on the access: a plain continue, no step-over
    assert (stop.kind, b.regs["rip"]) == (StopKind.HWBREAK, 0x100010)


def test_read_and_access_watches() -> None:
    b, t = make()
    t.insert_hw_point(GdbPoint(PointKind.WATCH_READ, A, 4))
    stop = t.resume(step=False)
    assert (stop.kind, stop.addr, b.regs["rip"]) == (StopKind.RWATCH, A, 0x100008)  # the store, as read/write
    t.slots.clear()
    t.insert_hw_point(GdbPoint(PointKind.WATCH_ACCESS, A, 2))
    stop = t.resume(step=False)
    assert (stop.kind, b.regs["rip"]) == (StopKind.AWATCH, 0x10000E)  # the load


def test_a_watch_hit_during_a_step_is_reported() -> None:
    b, t = make()
    t.insert_hw_point(GdbPoint(PointKind.WATCH_WRITE, A, 8))
    b.regs["rip"] = 0x100001
    stop = t.resume(step=True)
    assert (stop.kind, stop.addr, b.regs["rip"]) == (StopKind.WATCH, A, 0x100008)


def test_guests_own_int3_is_a_plain_sigtrap() -> None:
    b, t = make()
    b.ram[0x10] = 0xCC
    stop = t.resume(step=False)
    assert (stop.kind, stop.signal, b.regs["rip"]) == (StopKind.SIGNAL, GDB_SIGTRAP, 0x100010)
    assert "guest's own int3" in stop.detail


def test_continue_at_an_address_sets_rip() -> None:
    b, t = make()
    assert Session(t, Connection()).handle(b"c100010") == Resume(step=False)
    assert b.regs["rip"] == 0x100010
