"""Several vCPUs on the x86-64 KVM backend (issue 10), through backends.api only, on guests/x86/smp.S.

SMP start-up is the backend's documented choice (backends/kvm/x86.py), not INIT/SIPI: every vCPU enters
the ELF entry at once in the same long-mode state, with rdi = its index.  Each test runs the vCPUs as a
debugger does: one thread per vCPU in run(k), the first exit kicks the others (tests/kvm/smp_rig.py).
On this host's KVM (PVM) data breakpoints are not delivered (probed, as in test_x86_scenarios.py): the
watchpoint test checks the host behaves as probed and skips with the finding.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from backends.api import (
    GUESTDBG_ENABLE,
    GUESTDBG_SINGLESTEP,
    GUESTDBG_USE_HW,
    X86_DB_VECTOR,
    BackendError,
    Exit,
    ExitReason,
    X86DebugRegs,
)
from backends.kvm import open_backend
from backends.kvm.x86 import VCPU_STACK, KvmX86Backend, probe_host
from tests.kvm.conftest import HAVE_KVM, NO_KVM, build_x86_guest, elf_symbols
from tests.kvm.smp_rig import Fleet, Lab, all_started, counters, lab_fixtures, u64, wait_until

ON_X86 = platform.machine().lower() in ("x86_64", "amd64")
pytestmark = [
    pytest.mark.skipif(not HAVE_KVM, reason=NO_KVM),
    pytest.mark.skipif(not ON_X86, reason="x86-64 guests need an x86-64 host"),
]

MAX_CPUS = 8
HW = GUESTDBG_ENABLE | GUESTDBG_USE_HW
DR7_FIXED = 0x400
DR6_ACTIVE_LOW = 0xFFFF0FF0
RAM = 16 << 20

MakeVm = Callable[[int], KvmX86Backend]
Start = Callable[[KvmX86Backend, "list[int] | range"], Fleet]


def dr7_exec(slot: int) -> int:
    return DR7_FIXED | 1 << (2 * slot + 1)  # G_slot, R/W 00 (execute), LEN 00


def dr7_write8(slot: int) -> int:
    return DR7_FIXED | 1 << (2 * slot + 1) | 0b1001 << (16 + 4 * slot)  # R/W 01 (write), LEN 10 (8 bytes)


def debugreg(slot: int, addr: int, dr7: int) -> X86DebugRegs:
    regs = X86DebugRegs()
    regs.debugreg[slot] = addr
    regs.debugreg[7] = dr7
    return regs


@pytest.fixture(scope="module")
def smp() -> tuple[Path, dict[str, int]]:
    elf = build_x86_guest("smp")
    return elf, elf_symbols(elf)


@pytest.fixture
def sym(smp: tuple[Path, dict[str, int]]) -> dict[str, int]:
    return smp[1]


@pytest.fixture
def lab(smp: tuple[Path, dict[str, int]]) -> Iterator[Lab]:
    lab = Lab(lambda cpus: KvmX86Backend(smp[0], ram_size=RAM, cpus=cpus))
    yield lab
    lab.close()


make_vm, start = lab_fixtures()


# ---- start-up -------------------------------------------------------------------------------------------------


def test_every_vcpu_starts_at_the_entry_with_its_index(make_vm: MakeVm, sym: dict[str, int]) -> None:
    n = 4
    vm = make_vm(n)
    caps = vm.capabilities()
    assert caps.vcpus == n and any("rdi = the vCPU index" in note for note in caps.notes)
    top = RAM - 32 * 1024
    for k in range(n):
        regs = vm.get_regs(k)
        assert (regs["rip"], regs["rdi"], regs["rsp"]) == (sym["_start"], k, top - k * VCPU_STACK)
        assert regs["cs"] == 0x08 and regs["ss"] == 0x10


@pytest.mark.parametrize("n", [1, 2, 4, 8])
def test_counters_advance_on_every_vcpu(make_vm: MakeVm, start: Start, sym: dict[str, int], n: int) -> None:
    vm = make_vm(n)
    fleet = start(vm, range(n))
    wait_until(lambda: all_started(vm, sym, n), f"all {n} vCPUs reached their loop")
    before, shared = counters(vm, sym["per_cpu"], n), u64(vm, sym["shared"])
    wait_until(
        lambda: all(a > b for a, b in zip(counters(vm, sym["per_cpu"], n), before, strict=True)),
        "every vCPU's counter advanced",
    )
    # `shared` is incremented without atomics by every vCPU at once: a lost update can even take it back
    # for a moment, so it is only required to get past its first reading eventually
    wait_until(lambda: u64(vm, sym["shared"]) > shared, "the shared counter advanced")
    exits = fleet.stop()
    assert {k: ex.reason for k, ex in exits.items()} == dict.fromkeys(range(n), ExitReason.INTERRUPTED)
    assert counters(vm, sym["per_cpu"] + 64 * n, MAX_CPUS - n) == [0] * (MAX_CPUS - n)
    work = range(sym["cpu_work"], sym["_start"] + 0x100)
    for k in range(n):  # registers are per vCPU: rdi is the index the backend gave, rbx its own slot
        regs = vm.get_regs(k)
        assert (regs["rdi"], regs["rbx"]) == (k, sym["per_cpu"] + 64 * k)
        assert vm.get_reg("rip", k) in work


# ---- guest debug per vCPU -----------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 4])
def test_hw_breakpoint_on_every_vcpu_is_hit_by_each(make_vm: MakeVm, start: Start, sym: dict[str, int], n: int) -> None:
    """DR0 = cpu_work on every vCPU.  All-stop rounds: every vCPU runs, the first exit kicks the rest; a vCPU
    that reported the hit gets its breakpoint removed (only its own), so the others' hits come later."""
    vm = make_vm(n)
    bp = sym["cpu_work"]
    for k in range(n):
        vm.set_guest_debug(HW, debugreg(0, bp, dr7_exec(0)), vcpu=k)
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
            assert (ex.reason, ex.exception, ex.pc) == (ExitReason.DEBUG, X86_DB_VECTOR, bp), ex
            assert ex.dr6 & 0xF == 1  # B0
            assert vm.get_reg("rip", k) == bp and vm.get_reg("rdi", k) == k
            hits[k] = ex
            vm.set_guest_debug(0, X86DebugRegs(), vcpu=k)
        if len(hits) == n:
            break
    assert sorted(hits) == list(range(n))


