"""gdb-multiarch against `gdbstub serve --backend kvm --cpus 4` on guests/smp.S in the emulated arm64 host.

Real arm64 KVM brings the secondaries up itself (PSCI CPU_ON in-kernel); gdb sees each vCPU as a thread.
The same harness as tests/kvm/test_arm64_live_gdb.py (marker ``arm64_host``: `scripts/test` runs these after
the native suite), one boot for the module.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.conftest import GUESTS
from tests.kvm.test_arm64_live_gdb import BOOT_TIMEOUT, ON_X86_64, Arm64Stub, _harness_or_skip, _symbols, gdb

pytestmark = [
    pytest.mark.arm64_host,
    pytest.mark.gdb,
    pytest.mark.skipif(not ON_X86_64, reason="boots the emulated arm64 host from an x86-64 machine"),
]

N = 4
SMP_ELF = GUESTS / "build" / "smp.elf"


@pytest.fixture(scope="module")
def smp_stub(gdb_multiarch: str) -> Iterator[Arm64Stub]:
    _harness_or_skip()
    if not SMP_ELF.exists():
        pytest.fail(f"{SMP_ELF} is not built (scripts/build-guests)")
    s = Arm64Stub(SMP_ELF, f"--cpus {N}")
    try:
        s.wait_ready(BOOT_TIMEOUT)
        yield s
        assert s.alive(), f"the emulated host (or the stub in it) exited during the tests:\n{s.console()}"
        assert "Traceback" not in "\n".join(s.lines), s.console(200)
    finally:
        s.stop()


def test_threads_and_an_hbreak_every_cpu_hits(gdb_multiarch: str, smp_stub: Arm64Stub) -> None:
    out = gdb(gdb_multiarch, smp_stub, ["hbreak cpu_work", *["continue"] * 8, "delete", "info threads",
                                        "p/x *(long (*)[8])&started"], elf=SMP_ELF)  # fmt: skip
    for k in range(N):
        assert re.search(rf'^\*?\s+{k + 1}\s+Thread {k + 1} "CPU#{k}"', out, re.M), out
    # CPU 0 sets started[0] after its CPU_ON loop: every vCPU is powered on (a secondary may still be on its
    # way to cpu_work), so each one alone can get there below without waiting for another
    assert "$1 = {0x1, " in out, out
    # The free continues report whichever vCPU gets there first (real KVM vCPUs run in parallel: one may
    # win them all).  Each vCPU alone (scheduler-locking on) must report the one hbreak.
    locked = ["hbreak cpu_work", "set scheduler-locking on"]
    for k in range(N):
        locked += [f"thread {k + 1}", "continue"]
    out = gdb(gdb_multiarch, smp_stub, locked, elf=SMP_ELF)
    hits = re.findall(r'Thread (\d) "CPU#\d" hit Breakpoint 1', out)
    assert hits == [str(k + 1) for k in range(N)], out


def test_watch_on_one_cpus_counter_stops_in_its_thread(gdb_multiarch: str, smp_stub: Arm64Stub) -> None:
    out = gdb(gdb_multiarch, smp_stub, [
        "watch *(long *)((char *)&per_cpu + 192)", "continue", "p $_thread", "continue", "p $_thread",
    ], elf=SMP_ELF)  # fmt: skip
    threads = re.findall(r"^\$\d+ = (\d+)$", out, re.M)
    assert threads == ["4", "4"], out  # per_cpu + 192 is CPU 3's: gdb thread 4


def test_scheduler_locking_stepi_moves_one_cpu(gdb_multiarch: str, smp_stub: Arm64Stub) -> None:
    out = gdb(gdb_multiarch, smp_stub, [
        "hbreak cpu_work", *["continue"] * 4, "delete", "set scheduler-locking step",
        "thread 2", "p/x $pc", "thread 3", "p/x $pc", "thread 2", "stepi", "p/x $pc", "thread 3", "p/x $pc",
    ], elf=SMP_ELF)  # fmt: skip
    pcs = [int(v, 16) for v in re.findall(r"^\$\d+ = (0x[0-9a-f]+)$", out, re.M)]
    assert len(pcs) == 4, out
    work = _symbols(SMP_ELF)["cpu_work"]
    loop_back = work + 6 * 4  # cpu_work's 7th instruction, `b cpu_work`
    assert work <= pcs[0] <= loop_back, "thread 2 (CPU#1) was halted in its loop"
    assert pcs[2] == (work if pcs[0] == loop_back else pcs[0] + 4), out
    assert pcs[3] == pcs[1], out
