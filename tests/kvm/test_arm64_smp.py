"""Several vCPUs on the arm64 KVM backend (issue 10), through backends.api only, on guests/smp.S.

vCPU 0 starts at the ELF entry; vCPUs 1..N-1 are created powered off and the guest starts them with PSCI
CPU_ON, which KVM handles in the kernel.  Each test runs the vCPUs as a debugger does: one thread per vCPU
in run(k), the first exit kicks the others (tests/kvm/smp_rig.py).

Runs only on an aarch64 host with /dev/kvm (marker ``kvm_arm64``); on x86-64 inside the emulated arm64 host:
``scripts/arm64-host pytest -q -m kvm_arm64 tests/kvm``.  The emulated host has one CPU, so the vCPU
threads time-share it: waits are generous.  Imports nothing that needs unicorn or hypothesis.
"""

from __future__ import annotations

import os
import platform
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from backends.api import (
    EC_BREAKPT_LOW,
    EC_SOFTSTP_LOW,
    EC_WATCHPT_LOW,
    GUESTDBG_ENABLE,
    GUESTDBG_SINGLESTEP,
    GUESTDBG_USE_HW,
    BackendError,
    DebugRegs,
    Exit,
    ExitReason,
)
from backends.kvm.arm64 import KvmArm64Backend
from tests.kvm.conftest import elf_symbols
from tests.kvm.smp_rig import Fleet, Lab, all_started, counters, lab_fixtures, u64, wait_until

ON_ARM64_KVM = platform.machine().lower() in ("aarch64", "arm64") and os.path.exists("/dev/kvm")
pytestmark = [
    pytest.mark.kvm_arm64,
    pytest.mark.skipif(not ON_ARM64_KVM, reason="needs an aarch64 host with /dev/kvm (see the module docstring)"),
]

MAX_CPUS = 8  # guests/smp.S tries CPU_ON for 1..7
HW = GUESTDBG_ENABLE | GUESTDBG_USE_HW
BCR = 0x1E7  # E, PMC = EL1 and EL0, BAS = all four bytes
STORE = 0b10
PSCI_SUCCESS = 0
PSCI_INVALID_PARAMETERS = (1 << 64) - 2  # -2 as the guest stores it


def wcr(lsc: int, bas: int = 0xFF) -> int:
    return 1 | 0b11 << 1 | lsc << 3 | bas << 5


MakeVm = Callable[[int], KvmArm64Backend]


@pytest.fixture(scope="module")
def smp(guest_elf: Callable[[str], Path]) -> tuple[Path, dict[str, int]]:
    elf = guest_elf("smp")
    return elf, elf_symbols(elf)


@pytest.fixture
def sym(smp: tuple[Path, dict[str, int]]) -> dict[str, int]:
    return smp[1]


@pytest.fixture
def lab(smp: tuple[Path, dict[str, int]]) -> Iterator[Lab]:
    lab = Lab(lambda cpus: KvmArm64Backend(smp[0], cpus=cpus))
    yield lab
    lab.close()


make_vm, start = lab_fixtures()


# ---- start-up: PSCI CPU_ON in the kernel ------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 4])
def test_cpu_on_starts_every_secondary(
    make_vm: MakeVm, start: Callable[..., Fleet], sym: dict[str, int], n: int
) -> None:
    vm = make_vm(n)
    assert vm.capabilities().vcpus == n
    fleet = start(vm, range(n))
    wait_until(lambda: all_started(vm, sym, n), f"all {n} vCPUs reached cpu_loop")
    exits = fleet.stop()
    assert {k: ex.reason for k, ex in exits.items()} == dict.fromkeys(range(n), ExitReason.INTERRUPTED)
    results = [u64(vm, sym["cpu_on_result"] + 8 * k) for k in range(1, MAX_CPUS)]
    assert results == [PSCI_SUCCESS] * (n - 1) + [PSCI_INVALID_PARAMETERS] * (MAX_CPUS - n)
    assert [u64(vm, sym["started"] + 8 * k) for k in range(n, MAX_CPUS)] == [0] * (MAX_CPUS - n)
    # registers are per vCPU: each holds its own index (x19, the CPU_ON context id) and runs in the loop
    loop = range(sym["cpu_loop"], sym["cpu_work"] + 7 * 4)
    for k in range(n):
        assert vm.get_reg("x19", k) == k
        assert vm.get_reg("pc", k) in loop
        assert vm.get_regs(k)["x19"] == k


