"""`monitor irq on|off` as a gdb-multiarch user sees it: the selected vCPU's IRQ line (the sim; arm64 KVM has
the same capability, tests/scenarios runs its IRQ scenarios there).

The guest is guests/debug_exceptions.S, whose IRQ handler (VBAR_EL1 + 0x280) counts the IRQ, records
ELR_EL1 and returns with IRQs masked.  A stepi with the line high and PSTATE.I clear lands on that vector,
as on arm64 KVM: KVM has no way to hold interrupts off while stepping (x86's BLOCKIRQ has no arm64 twin).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import ServerProcess, run_gdb, serving
from tests.live.test_gdb_basic import _values
from tests.sim.conftest import read_symbols

IRQ_COUNT, IRQ_ELR = 0xD0, 0xD8  # offsets in the guest's `results`


@pytest.fixture
def elf(guest_elf: Callable[[str], Path]) -> Path:
    return guest_elf("debug_exceptions")


@pytest.fixture
def server(elf: Path) -> Iterator[ServerProcess]:
    with serving(str(elf)) as s:
        yield s


def test_stepi_with_the_irq_line_high_lands_on_the_irq_vector(
    gdb_multiarch: str, server: ServerProcess, elf: Path
) -> None:
    sym = read_symbols(elf)
    out = run_gdb(gdb_multiarch, server, [
        "monitor caps",
        # the guest's own `brk #SIGNAL` on the way is not gdb's: re-injected, its handler skips it
        "set $pc = c14_step_irq", "hbreak c14_irq_insn", "continue", "delete",
        "monitor irq on", "stepi", "p/x $pc", "x/i $pc",
        "monitor irq off", "hbreak done", "continue",
        f"p/x *(long *)((char *)&results + {IRQ_COUNT})", f"p/x *(long *)((char *)&results + {IRQ_ELR})",
    ], elf=elf)  # fmt: skip
    assert "IRQ line per vCPU (monitor irq): yes" in out, out
    assert "vCPU 0: IRQ line high" in out and "vCPU 0: IRQ line low" in out, out
    v = _values(out)
    assert v[0] == hex(sym["vectors"] + 0x280), out
    assert re.search(r"<irq_handler>", out), out
    assert v[1:] == ["0x1", hex(sym["c14_irq_insn"])], "the handler ran once, for the instruction gdb stepped"


def test_monitor_irq_rejects_bad_arguments_and_gdb_leaving_lowers_the_line(
    gdb_multiarch: str, server: ServerProcess, elf: Path
) -> None:
    first = run_gdb(gdb_multiarch, server, [
        "set $pc = c14_irq_spin", "monitor irq", "monitor irq sideways", "monitor irq on",
    ], elf=elf)  # fmt: skip
    assert first.count("usage: monitor irq on|off") == 2, first
    assert "vCPU 0: IRQ line high" in first, first
    # gdb detached with the line high and the guest ran on: it unmasks IRQs and spins until its handler has
    # counted one.  The stub lowered the line when gdb left, so it is still spinning, having taken none.
    second = run_gdb(gdb_multiarch, server, [
        "p/x $pc", f"p/x *(long *)((char *)&results + {IRQ_COUNT})",
    ], elf=elf)  # fmt: skip
    sym = read_symbols(elf)
    pc, count = (int(x, 16) for x in _values(second))
    assert count == 0, second
    assert sym["c14_spin"] <= pc <= sym["c14_spin"] + 8, "still spinning: no IRQ arrived"
