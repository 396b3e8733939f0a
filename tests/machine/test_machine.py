"""Several vCPUs as gdb threads (issue 10), at the session level: gdb's packets in, replies out, on the
simulated core with guests/smp.S (CPU 0 starts the others with PSCI CPU_ON; each counts in its own slot).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from backends.api import Capabilities, Exit, ExitReason
from backends.elf import load_image
from backends.sim import SimBackend
from gdbstub import aarch64
from gdbstub.machine import Machine
from gdbstub.rsp import Connection
from gdbstub.session import Resume, Session
from gdbstub.target import GDB_SIGINT, StopKind
from tests.sim.conftest import read_symbols

N = 4


class Rig:
    def __init__(self, path: Path, cpus: int = N) -> None:
        self.sym = read_symbols(path)
        self.backend = SimBackend(load_image(path), cpus=cpus)
        self.machine = Machine(self.backend)
        self.session = Session(self.machine, Connection())

    def ask(self, packet: bytes) -> bytes:
        reply = self.session.handle(packet)
        assert isinstance(reply, bytes), f"{packet!r} -> {reply!r}"
        return reply

    def go(self, packet: bytes) -> bytes:
        """A resuming packet: run it as the server would, and return the stop reply."""
        reply = self.session.handle(packet)
        assert isinstance(reply, Resume), f"{packet!r} -> {reply!r}"
        self.machine.begin_resume()
        return self.session.stop_reply(self.machine.resume(reply.step))

    def pc(self, thread: int) -> int:
        assert self.ask(b"Hg%x" % thread) == b"OK"
        return int.from_bytes(bytes.fromhex(self.ask(b"p20").decode()), "little")

    def u64(self, addr: int) -> int:
        return int.from_bytes(bytes.fromhex(self.ask(b"m%x,8" % addr).decode()), "little")

    def booted(self) -> None:
        """Run until every vCPU counts (a breakpoint at cpu_work hit by each), then clear it."""
        assert self.ask(b"Z1,%x,4" % self.sym["cpu_work"]) == b"OK"
        seen: set[int] = set()
        for _ in range(4 * N):
            seen.add(thread_of(self.go(b"vCont;c")))
            if len(seen) == N:
                break
        assert seen == set(range(1, N + 1))
        assert self.ask(b"z1,%x,4" % self.sym["cpu_work"]) == b"OK"


def thread_of(stop: bytes) -> int:
    m = re.search(rb"thread:([0-9a-f]+);core:([0-9a-f]+);", stop)
    assert m is not None, stop
    assert int(m.group(2), 16) == int(m.group(1), 16) - 1  # core = vCPU index
    return int(m.group(1), 16)


@pytest.fixture
def rig(guest_elf: Callable[[str], Path]) -> Iterator[Rig]:
    r = Rig(guest_elf("smp"))
    yield r
    r.backend.close()


def test_every_vcpu_is_a_thread(rig: Rig) -> None:
    assert rig.ask(b"qfThreadInfo") == b"m1,2,3,4"
    assert rig.ask(b"qsThreadInfo") == b"l"
    assert b"qXfer:threads:read+" in rig.ask(b"qSupported:swbreak+;hwbreak+")
    xml = rig.ask(b"qXfer:threads:read::0,fff")
    assert xml.startswith(b"l<?xml") and xml.count(b"<thread ") == N
    assert b'<thread id="3" core="2" name="CPU#2"/>' in xml
    assert bytes.fromhex(rig.ask(b"qThreadExtraInfo,2").decode()) == b"CPU#1"
    assert [rig.ask(b"T%x" % t) for t in (1, 4)] == [b"OK", b"OK"]
    assert rig.ask(b"T5").startswith(b"E")
    assert rig.ask(b"Hg5").startswith(b"E")
    assert rig.ask(b"Hg3") == b"OK" and rig.ask(b"qC") == b"QC3"


def test_registers_are_the_selected_threads(rig: Rig) -> None:
    rig.booted()
    pcs = {t: rig.pc(t) for t in range(1, N + 1)}
    assert all(rig.sym["cpu_work"] <= pc < rig.sym["cpu_work"] + 28 for pc in pcs.values()), pcs
    assert rig.ask(b"Hg2") == b"OK"
    x19 = int.from_bytes(bytes.fromhex(rig.ask(b"p13").decode()), "little")  # x19 = the CPU's index
    assert x19 == 1


def test_a_breakpoint_hit_by_two_vcpus_reports_one_then_the_other(rig: Rig) -> None:
    """All vCPUs sit on cpu_work's loop; a breakpoint there is reached by several in one round: the first
    is reported at once, a racing one by the next continue without running anything."""
    rig.booted()
    assert rig.ask(b"Z1,%x,4" % rig.sym["cpu_work"]) == b"OK"
    first = thread_of(rig.go(b"vCont;c"))
    counters = [rig.u64(rig.sym["per_cpu"] + 64 * k) for k in range(N)]
    if rig.machine.pending:  # the racing stop: reported now, and nothing ran meanwhile
        second = thread_of(rig.go(b"vCont;c"))
        assert second != first
        assert [rig.u64(rig.sym["per_cpu"] + 64 * k) for k in range(N)] == counters
    seen = {first}
    for _ in range(6 * N):  # every vCPU hits it in time
        seen.add(thread_of(rig.go(b"vCont;c")))
    assert seen == set(range(1, N + 1))


@pytest.mark.parametrize("k", [0, 2, 3])
def test_a_watchpoint_on_one_vcpus_data_stops_in_its_thread(rig: Rig, k: int) -> None:
    addr = rig.sym["per_cpu"] + 64 * k
    assert rig.ask(b"Z2,%x,8" % addr) == b"OK"
    for _ in range(3):
        stop = rig.go(b"vCont;c")
        assert stop.startswith(b"T05watch:%x;" % addr), stop
        assert thread_of(stop) == k + 1
        assert rig.ask(b"qC") == b"QC%x" % (k + 1)  # gdb's current thread follows the stop


def test_scheduler_locking_step_moves_only_that_vcpu(rig: Rig) -> None:
    rig.booted()
    before = {t: rig.pc(t) for t in range(1, N + 1)}
    stop = rig.go(b"vCont;s:3")
    assert thread_of(stop) == 3
    after = {t: rig.pc(t) for t in range(1, N + 1)}
    assert after[3] != before[3]
    assert {t: after[t] for t in (1, 2, 4)} == {t: before[t] for t in (1, 2, 4)}


def test_step_one_while_the_others_continue(rig: Rig) -> None:
    rig.booted()
    stop = rig.go(b"vCont;s:2;c")
    assert stop.startswith(b"T05") and thread_of(stop) == 2


def test_ctrl_c_stops_every_vcpu(rig: Rig) -> None:
    rig.booted()
    reply = rig.session.handle(b"vCont;c")
    assert isinstance(reply, Resume)
    rig.machine.begin_resume()
    threading.Timer(0.2, rig.machine.interrupt).start()
    stop = rig.machine.resume(False)
    assert (stop.signal, stop.kind) == (GDB_SIGINT, StopKind.SIGNAL)
    assert not rig.machine.pending  # the others' stops were the all-stop kick, not news
    counters = [rig.u64(rig.sym["per_cpu"] + 64 * k) for k in range(N)]
    assert all(counters)
    assert counters == [rig.u64(rig.sym["per_cpu"] + 64 * k) for k in range(N)]  # all stopped


def test_one_vcpu_machine_is_a_single_thread(guest_elf: Callable[[str], Path]) -> None:
    r = Rig(guest_elf("smp"), cpus=1)
    try:
        assert r.ask(b"qfThreadInfo") == b"m1"
        stop = r.go(b"vCont;s:1")
        assert thread_of(stop) == 1
    finally:
        r.backend.close()


class RacingBackend:
    """Two vCPUs that both hit the breakpoint at BP in the same round, as on real KVM with vCPUs in parallel."""

    BP = 0x4000_0100

    def __init__(self) -> None:
        self.pcs = [self.BP - 8, self.BP - 4]
        self.runs = [0, 0]
        self.kicked = [threading.Event(), threading.Event()]

    def capabilities(self) -> Capabilities:
        return Capabilities(arch="aarch64", hw_breakpoints=6, hw_watchpoints=4, vcpus=2)

    def read_memory(self, addr: int, size: int) -> bytes:
        return bytes(size)

    def translate(self, addr: int, vcpu: int = 0) -> int:
        return addr

    def write_memory(self, addr: int, data: bytes) -> None:
        pass

    def get_regs(self, vcpu: int = 0) -> dict[str, int]:
        regs = dict.fromkeys((r.name for r in aarch64.REGISTERS), 0)
        regs.update(pc=self.pcs[vcpu], cpsr=0x3C5)
        return regs

    def get_reg(self, name: str, vcpu: int = 0) -> int:
        return self.get_regs(vcpu).get(name, 0)

    def set_regs(self, regs: dict[str, int], vcpu: int = 0) -> None:
        pass

    def set_guest_debug(self, control: int, regs: object = None, vcpu: int = 0) -> None:
        pass

    def run(self, vcpu: int = 0) -> Exit:
        self.runs[vcpu] += 1
        if self.pcs[vcpu] != self.BP:
            self.pcs[vcpu] = self.BP
            return Exit(ExitReason.DEBUG, esr=0xC200_0022)  # the hardware breakpoint, at once on both
        if not self.kicked[vcpu].wait(2):  # ran again instead of reporting the racing stop: a visible failure
            return Exit(ExitReason.FAULT, signal=11, detail="ran on: nobody kicked this vCPU")
        self.kicked[vcpu].clear()
        return Exit(ExitReason.INTERRUPTED)

    def kick(self, vcpu: int = 0) -> None:
        self.kicked[vcpu].set()

    def close(self) -> None:
        pass


def test_racing_stops_are_reported_one_now_the_other_later() -> None:
    backend = RacingBackend()
    machine = Machine(backend)  # type: ignore[arg-type]
    session = Session(machine, Connection())
    session.handle(b"qSupported:swbreak+;hwbreak+")
    assert session.handle(b"Z1,%x,4" % RacingBackend.BP) == b"OK"
    stops = []
    for _ in range(2):
        reply = session.handle(b"vCont;c")
        assert isinstance(reply, Resume)
        machine.begin_resume()
        stops.append(session.stop_reply(machine.resume(False)))
    assert [s.startswith(b"T05hwbreak:;") for s in stops] == [True, True]
    assert sorted(thread_of(s) for s in stops) == [1, 2]
    assert backend.runs == [1, 1]  # the second stop was reported without running anything