@pytest.mark.parametrize("n", [2, 4])
def test_counters_advance_on_every_vcpu(
    make_vm: MakeVm, start: Callable[..., Fleet], sym: dict[str, int], n: int
) -> None:
    vm = make_vm(n)
    fleet = start(vm, range(n))
    wait_until(lambda: all_started(vm, sym, n), f"all {n} vCPUs reached cpu_loop")
    before, shared = counters(vm, sym["per_cpu"], n), u64(vm, sym["shared"])
    wait_until(
        lambda: all(a > b for a, b in zip(counters(vm, sym["per_cpu"], n), before, strict=True)),
        "every vCPU's counter advanced",
    )
    # `shared` is incremented without atomics by every vCPU at once: a lost update can even take it back
    # for a moment, so it is only required to get past its first reading eventually
    wait_until(lambda: u64(vm, sym["shared"]) > shared, "the shared counter advanced")
    fleet.stop()
    assert counters(vm, sym["per_cpu"] + 64 * n, MAX_CPUS - n) == [0] * (MAX_CPUS - n)  # no such vCPUs


# ---- guest debug per vCPU ---------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 4])
def test_hw_breakpoint_on_every_vcpu_is_hit_by_each(
    make_vm: MakeVm, start: Callable[..., Fleet], sym: dict[str, int], n: int
) -> None:
    """The breakpoint is set on every vCPU before the secondaries are powered on (KVM keeps it across the
    CPU_ON reset).  All-stop rounds: every vCPU runs, the first exit kicks the rest; a vCPU that reported
    the hit gets its breakpoint removed (only its own), so the others' hits come in later rounds."""
    vm = make_vm(n)
    bp = sym["cpu_work"]
    regs = DebugRegs()
    regs.bcr[0], regs.bvr[0] = BCR, bp
    for k in range(n):
        vm.set_guest_debug(HW, regs, vcpu=k)
    hits: dict[int, Exit] = {}
    for _ in range(8 * n):
        fleet = start(vm, range(n))
        first = fleet.first()
        exits = fleet.stop()
        assert exits[first].reason in (ExitReason.DEBUG, ExitReason.INTERRUPTED)  # INTERRUPTED: a late kick
        for k, ex in exits.items():
            if ex.reason is ExitReason.INTERRUPTED:
                continue
            assert k not in hits, f"vCPU {k} hit the breakpoint again after it was removed from it"
            assert (ex.reason, ex.ec) == (ExitReason.DEBUG, EC_BREAKPT_LOW), ex
            assert vm.get_reg("pc", k) == bp
            assert vm.get_reg("x19", k) == k
            hits[k] = ex
            vm.set_guest_debug(GUESTDBG_ENABLE, DebugRegs(), vcpu=k)
        if len(hits) == n:
            break
    assert sorted(hits) == list(range(n))


@pytest.mark.parametrize(("n", "k"), [(2, 1), (4, 0), (4, 3)])
def test_write_watchpoint_stops_only_its_vcpu(
    make_vm: MakeVm, start: Callable[..., Fleet], sym: dict[str, int], n: int, k: int
) -> None:
    """A write watchpoint on per_cpu + 64*k, set on every vCPU as a debugger does: only vCPU k writes there,
    so only vCPU k stops, at its store, with FAR = the watched address; the others are kicked."""
    vm = make_vm(n)
    addr = sym["per_cpu"] + 64 * k
    regs = DebugRegs()
    regs.wcr[0], regs.wvr[0] = wcr(STORE), addr
    for j in range(n):
        vm.set_guest_debug(HW, regs, vcpu=j)
    fleet = start(vm, range(n))
    first = fleet.first()
    exits = fleet.stop()
    assert first == k
    ex = exits[k]
    assert (ex.reason, ex.ec, ex.far) == (ExitReason.DEBUG, EC_WATCHPT_LOW, addr), ex
    assert vm.get_reg("pc", k) == sym["cpu_work"] + 8  # str x0, [x20]: trapped before it writes
    assert vm.get_reg("x19", k) == k
    assert u64(vm, addr) == 0
    others = {j: e.reason for j, e in exits.items() if j != k}
    assert others == dict.fromkeys(others, ExitReason.INTERRUPTED)


def test_single_step_steps_only_that_vcpu(make_vm: MakeVm, sym: dict[str, int]) -> None:
    vm = make_vm(2)
    vm.set_guest_debug(GUESTDBG_ENABLE | GUESTDBG_SINGLESTEP, vcpu=0)
    ex = vm.run(0)
    assert (ex.reason, ex.ec) == (ExitReason.DEBUG, EC_SOFTSTP_LOW)
    assert vm.get_reg("pc", 0) == sym["_start"] + 4
    assert u64(vm, sym["started"] + 8) == 0  # vCPU 1 still off


# ---- kick -----------------------------------------------------------------------------------------------------


