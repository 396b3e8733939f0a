"""A guest with its MMU on, running at upper-half addresses as a kernel does (guests/mmu.S), as gdb-multiarch
sees it: memory, software breakpoints and watchpoints by virtual address, through the guest's page tables.

The guest's `brk #0x5501` at ``mmu_on`` (a signal for the scenario drivers) has no vector to go to, so gdb
stops there with SIGTRAP first; the sessions step past it with `set $pc`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import ServerProcess, run_gdb, serving
from tests.live.test_gdb_basic import _values
from tests.sim.conftest import read_symbols


@pytest.fixture
def elf(guest_elf: Callable[[str], Path]) -> Path:
    return guest_elf("mmu")


@pytest.fixture
def server(elf: Path) -> Iterator[ServerProcess]:
    with serving(str(elf)) as s:
        yield s


def test_upper_half_code_and_data_by_virtual_address(gdb_multiarch: str, server: ServerProcess, elf: Path) -> None:
    sym = read_symbols(elf)
    out = run_gdb(gdb_multiarch, server, [
        "continue", "p/x $pc", "set $pc = $pc + 4",  # the guest's own brk at mmu_on, then past it
        "hbreak hi_store", "continue", "p/x $pc", "x/2i $pc", "p/x *(long *)&hi_counter", "delete",
        "watch *(long *)&hi_counter", "continue", "continue", "delete",
        "break hi_after_store", "continue", "p/x $pc", "p/x *(long *)&hi_counter",
        "set var *(long *)&hi_counter = 500", "delete", "continue",
    ], elf=elf)  # fmt: skip
    assert "Program received signal SIGTRAP" in out, out
    v = _values(out)
    assert v[0] == hex(sym["mmu_on"]), out
    assert v[1] == hex(sym["hi_store"]) and sym["hi_store"] >> 39 == 0x1FFFFFF, "stopped in the upper half"
    assert re.search(r"<hi_loop\+8>:\s+str\s+x1, \[x20\]", out), "x/i reads the code through the page tables"
    assert v[2] == "0x0", out
    changes = re.findall(r"Old value = (\d+)\nNew value = (\d+)", out)
    assert changes == [("0", "1"), ("1", "2")], out  # the watch on the upper-half address, each store once
    assert v[3] == hex(sym["hi_after_store"]), "the BRK went where the tables put hi_after_store"
    assert v[4] == "0x3", out
    assert "exited normally" in out, "after 1000 - 500 more iterations the guest powers off"


def test_unmapped_virtual_addresses_are_refused(gdb_multiarch: str, server: ServerProcess, elf: Path) -> None:
    out = run_gdb(gdb_multiarch, server, [
        "continue", "set $pc = $pc + 4", "x/gx 0xffffff8000300000", "monitor gva2gpa 0xffffff8000201008",
        "monitor gva2gpa 0xffffff8000300000", "monitor gva2gpa", "break *0xffffff8000300000", "continue",
        "p/x $sctlr_el1 & 1", "p/x $tcr_el1", "p/x $ttbr1_el1 == (long)&l1_hi", "info registers system",
    ], elf=elf)  # fmt: skip
    assert _values(out)[:3] == ["0x1", "0x2b5193519", "0x1"], "the MMU registers, as gdb reads them (p)"
    assert re.search(r"^vbar_el1\s+0x0\s", out, re.M), out
    assert "Cannot access memory at address 0xffffff8000300000" in out, out
    lma = read_symbols(elf)["_hi_lma"]
    assert f"0xffffff8000201008 -> {lma + 0x1008:#x}" in out, out
    assert "0xffffff8000300000: no translation for 0xffffff8000300000" in out, out
    assert "usage: monitor gva2gpa ADDR" in out, out
    assert "Cannot insert breakpoint" in out, out