def test_write_watchpoint_stops_only_its_vcpu(make_vm: MakeVm, start: Start, sym: dict[str, int]) -> None:
    n, k = 4, 2
    vm = make_vm(n)
    addr = sym["per_cpu"] + 64 * k
    for j in range(n):
        vm.set_guest_debug(HW, debugreg(0, addr, dr7_write8(0)), vcpu=j)
    fleet = start(vm, range(n))
    host = probe_host()
    if not host.data_breakpoints:
        # consistent with the probe: vCPU k writes its slot unseen, nothing stops until the kicks
        wait_until(lambda: u64(vm, addr) > 100, f"vCPU {k} wrote its slot")
        exits = fleet.stop()
        assert {j: ex.reason for j, ex in exits.items()} == dict.fromkeys(range(n), ExitReason.INTERRUPTED)
        pytest.skip(
            f"this host's KVM does not deliver data breakpoints (probe guest: {host.finding('data breakpoint')})"
        )
    first = fleet.first()
    exits = fleet.stop()
    assert first == k
    ex = exits[k]
    assert (ex.reason, ex.exception, ex.pc) == (ExitReason.DEBUG, X86_DB_VECTOR, sym["after_write"]), ex  # a trap
    assert ex.dr6 == DR6_ACTIVE_LOW | 1
    assert vm.get_reg("rdi", k) == k
    others = {j: e.reason for j, e in exits.items() if j != k}
    assert others == dict.fromkeys(others, ExitReason.INTERRUPTED)


def test_single_step_steps_only_that_vcpu(make_vm: MakeVm, sym: dict[str, int]) -> None:
    vm = make_vm(2)
    vm.set_guest_debug(GUESTDBG_ENABLE | GUESTDBG_SINGLESTEP, vcpu=1)
    for _ in range(3):
        ex = vm.run(1)
        assert (ex.reason, ex.exception) == (ExitReason.DEBUG, X86_DB_VECTOR)
    assert ex.pc == vm.get_reg("rip", 1) > sym["_start"]
    assert vm.get_reg("rip", 0) == sym["_start"]  # vCPU 0 did not move
    vm.set_guest_debug(0, vcpu=1)


# ---- kick -----------------------------------------------------------------------------------------------------


def test_kick_interrupts_only_that_vcpu(make_vm: MakeVm, start: Start, sym: dict[str, int]) -> None:
    n, j = 4, 1
    vm = make_vm(n)
    fleet = start(vm, range(n))
    wait_until(lambda: all_started(vm, sym, n), f"all {n} vCPUs reached their loop")
    kicked = time.monotonic()
    vm.kick(j)
    assert fleet.wait(j, timeout=2.0).reason is ExitReason.INTERRUPTED
    assert time.monotonic() - kicked < 1.0
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
    # a kick made while vCPU j is not running interrupts its next run() only, not another vCPU's
    vm.kick(j)
    fleet = start(vm, [0])
    time.sleep(0.2)
    assert fleet.running(0)
    assert vm.run(j).reason is ExitReason.INTERRUPTED
    fleet.stop()


# ---- numbering and open_backend -------------------------------------------------------------------------------


def test_vcpu_numbers_and_per_vcpu_registers(make_vm: MakeVm, smp: tuple[Path, dict[str, int]]) -> None:
    for bad in (0, 9, -1):
        with pytest.raises(BackendError, match="between 1 and 8"):
            KvmX86Backend(smp[0], cpus=bad)
    vm = make_vm(2)
    calls: list[Callable[[], object]] = [
        lambda: vm.get_reg("rip", 2),
        lambda: vm.get_regs(-1),
        lambda: vm.set_regs({"rax": 1}, vcpu=2),
        lambda: vm.run(2),
        lambda: vm.kick(3),
        lambda: vm.set_guest_debug(0, vcpu=2),
    ]
    for call in calls:
        with pytest.raises(BackendError, match=r"no vCPU .*: this VM has 2 vCPUs \(0\.\.1\)"):
            call()
    vm.set_regs({"rax": 0x55, "xmm3": 7, "fs_base": 0x1000}, vcpu=1)
    assert [vm.get_reg(name, 0) for name in ("rax", "xmm3", "fs_base")] == [0, 0, 0]
    assert [vm.get_reg(name, 1) for name in ("rax", "xmm3", "fs_base")] == [0x55, 7, 0x1000]


def test_open_backend_passes_the_vcpu_count(smp: tuple[Path, dict[str, int]]) -> None:
    vm = open_backend(smp[0], RAM, None, cpus=3)
    try:
        assert isinstance(vm, KvmX86Backend) and vm.capabilities().vcpus == 3
    finally:
        vm.close()