def test_kick_interrupts_only_that_vcpu(make_vm: MakeVm, start: Callable[..., Fleet], sym: dict[str, int]) -> None:
    n, j = 4, 2
    vm = make_vm(n)
    fleet = start(vm, range(n))
    wait_until(lambda: all_started(vm, sym, n), f"all {n} vCPUs reached cpu_loop")
    kicked = time.monotonic()
    vm.kick(j)
    assert fleet.wait(j).reason is ExitReason.INTERRUPTED
    latency = time.monotonic() - kicked
    assert [fleet.running(k) for k in range(n)] == [k != j for k in range(n)]
    frozen = counters(vm, sym["per_cpu"], n)
    wait_until(
        lambda: all(
            c > f for i, (c, f) in enumerate(zip(counters(vm, sym["per_cpu"], n), frozen, strict=True)) if i != j
        ),
        "the other vCPUs' counters advanced",
    )
    assert u64(vm, sym["per_cpu"] + 64 * j) == frozen[j]
    assert all(ex.reason is ExitReason.INTERRUPTED for ex in fleet.stop().values())
    print(f"\nkick of one running vCPU of {n}: run() returned after {1000 * latency:.1f} ms")


def test_powered_off_vcpu_returns_interrupted_on_kick(
    make_vm: MakeVm, start: Callable[..., Fleet], sym: dict[str, int]
) -> None:
    """KVM_RUN of a vCPU nobody has powered on sleeps in the kernel; a kick (signal) ends it, and so does one
    made before run() (immediate_exit).  Neither keeps the vCPU from starting at CPU_ON afterwards."""
    vm = make_vm(2)
    fleet = start(vm, [1])
    time.sleep(0.5)
    assert fleet.running(1), f"run() of a powered-off vCPU returned: {fleet.exits}"
    vm.kick(1)
    assert fleet.wait(1).reason is ExitReason.INTERRUPTED
    vm.kick(1)
    assert vm.run(1).reason is ExitReason.INTERRUPTED
    assert u64(vm, sym["started"] + 8) == 0 and counters(vm, sym["per_cpu"], 2) == [0, 0]
    fleet = start(vm, range(2))
    wait_until(lambda: all_started(vm, sym, 2), "vCPU 1 started after CPU_ON")
    fleet.stop()
    assert u64(vm, sym["cpu_on_result"] + 8) == PSCI_SUCCESS


def test_system_off_stops_the_other_vcpus(make_vm: MakeVm, start: Callable[..., Fleet], sym: dict[str, int]) -> None:
    """PSCI SYSTEM_OFF on vCPU 0 is its SHUTDOWN exit; KVM stops vCPU 1 too, but without an exit of its own:
    its KVM_RUN sleeps (the counter freezes) until a kick ends it, also in a later run()."""
    vm = make_vm(2)
    fleet = start(vm, range(2))
    wait_until(lambda: all_started(vm, sym, 2), "both vCPUs reached cpu_loop")
    fleet.stop()
    stub = sym["stack_top"] - MAX_CPUS * 4096  # CPU 7's stack: unused with two vCPUs
    vm.write_memory(stub, struct.pack("<3I", 0xD2800100, 0xF2B08000, 0xD4000002))  # x0 = SYSTEM_OFF; hvc #0
    vm.set_regs({"pc": stub}, vcpu=0)
    fleet = start(vm, range(2))
    assert fleet.first() == 0
    assert (fleet.exits[0].reason, fleet.exits[0].detail) == (ExitReason.SHUTDOWN, "PSCI SYSTEM_OFF")
    frozen = u64(vm, sym["per_cpu"] + 64)
    time.sleep(0.5)
    assert fleet.running(1) and u64(vm, sym["per_cpu"] + 64) == frozen
    assert fleet.stop()[1].reason is ExitReason.INTERRUPTED
    fleet = start(vm, [1])
    time.sleep(0.3)
    assert fleet.running(1) and u64(vm, sym["per_cpu"] + 64) == frozen
    assert fleet.stop()[1].reason is ExitReason.INTERRUPTED


# ---- numbering ------------------------------------------------------------------------------------------------


def test_vcpu_numbers_and_per_vcpu_registers(make_vm: MakeVm, smp: tuple[Path, dict[str, int]]) -> None:
    for bad in (0, 9):
        with pytest.raises(BackendError, match="between 1 and 8"):
            KvmArm64Backend(smp[0], cpus=bad)
    vm = make_vm(2)
    for call in (
        lambda: vm.get_reg("pc", 2),
        lambda: vm.run(2),
        lambda: vm.kick(-1),
        lambda: vm.set_guest_debug(0, vcpu=2),
    ):
        with pytest.raises(BackendError, match="no vCPU"):
            call()
    vm.set_regs({"x5": 0x55}, vcpu=1)
    assert (vm.get_reg("x5", 0), vm.get_reg("x5", 1)) == (0, 0x55)
    assert vm.get_reg("pc", 0) == smp[1]["_start"]
