"""Real gdb-multiarch against `gdbstub serve --backend kvm --cpus 2 guests/build/x86/smp.elf` (issue 10).

Every vCPU enters the guest at once with rdi = its index (the x86 backend's documented start-up instead of
INIT/SIPI) and loops over cpu_work on its own counter.  Skipped only where /dev/kvm does not exist.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import ROOT, ServerProcess, run_gdb
from tests.kvm.conftest import HAVE_KVM, NO_KVM, build_x86_guest

pytestmark = [pytest.mark.skipif(not HAVE_KVM, reason=NO_KVM), pytest.mark.gdb]


@pytest.fixture(scope="module")
def smp() -> Path:
    return build_x86_guest("smp")


def test_two_vcpus_are_two_threads_and_both_hit_an_hbreak(
    gdb_multiarch: str, make_server: type[ServerProcess], smp: Path
) -> None:
    server = make_server("--backend", "kvm", "--cpus", "2", str(smp.relative_to(ROOT)))
    out = run_gdb(gdb_multiarch, server, [
        # free continues (whichever vCPU gets there first: the same one six times is possible), then each
        # vCPU alone (scheduler-locking on): the one hbreak is on both, so each must report it
        "hbreak cpu_work", *["continue"] * 4, "set scheduler-locking on", "thread 1", "continue", "thread 2",
        "continue", "set scheduler-locking off", "delete", "info threads", "thread 2", "p $rdi", "thread 1",
        "p $rdi", "set scheduler-locking step", "thread 2", "p/x $pc", "stepi", "p/x $pc", "thread 1", "p/x $pc",
    ], elf=smp)  # fmt: skip
    for k in (0, 1):
        assert re.search(rf'^\*?\s+{k + 1}\s+Thread {k + 1} "CPU#{k}"', out, re.M), out
    hits = re.findall(r'Thread (\d) "CPU#\d" hit Breakpoint 1', out)
    assert len(hits) == 6 and hits[4:] == ["1", "2"], out  # the one hbreak is on both vCPUs: each reports it
    values = re.findall(r"^\$\d+ = (\S+)$", out, re.M)
    assert values[:2] == ["1", "0"], out  # rdi: the vCPU's index
    t2_before, t2_after, t1 = (int(v, 16) for v in values[2:5])
    assert t2_after != t2_before, "thread 2 stepped"
