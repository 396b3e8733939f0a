"""Several vCPUs as gdb-multiarch sees them (issue 10): `gdbstub serve --cpus 4` on guests/smp.S.

CPU 0 starts the others with PSCI CPU_ON; every CPU then loops over cpu_work, counting in its own
per_cpu slot.  gdb shows one thread per vCPU, names the thread that hit a breakpoint or watchpoint,
and with `set scheduler-locking step` a stepi moves only the selected vCPU.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import ServerProcess, run_gdb, serving
from tests.sim.conftest import read_symbols

N = 4


@pytest.fixture
def smp_elf(guest_elf: Callable[[str], Path]) -> Path:
    return guest_elf("smp")


@pytest.fixture
def smp_server(smp_elf: Path) -> Iterator[ServerProcess]:
    with serving(str(smp_elf), "--cpus", str(N)) as s:
        yield s


def test_info_threads_shows_every_cpu(gdb_multiarch: str, smp_server: ServerProcess, smp_elf: Path) -> None:
    sym = read_symbols(smp_elf)
    out = run_gdb(gdb_multiarch, smp_server, [
        "hbreak cpu_work", "continue", "continue", "continue", "continue", "continue", "delete", "info threads",
    ], elf=smp_elf)  # fmt: skip
    for k in range(N):
        assert re.search(rf'^\*?\s+{k + 1}\s+Thread {k + 1} "CPU#{k}"', out, re.M), out
    hit_threads = {int(t) for t in re.findall(r"Thread (\d+) \"?[^\n]*hit Breakpoint 1", out)}
    assert len(hit_threads) >= 2, out  # the breakpoint is every vCPU's: several threads report it
    assert f"{sym['cpu_work']:x}" in out


def test_watch_on_one_cpus_data_stops_in_its_thread(
    gdb_multiarch: str, smp_server: ServerProcess, smp_elf: Path
) -> None:
    out = run_gdb(gdb_multiarch, smp_server, [
        "watch *(long *)((char *)&per_cpu + 128)", "continue", "p $_thread", "continue", "p $_thread",
        "p *(long *)((char *)&per_cpu + 128)",
    ], elf=smp_elf)  # fmt: skip
    assert "Hardware watchpoint 1" in out
    threads = re.findall(r"^\$\d+ = (\d+)$", out, re.M)
    assert threads[:2] == ["3", "3"], out  # per_cpu + 128 is CPU 2's, gdb thread 3
    assert "Old value = 1" in out and "New value = 2" in out


def test_scheduler_locking_step_moves_only_the_selected_cpu(
    gdb_multiarch: str, smp_server: ServerProcess, smp_elf: Path
) -> None:
    out = run_gdb(gdb_multiarch, smp_server, [
        "hbreak cpu_work", "continue", "continue", "continue", "continue", "continue", "delete",
        "set scheduler-locking step", "thread 2", "p/x $pc", "thread 3", "p/x $pc", "thread 2", "stepi", "p/x $pc",
        "thread 3", "p/x $pc",
    ], elf=smp_elf)  # fmt: skip
    pcs = re.findall(r"^\$\d+ = (0x[0-9a-f]+)$", out, re.M)
    assert len(pcs) == 4, out
    t2_before, t3_before, t2_after, t3_after = (int(p, 16) for p in pcs)
    assert t2_after == t2_before + 4
    assert t3_after == t3_before, "the other vCPU stayed where it was"
