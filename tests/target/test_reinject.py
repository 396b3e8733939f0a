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


def _debug_exceptions(guest_elf: Callable[[str], Path], entry: str) -> tuple[Target, SimBackend, dict[str, int]]:
    path = guest_elf("debug_exceptions")
    backend = SimBackend(load_image(path))
    sym = symbols(path)
    backend.set_regs({"pc": sym[entry]})
    return Target(backend), backend, sym


def _bp_count(backend: SimBackend, sym: dict[str, int]) -> int:
    return int.from_bytes(backend.read_memory(sym["results"] + 0x10, 8), "little")


def test_idle_debugger_leaves_the_guest_its_own_breakpoints(guest_elf: Callable[[str], Path]) -> None:
    """gdb attached with nothing inserted: guest debug is off, so the guest's own hardware breakpoint
    goes to its own handler (A2) and the guest runs to its end."""
    target, backend, sym = _debug_exceptions(guest_elf, "a2_hw_bp")
    stop = target.resume(step=False)
    assert stop.kind is StopKind.EXITED
    assert _bp_count(backend, sym) == 1


def test_while_gdb_debugs_the_host_owns_the_registers(guest_elf: Callable[[str], Path]) -> None:
    """With a gdb breakpoint inserted (anywhere), KVM loads the debugger's registers: the guest's own
    breakpoint does not fire, and gdb's does."""
    target, backend, sym = _debug_exceptions(guest_elf, "a2_hw_bp")
    target.insert_sw_breakpoint(sym["done"], 4)
    stop = target.resume(step=False)
    assert stop.kind is StopKind.SWBREAK and backend.get_reg("pc") == sym["done"]
    assert _bp_count(backend, sym) == 0
