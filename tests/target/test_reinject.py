"""E6: a guest BRK that is not the debugger's goes to the guest's own vectors; gdb never sees it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from backends.elf import load_image
from backends.sim import SimBackend
from gdbstub.target import GDB_SIGINT, GDB_SIGTRAP, StopKind, Target
from tests.sim.conftest import read_symbols as symbols


def _target(guest_elf: Callable[[str], Path]) -> tuple[Target, SimBackend, dict[str, int]]:
    path = guest_elf("debug_unit")
    backend = SimBackend(load_image(path))
    return Target(backend), backend, symbols(path)


def test_guest_brk_is_reinjected_and_nothing_loops(guest_elf: Callable[[str], Path]) -> None:
    target, backend, sym = _target(guest_elf)
    backend.set_regs({"vbar_el1": sym["vectors"], "pc": sym["case_brk"]})
    threading.Timer(0.3, target.interrupt).start()  # the vector spins: Ctrl-C ends the run
    stop = target.resume(step=False)
    assert (stop.signal, stop.kind) == (GDB_SIGINT, StopKind.SIGNAL)
    regs = {n: backend.get_reg(n) for n in ("pc", "esr_el1", "elr_el1", "spsr_el1")}
    assert regs == {"pc": sym["vectors"] + 0x200, "esr_el1": 0xF200_0042, "elr_el1": sym["case_brk"],
                    "spsr_el1": 0x3C5}  # fmt: skip


def test_stepping_the_guests_brk_lands_on_its_vector(guest_elf: Callable[[str], Path]) -> None:
    target, backend, sym = _target(guest_elf)
    backend.set_regs({"vbar_el1": sym["vectors"], "pc": sym["case_brk"]})
    stop = target.resume(step=True)
    assert stop.signal == GDB_SIGTRAP and backend.get_reg("pc") == sym["vectors"] + 0x200


def test_our_own_breakpoint_is_still_ours(guest_elf: Callable[[str], Path]) -> None:
    target, backend, sym = _target(guest_elf)
    bp = sym["case_nop_bp"] + 4  # over the case's own closing BRK: ours now
    backend.set_regs({"vbar_el1": sym["vectors"], "pc": sym["case_nop_bp"]})
    target.insert_sw_breakpoint(bp, 4)
    stop = target.resume(step=False)
    assert stop.kind is StopKind.SWBREAK and backend.get_reg("pc") == bp


def test_no_vectors_stops_with_sigtrap_instead_of_looping(guest_elf: Callable[[str], Path]) -> None:
    target, backend, sym = _target(guest_elf)
    backend.set_regs({"pc": sym["case_brk"]})  # VBAR_EL1 = 0: nothing there
    stop = target.resume(step=False)
    assert stop.signal == GDB_SIGTRAP and "no vector" in stop.detail
    assert backend.get_reg("pc") == sym["case_brk"]
