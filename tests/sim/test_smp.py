"""Several vCPUs on the simulated core, through backends.api only: PSCI bring-up of guests/smp.S, per-vCPU
registers, guest debug and exits over one shared memory, kick, CPU_OFF, and the deterministic round-robin.

Each vCPU runs in a thread of its own, as a VMM runs KVM_RUN; a stop is all-stop: the first exit, then a
kick of every other vCPU (they stop at the end of their last turn: SimBackend holds them meanwhile).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
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
from backends.elf import load_image
from backends.sim import SimBackend
from tests.sim.conftest import Guest, read_symbols

N = 4  # vCPUs of most tests (smp.S handles up to 8)
MAX_CPUS = 8  # smp.S's
SCRATCH = 0x4010_0000  # RAM the guest never touches: single instructions for the tests to step
MRS_X0_MPIDR = 0xD538_00A0  # mrs x0, mpidr_el1
HVC0 = 0xD400_0002  # hvc #0
SMC0 = 0xD400_0003  # smc #0
PSCI_VERSION = 0x8400_0000
PSCI_CPU_OFF = 0x8400_0002
PSCI_CPU_ON = 0x8400_0003
PSCI_CPU_ON_64 = 0xC400_0003
PSCI_AFFINITY_INFO_64 = 0xC400_0004
PSCI_MIGRATE = 0x8400_0005  # not supported by KVM's PSCI 0.2
PSCI_MIGRATE_INFO_TYPE = 0x8400_0006
PSCI_SYSTEM_OFF = 0x8400_0008
SUCCESS, NOT_SUPPORTED, INVALID_PARAMETERS, ALREADY_ON = 0, -1, -2, -4
BCR_EXEC = 1 | 0b11 << 1 | 0xF << 5  # enabled, EL0 and EL1, A64 instruction
WCR_STORE8 = 1 | 0b11 << 1 | 0b10 << 3 | 0xFF << 5  # enabled, EL0 and EL1, stores, 8 bytes


@pytest.fixture(scope="module")
def smp(guest_elf: Callable[[str], Path]) -> Guest:
    path = guest_elf("smp")
    return Guest(path, load_image(path), read_symbols(path))


class Vmm:
    """One thread per vCPU calling run(), started on each resume; exits arrive in one queue."""

    def __init__(self, vm: SimBackend) -> None:
        self.vm = vm
        self.n = vm.capabilities().vcpus
        self.exits: queue.Queue[tuple[int, Exit]] = queue.Queue()
        self.running: dict[int, threading.Thread] = {}

    def resume(self, vcpus: Iterable[int] | None = None) -> None:
        for k in range(self.n) if vcpus is None else vcpus:
            t = threading.Thread(target=self._run, args=(k,), daemon=True, name=f"vcpu{k}")
            self.running[k] = t
            t.start()

    def _run(self, k: int) -> None:
        self.exits.put((k, self.vm.run(k)))

    def next_exit(self, timeout: float = 20.0) -> tuple[int, Exit]:
        k, ex = self.exits.get(timeout=timeout)
        self.running.pop(k).join()
        return k, ex

    def stop(self) -> dict[int, Exit]:
        """Kick every vCPU still inside run(); their exits."""
        for k in list(self.running):
            self.vm.kick(k)
        out: dict[int, Exit] = {}
        while self.running:
            k, ex = self.next_exit()
            out[k] = ex
        return out

    def all_stop(self, vcpus: Iterable[int] | None = None) -> tuple[int, Exit, dict[int, Exit]]:
        """Resume, wait for the first exit, stop the others: (vCPU, its exit, the others' exits)."""
        self.resume(vcpus)
        k, ex = self.next_exit()
        return k, ex, self.stop()

    def run_for(self, seconds: float, vcpus: Iterable[int] | None = None) -> dict[int, Exit]:
        self.resume(vcpus)
        time.sleep(seconds)
        assert self.exits.empty(), "a vCPU exited on its own"
        return self.stop()


def u64(vm: SimBackend, addr: int) -> int:
    return int.from_bytes(vm.read_memory(addr, 8), "little", signed=True)


def counters(vm: SimBackend, smp: Guest, n: int = MAX_CPUS) -> list[int]:
    return [u64(vm, smp["per_cpu"] + 64 * k) for k in range(n)]


def bp_regs(addr: int) -> DebugRegs:
    regs = DebugRegs()
    regs.bcr[0], regs.bvr[0] = BCR_EXEC, addr
    return regs


def wp_regs(addr: int) -> DebugRegs:
    regs = DebugRegs()
    regs.wcr[0], regs.wvr[0] = WCR_STORE8, addr
    return regs


def boot(smp: Guest, n: int = N) -> tuple[SimBackend, Vmm]:
    """A machine whose every CPU reached its loop, stopped (all vCPUs outside run())."""
    vm = SimBackend(smp.image, cpus=n)
    vmm = Vmm(vm)
    vmm.resume()
    deadline = time.monotonic() + 20
    while min(counters(vm, smp, n)) == 0:
        assert time.monotonic() < deadline, f"not every CPU counts: {counters(vm, smp, n)}"
        time.sleep(0.01)
    exits = vmm.stop()
    assert {k: ex.reason for k, ex in exits.items()} == dict.fromkeys(range(n), ExitReason.INTERRUPTED)
    return vm, vmm


@pytest.fixture
def booted(smp: Guest) -> Iterator[tuple[SimBackend, Vmm]]:
    vm, vmm = boot(smp)
    yield vm, vmm
    vmm.stop()
    vm.close()


def step(vm: SimBackend, k: int) -> Exit:
    """Single-step vCPU k alone (the others stay out of run(): a stepped vCPU does not wait for them)."""
    vm.set_guest_debug(GUESTDBG_ENABLE | GUESTDBG_SINGLESTEP, vcpu=k)
    try:
        ex = vm.run(k)
    finally:
        vm.set_guest_debug(0, vcpu=k)
    assert (ex.reason, ex.ec) == (ExitReason.DEBUG, EC_SOFTSTP_LOW)
    return ex


def psci(vm: SimBackend, k: int, fn: int, *args: int, insn: int = HVC0) -> int:
    """vCPU k calls PSCI ``fn`` (hvc #0 at SCRATCH + 4); its registers are put back; x0 as a signed value."""
    saved = vm.get_regs(k)
    vm.write_memory(SCRATCH + 4, insn.to_bytes(4, "little"))
    vm.set_regs({"pc": SCRATCH + 4, "x0": fn} | {f"x{i + 1}": a for i, a in enumerate(args)}, k)
    step(vm, k)
    assert vm.get_reg("pc", k) == SCRATCH + 8  # past the hvc
    ret = vm.get_reg("x0", k)
    vm.set_regs(saved, k)
    return ret - (1 << 64) if ret >> 63 else ret


# ---- bring-up -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, N, MAX_CPUS])
def test_every_cpu_starts_and_counts(smp: Guest, n: int) -> None:
    vm, vmm = boot(smp, n)
    try:
        assert vm.capabilities().vcpus == n
        results = [u64(vm, smp["cpu_on_result"] + 8 * k) for k in range(1, MAX_CPUS)]
        assert results == [SUCCESS] * (n - 1) + [INVALID_PARAMETERS] * (MAX_CPUS - n)
        assert [u64(vm, smp["started"] + 8 * k) for k in range(MAX_CPUS)] == [1] * n + [0] * (MAX_CPUS - n)
        before = counters(vm, smp)
        assert all(c > 0 for c in before[:n]) and before[n:] == [0] * (MAX_CPUS - n)
        shared = u64(vm, smp["shared"])
        vmm.run_for(0.3)
        after = counters(vm, smp)
        assert all(a > b for a, b in zip(after[:n], before[:n], strict=True)), (before, after)
        assert after[n:] == [0] * (MAX_CPUS - n) and u64(vm, smp["shared"]) > shared
    finally:
        vm.close()


def test_secondaries_start_powered_off(smp: Guest) -> None:
    vm = SimBackend(smp.image, cpus=2)
    vmm = Vmm(vm)
    try:
        assert vm.get_reg("pc", 0) == smp["_start"]
        reset = vm.get_regs(1)  # KVM's vcpu reset state
        assert reset["pc"] == 0 and reset["cpsr"] == 0x3C5 and reset["x0"] == 0 and reset["sp"] == 0
        vmm.resume([1])
        time.sleep(0.2)
        assert vmm.exits.empty(), "a powered-off vCPU ran"
        vmm.resume([0])  # CPU 0 starts CPU 1 through PSCI CPU_ON: its blocked run() goes on
        deadline = time.monotonic() + 20
        while min(counters(vm, smp, 2)) == 0:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        exits = vmm.stop()
        assert {k: ex.reason for k, ex in exits.items()} == {0: ExitReason.INTERRUPTED, 1: ExitReason.INTERRUPTED}
        assert u64(vm, smp["started"] + 8) == 1
    finally:
        vmm.stop()
        vm.close()


def test_kick_of_a_powered_off_vcpu(smp: Guest) -> None:
    vm = SimBackend(smp.image, cpus=2)
    vmm = Vmm(vm)
    try:
        vmm.resume([1])
        time.sleep(0.05)
        vm.kick(1)
        k, ex = vmm.next_exit(timeout=5)
        assert (k, ex.reason) == (1, ExitReason.INTERRUPTED)
        assert vm.get_reg("pc", 1) == 0
    finally:
        vmm.stop()
        vm.close()


def test_vcpu_count_is_checked(smp: Guest) -> None:
    for bad in (0, MAX_CPUS + 1):
        with pytest.raises(BackendError):
            SimBackend(smp.image, cpus=bad)
    vm = SimBackend(smp.image, cpus=2)
    try:
        for call in (lambda: vm.get_regs(2), lambda: vm.get_reg("pc", 2), lambda: vm.run(2), lambda: vm.kick(-1)):
            with pytest.raises(BackendError):
                call()
        with pytest.raises(BackendError):
            vm.set_guest_debug(GUESTDBG_ENABLE, vcpu=2)
    finally:
        vm.close()


# ---- per-vCPU state, PSCI -----------------------------------------------------------------------------


def test_registers_are_per_vcpu_and_mpidr_names_the_vcpu(booted: tuple[SimBackend, Vmm], smp: Guest) -> None:
    vm, _ = booted
    # every CPU keeps its index in x19 and its own slot in x20 (smp.S)
    assert [vm.get_reg("x19", k) for k in range(N)] == list(range(N))
    assert [vm.get_reg("x20", k) for k in range(N)] == [smp["per_cpu"] + 64 * k for k in range(N)]
    vm.set_regs({"x25": 0x1234}, 2)
    assert [vm.get_reg("x25", k) for k in range(N)] == [0, 0, 0x1234, 0]
    vm.write_memory(SCRATCH, MRS_X0_MPIDR.to_bytes(4, "little"))
    for k in range(N):
        vm.set_regs({"pc": SCRATCH}, k)
        step(vm, k)
        assert vm.get_reg("x0", k) == 0x8000_0000 | k  # Aff0 = the vCPU index, bit 31 RES1
        assert vm.get_reg("pc", k) == SCRATCH + 4


def test_psci_calls(booted: tuple[SimBackend, Vmm], smp: Guest) -> None:
    vm, _ = booted
    assert psci(vm, 0, PSCI_VERSION) == 2  # PSCI 0.2
    assert psci(vm, 3, PSCI_VERSION, insn=SMC0) == 2  # the SMC conduit too
    assert psci(vm, 0, PSCI_CPU_ON_64, 1, smp["secondary"], 1) == ALREADY_ON
    assert psci(vm, 1, PSCI_CPU_ON_64, 0, smp["secondary"], 0) == ALREADY_ON
    assert psci(vm, 0, PSCI_CPU_ON_64, N, smp["secondary"], N) == INVALID_PARAMETERS  # no such vCPU
    assert psci(vm, 0, PSCI_CPU_ON_64, 0x8000_0001, smp["secondary"], 1) == INVALID_PARAMETERS  # not an affinity
    assert psci(vm, 0, PSCI_CPU_ON, 1 << 32 | 2, smp["secondary"], 2) == ALREADY_ON  # SMC32: x1[31:0]
    assert [psci(vm, 0, PSCI_AFFINITY_INFO_64, k, 0) for k in range(N + 1)] == [0] * N + [1]  # ON..., OFF
    assert psci(vm, 0, PSCI_AFFINITY_INFO_64, 0, 4) == INVALID_PARAMETERS
    assert psci(vm, 0, PSCI_MIGRATE_INFO_TYPE) == 2
    assert psci(vm, 0, PSCI_MIGRATE) == NOT_SUPPORTED


def test_psci_on_one_vcpu(smp: Guest) -> None:
    vm = SimBackend(smp.image, cpus=1)
    try:
        assert psci(vm, 0, PSCI_CPU_ON_64, 0, smp["secondary"], 0) == ALREADY_ON
        assert psci(vm, 0, PSCI_CPU_ON_64, 1, smp["secondary"], 1) == INVALID_PARAMETERS
    finally:
        vm.close()


def test_cpu_off_and_on_again(booted: tuple[SimBackend, Vmm], smp: Guest) -> None:
    vm, vmm = booted
    slot = smp["per_cpu"] + 64 * 2
    vm.write_memory(SCRATCH + 4, HVC0.to_bytes(4, "little"))
    vm.set_regs({"pc": SCRATCH + 4, "x0": PSCI_CPU_OFF}, 2)
    vmm.resume()
    time.sleep(0.2)
    frozen = u64(vm, slot)
    time.sleep(0.2)
    assert u64(vm, slot) == frozen  # vCPU 2 is off: its run() sleeps
    assert vmm.exits.empty()
    exits = vmm.stop()
    assert exits[2].reason is ExitReason.INTERRUPTED  # a kick wakes a powered-off vCPU's run()
    assert vm.get_reg("pc", 2) == SCRATCH + 8
    assert psci(vm, 0, PSCI_AFFINITY_INFO_64, 2, 0) == 1  # OFF
    assert psci(vm, 1, PSCI_CPU_ON_64, 2, smp["secondary"], 2) == SUCCESS
    regs = vm.get_regs(2)  # reset, at the entry, x0 = the context id
    assert (regs["pc"], regs["x0"], regs["cpsr"], regs["x19"], regs["x20"]) == (smp["secondary"], 2, 0x3C5, 0, 0)
    assert psci(vm, 0, PSCI_AFFINITY_INFO_64, 2, 0) == 0  # ON
    assert psci(vm, 0, PSCI_CPU_ON_64, 2, smp["secondary"], 2) == ALREADY_ON
    vmm.run_for(0.3)
    assert u64(vm, slot) > frozen


def test_cpu_off_of_the_only_vcpu_sleeps_until_a_kick(smp: Guest) -> None:
    vm = SimBackend(smp.image)
    vmm = Vmm(vm)
    try:
        vm.write_memory(SCRATCH + 4, HVC0.to_bytes(4, "little"))
        vm.set_regs({"pc": SCRATCH + 4, "x0": PSCI_CPU_OFF})
        vmm.resume()
        time.sleep(0.2)
        assert vmm.exits.empty()
        assert vmm.stop()[0].reason is ExitReason.INTERRUPTED
        assert vm.get_reg("pc") == SCRATCH + 8
    finally:
        vmm.stop()
        vm.close()


def test_system_off_powers_every_vcpu_off(booted: tuple[SimBackend, Vmm], smp: Guest) -> None:
    vm, vmm = booted
    vm.write_memory(SCRATCH + 4, HVC0.to_bytes(4, "little"))
    vm.set_regs({"pc": SCRATCH + 4, "x0": PSCI_SYSTEM_OFF}, 1)
    first, ex, others = vmm.all_stop()
    assert (first, ex.reason, ex.detail) == (1, ExitReason.SHUTDOWN, "PSCI SYSTEM_OFF")
    assert all(o.reason is ExitReason.INTERRUPTED for o in others.values())
    before = counters(vm, smp, N)
    vmm.resume([0, 2, 3])  # powered off, as KVM leaves them: their run() sleeps
    time.sleep(0.2)
    assert vmm.exits.empty()
    assert {j: o.reason for j, o in vmm.stop().items()} == dict.fromkeys((0, 2, 3), ExitReason.INTERRUPTED)
    assert counters(vm, smp, N) == before


def test_code_written_by_one_vcpu_runs_on_another_after_an_ic(booted: tuple[SimBackend, Vmm]) -> None:
    vm, vmm = booted
    loop, writer = SCRATCH + 0x100, SCRATCH + 0x200
    # vCPU 1 loops on `movz x5, #imm; b loop`; vCPU 0 rewrites the movz, then invalidates it (IC IVAU)
    vm.write_memory(loop, insns(movz_x5(1), 0x17FF_FFFF))
    vm.write_memory(writer, insns(0xB900_00E6, 0xD50B_7527))  # str w6, [x7]; ic ivau, x7
    vm.set_regs({"pc": loop}, 1)
    vmm.run_for(0.1, [1])
    assert vm.get_reg("x5", 1) == 1
    vm.set_regs({"pc": writer, "x6": movz_x5(2), "x7": loop}, 0)
    step(vm, 0)
    step(vm, 0)
    assert vm.read_memory(loop, 4) == insns(movz_x5(2))
    vmm.run_for(0.1, [1])
    assert vm.get_reg("x5", 1) == 2


def movz_x5(imm: int) -> int:
    return 0xD280_0005 | imm << 5


def insns(*words: int) -> bytes:
    return b"".join(w.to_bytes(4, "little") for w in words)


# ---- guest debug per vCPU -----------------------------------------------------------------------------


def test_breakpoint_on_every_vcpu_is_hit_by_each(booted: tuple[SimBackend, Vmm], smp: Guest) -> None:
    vm, vmm = booted
    work = smp["cpu_work"]
    hit: set[int] = set()
    for _ in range(4 * N):
        for k in range(N):
            if k in hit:
                vm.set_guest_debug(0, vcpu=k)
            else:
                vm.set_guest_debug(GUESTDBG_ENABLE | GUESTDBG_USE_HW, bp_regs(work), vcpu=k)
        first, ex, others = vmm.all_stop()
        assert (ex.reason, ex.ec) == (ExitReason.DEBUG, EC_BREAKPT_LOW) and first not in hit
        assert vm.get_reg("pc", first) == work
        hit.add(first)
        for k, other in others.items():  # held at the end of their turn: the kick stops them there
            assert other.reason is ExitReason.INTERRUPTED, (k, other)
        if hit == set(range(N)):
            break
    assert hit == set(range(N))


@pytest.mark.parametrize("k", range(N))
def test_watchpoint_on_every_vcpu_stops_only_its_writer(booted: tuple[SimBackend, Vmm], smp: Guest, k: int) -> None:
    vm, vmm = booted
    slot = smp["per_cpu"] + 64 * k
    for j in range(N):
        vm.set_guest_debug(GUESTDBG_ENABLE | GUESTDBG_USE_HW, wp_regs(slot), vcpu=j)
    first, ex, others = vmm.all_stop()
    assert (first, ex.reason, ex.ec, ex.far) == (k, ExitReason.DEBUG, EC_WATCHPT_LOW, slot)
    assert vm.get_reg("pc", k) == smp["cpu_work"] + 8  # the str, not done yet
    assert u64(vm, slot) == vm.get_reg("x0", k) - 1
    assert {j: o.reason for j, o in others.items()} == {j: ExitReason.INTERRUPTED for j in range(N) if j != k}


def test_guest_debug_of_one_vcpu_leaves_the_others_alone(booted: tuple[SimBackend, Vmm], smp: Guest) -> None:
    vm, vmm = booted
    work = smp["cpu_work"]
    vm.set_guest_debug(GUESTDBG_ENABLE | GUESTDBG_USE_HW, bp_regs(work), vcpu=1)
    # a watchpoint on vCPU 3's slot, set on vCPU 0 (which never writes it): vCPU 3 writes freely
    vm.set_guest_debug(GUESTDBG_ENABLE | GUESTDBG_USE_HW, wp_regs(smp["per_cpu"] + 64 * 3), vcpu=0)
    first, ex, others = vmm.all_stop()
    assert (first, ex.reason, ex.ec) == (1, ExitReason.DEBUG, EC_BREAKPT_LOW)
    assert all(o.reason is ExitReason.INTERRUPTED for o in others.values())
    before = counters(vm, smp, N)
    vmm.run_for(0.3, [0, 2, 3])  # vCPU 1 stays stopped at its breakpoint; the others run on without it
    after = counters(vm, smp, N)
    assert after[1] == before[1] and all(after[j] > before[j] for j in (0, 2, 3)), (before, after)
    assert vm.get_reg("pc", 1) == work
    pcs = [vm.get_reg("pc", j) for j in range(N)]
    step(vm, 2)  # single-step on vCPU 2 only
    assert [vm.get_reg("pc", j) for j in (0, 1, 3)] == [pcs[0], pcs[1], pcs[3]]
    assert vm.get_reg("pc", 2) != pcs[2]


def test_breakpoint_set_before_cpu_on_applies_when_the_vcpu_starts(smp: Guest) -> None:
    vm = SimBackend(smp.image, cpus=2)
    vmm = Vmm(vm)
    try:
        vm.set_guest_debug(GUESTDBG_ENABLE | GUESTDBG_USE_HW, bp_regs(smp["secondary"]), vcpu=1)
        first, ex, others = vmm.all_stop()
        assert (first, ex.reason, ex.ec) == (1, ExitReason.DEBUG, EC_BREAKPT_LOW)
        assert (vm.get_reg("pc", 1), vm.get_reg("x0", 1)) == (smp["secondary"], 1)
        assert others[0].reason is ExitReason.INTERRUPTED
    finally:
        vmm.stop()
        vm.close()


# ---- kick, scheduling -----------------------------------------------------------------------------------


def test_kick_of_one_vcpu(booted: tuple[SimBackend, Vmm], smp: Guest) -> None:
    vm, vmm = booted
    vmm.resume()
    time.sleep(0.1)
    vm.kick(2)
    k, ex = vmm.next_exit(timeout=5)
    assert (k, ex.reason) == (2, ExitReason.INTERRUPTED)
    time.sleep(0.1)  # the others go on without it (after a short wait for it to come back)
    before = counters(vm, smp, N)
    time.sleep(0.3)
    after = counters(vm, smp, N)
    assert after[2] == before[2] and all(after[j] > before[j] for j in (0, 1, 3)), (before, after)
    assert {j: o.reason for j, o in vmm.stop().items()} == dict.fromkeys((0, 1, 3), ExitReason.INTERRUPTED)


def _breakpoint_hits(smp: Guest, hits: int) -> tuple[list[int], int, list[dict[str, int]]]:
    """A fresh machine, a breakpoint on vCPU 3 at cpu_work, ``hits`` all-stop rounds each stepping vCPU 3 past
    it: the counters, the shared counter and every vCPU's registers at the end."""
    vm = SimBackend(smp.image, cpus=N)
    vmm = Vmm(vm)
    try:
        bp = bp_regs(smp["cpu_work"])
        vm.set_guest_debug(GUESTDBG_ENABLE | GUESTDBG_USE_HW, bp, vcpu=3)
        for _ in range(hits):
            first, ex, others = vmm.all_stop()
            assert (first, ex.reason, ex.ec) == (3, ExitReason.DEBUG, EC_BREAKPT_LOW)
            assert all(o.reason is ExitReason.INTERRUPTED for o in others.values())
            step(vm, 3)
            vm.set_guest_debug(GUESTDBG_ENABLE | GUESTDBG_USE_HW, bp, vcpu=3)
        return counters(vm, smp, N), u64(vm, smp["shared"]), [vm.get_regs(k) for k in range(N)]
    finally:
        vmm.stop()
        vm.close()


def test_round_robin_is_deterministic(smp: Guest) -> None:
    """The same resumes and kicks give the same machine state: vCPUs run by turns of a fixed number of
    instructions in index order, and the kicked ones stop at the end of a turn, whenever the kick lands."""
    first = _breakpoint_hits(smp, 6)
    again = _breakpoint_hits(smp, 6)
    assert first == again
    per_cpu, shared, regs = first
    assert all(c > 0 for c in per_cpu[:3]) and per_cpu[3] == 5  # stepped into its 6th iteration
    assert regs[3]["pc"] == smp["cpu_work"] + 4
