"""E6 at the gdbstub level, on every backend: debug exceptions that are not gdb's go to the guest.

- a guest BRK that is not one of gdb's Z0 breakpoints is re-injected into the guest's vectors;
- the guest's own hardware breakpoint (or watchpoint), armed while gdb uses none of that kind, fires and is
  re-injected too, and when the guest would not take it (its handler masked PSTATE.D) it is stepped over
  unseen.  gdb never sees any of these, and nothing loops.

Guest: guests/debug_exceptions.S (its handler records what it took in `results`).
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest

from gdbstub.target import StopKind, Target
from tests.scenarios.conftest import Guest
from tests.scenarios.rig import Traced

EC_BP_CUR, EC_WP_CUR, EC_BRK = 0x31, 0x35, 0x3C


@pytest.fixture(scope="module")
def g(guest_elf: Callable[[str], object]) -> Guest:
    return Guest(guest_elf("debug_exceptions"))  # type: ignore[arg-type]


def results(vm: Traced, g: Guest) -> tuple[int, ...]:
    return struct.unpack("<26Q", vm.backend.read_memory(g["results"], 26 * 8))


def run_to(target: Target, addr: int) -> None:
    """Continue to gdb's software breakpoint at addr (inserted for this run only, as gdb does)."""
    target.insert_sw_breakpoint(addr, 4)
    stop = target.resume(step=False)
    assert stop.kind is StopKind.SWBREAK and target.read_register("pc") == addr, stop
    target.remove_sw_breakpoint(addr, 4)


@pytest.mark.parametrize(
    ("entry", "armed_before", "ec", "count_at", "elr_at"),
    [("a2_hw_bp", "a2_nop", EC_BP_CUR, 0x10, 0x18), ("a5_wp", "a5_store", EC_WP_CUR, 0x20, 0x28)],
    ids=["breakpoint", "watchpoint"],
)
def test_guest_points_fire_while_gdb_uses_only_software_breakpoints(
    make_vm: Callable[..., Traced], g: Guest, entry: str, armed_before: str, ec: int, count_at: int, elr_at: int
) -> None:
    vm = make_vm(g)
    target = Target(vm.backend)
    vm.backend.set_regs({"pc": g[entry]})
    run_to(target, g[armed_before] - 4)  # the guest has armed its own point by now
    target.insert_sw_breakpoint(g["done"], 4)  # gdb debugs with a software breakpoint only
    stop = target.resume(step=False)
    assert stop.kind is StopKind.SWBREAK and target.read_register("pc") == g["done"], stop
    r = results(vm, g)
    log = r[18 : 18 + r[17]]
    assert log == (ec,), f"the guest took {[hex(e) for e in log]}"
    assert (r[count_at // 8], r[elr_at // 8]) == (1, g[armed_before])
    if ec == EC_WP_CUR:
        assert r[0x30 // 8] == g["write_data"]  # FAR_EL1
        assert vm.backend.read_memory(g["write_data"], 1) == b"x"


def test_guest_brk_is_reinjected_on_every_backend(make_vm: Callable[..., Traced], g: Guest) -> None:
    vm = make_vm(g)
    target = Target(vm.backend)
    vm.backend.set_regs({"pc": g["a1_brk"]})
    target.insert_sw_breakpoint(g["done"], 4)
    stop = target.resume(step=False)
    assert stop.kind is StopKind.SWBREAK, stop
    r = results(vm, g)
    assert (r[0], r[1], r[18 : 18 + r[17]]) == (1, g["a1_insn"], (EC_BRK,))
