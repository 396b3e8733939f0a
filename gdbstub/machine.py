"""Several vCPUs as gdb threads, in all-stop mode: one Target per vCPU, gdb's points shared by all.

Machine is what the session and the server use instead of a Target when the backend has more than one
vCPU; it has a Target's interface.  gdb's thread id N is vCPU N - 1.  Registers are those of the selected
thread (Hg); memory, breakpoints and watchpoints belong to the machine: every vCPU gets the same debug
registers (KVM_SET_GUEST_DEBUG is per vCPU, a VMM applies the set to each), also a vCPU the guest has
not started yet.

resume() runs the vCPUs the plan names (by default all), each on a thread of its own as a VMM runs
vCPUs.  When one stops, the machine kicks the others and waits for them (all-stop) before the stop is
reported.  A second genuine stop that raced the first (two vCPUs on one breakpoint) is kept and
reported by the next resume without running anything: "one now, the other later".
"""

from __future__ import annotations

import dataclasses
import queue
import threading

from backends.api import Backend
from gdbstub.target import GDB_SIGINT, StopEvent, StopKind, Target


class Machine(Target):
    def __init__(self, backend: Backend) -> None:
        super().__init__(backend, 0)
        self.cpus = [Target(backend, k) for k in range(self.caps.vcpus)]
        for cpu in self.cpus:  # one set of gdb points for the whole machine
            cpu.slots = self.slots
            cpu.sw_breakpoints = self.sw_breakpoints
            cpu.sw_phys = self.sw_phys
        self.pending: list[StopEvent] = []  # stops that raced the reported one, oldest first
        self._plan: tuple[frozenset[int] | None, int | None] = (None, None)  # (vCPUs to run, vCPU to step)

    # ---- threads -----------------------------------------------------------------------------
    @property
    def vcpus(self) -> int:
        return len(self.cpus)

    @property
    def vcpu(self) -> int:
        return self._vcpu

    @vcpu.setter
    def vcpu(self, value: int) -> None:
        self._vcpu = value  # registers are read through self.cpus[value]: nothing cached here

    def plan_resume(self, run: frozenset[int] | None, step: int | None) -> None:
        """What the next resume() does (vCont's per-thread actions): run only these vCPUs (None: all),
        and step this one (None: the Hc thread, or the selected one)."""
        self._plan = (run, step)

    # ---- registers: the selected vCPU's ---------------------------------------------------------
    @property
    def regs_version(self) -> int:
        cpu = self.cpus[self._vcpu]
        return cpu.regs_version * 16 + self._vcpu  # distinct per vCPU (at most 16)

    @regs_version.setter
    def regs_version(self, value: int) -> None:
        pass  # Target.__init__ sets it; the machine's is derived

    def read_register(self, name: str) -> int:
        return self.cpus[self._vcpu].read_register(name)

    def read_registers(self) -> dict[str, int]:
        return self.cpus[self._vcpu].read_registers()

    def write_registers(self, values: dict[str, int]) -> None:
        self.cpus[self._vcpu].write_registers(values)

    @property
    def last_run_slots(self) -> list[str]:
        return self.cpus[0].last_run_slots  # every vCPU pushes the same slots

    @last_run_slots.setter
    def last_run_slots(self, value: list[str]) -> None:
        pass  # each vCPU's Target records the slots it pushed

    # ---- run control -------------------------------------------------------------------------
    def clear_debugger_state(self) -> None:
        for addr in list(self.sw_breakpoints):
            self.remove_sw_breakpoint(addr, 4)
        self.slots.clear()
        for cpu in self.cpus:
            cpu._push(0)
        self.pending.clear()
        self.lower_irq_lines()

    def begin_resume(self) -> None:
        for cpu in self.cpus:
            cpu.begin_resume()

    def interrupt(self) -> None:
        for cpu in self.cpus:
            cpu.interrupt()

    def resume(self, step: bool) -> StopEvent:
        run, step_vcpu = self._plan
        self._plan = (None, None)
        if self.exited:
            return self.last_stop
        if step_vcpu is None:
            step_vcpu = self.cont_vcpu if self.cont_vcpu is not None else self._vcpu
        vcpus = sorted(run) if run is not None else list(range(self.vcpus))
        if step and vcpus == [step_vcpu]:  # scheduler-locking step (or gdb's step over a breakpoint): only
            # this vCPU moves, and only its step may be reported (gdb asserts that it is)
            return self._report(self._tag(step_vcpu, self.cpus[step_vcpu].resume(True)))
        pending = self._take_pending(vcpus)
        if pending is not None:  # a stop that raced an earlier one: reported now, nothing runs
            return self._report(pending)
        done: queue.Queue[tuple[int, StopEvent]] = queue.Queue()
        for k in vcpus:
            self.cpus[k].begin_resume()
        workers = [
            threading.Thread(
                target=lambda k=k: done.put((k, self.cpus[k].resume(step and k == step_vcpu))),
                name=f"vcpu{k}",
                daemon=True,
            )
            for k in vcpus
        ]
        for w in workers:
            w.start()
        first_vcpu, first = done.get()
        for k in vcpus:
            if k != first_vcpu:
                self.cpus[k].interrupt()  # all-stop: the others stop before the reply is sent
        for _ in range(len(vcpus) - 1):
            k, stop = done.get()
            if stop.signal != GDB_SIGINT or stop.kind is not StopKind.SIGNAL:
                self.pending.append(self._tag(k, stop))  # a genuine stop of its own: reported next
        for w in workers:
            w.join()
        return self._report(self._tag(first_vcpu, first))

    def _take_pending(self, vcpus: list[int]) -> StopEvent | None:
        """The oldest kept stop of a vCPU this resume runs that still means something: a breakpoint stop
        whose breakpoint gdb has since deleted, or a watch stop whose watchpoint is gone, is dropped (the
        vCPU simply runs on, as if it had been a moment slower)."""
        for stop in list(self.pending):
            if stop.vcpu not in vcpus:
                continue
            self.pending.remove(stop)
            if self._still_meant(stop):
                return stop
        return None

    def _still_meant(self, stop: StopEvent) -> bool:
        if stop.kind in (StopKind.HWBREAK, StopKind.SWBREAK):
            pc = self.cpus[stop.vcpu].read_register(self.arch.PC)
            return pc in self.sw_breakpoints or self.slots.breakpoint_at(pc) is not None
        if stop.kind in (StopKind.WATCH, StopKind.RWATCH, StopKind.AWATCH):
            return any(p.kind.is_watch and p.addr == stop.addr for p in self.slots.points())
        return True

    @staticmethod
    def _tag(vcpu: int, stop: StopEvent) -> StopEvent:
        return dataclasses.replace(stop, vcpu=vcpu)

    def _report(self, stop: StopEvent) -> StopEvent:
        self._vcpu = stop.vcpu  # gdb's current thread becomes the one that stopped
        if stop.kind is StopKind.EXITED:
            self.exited = True
            self.pending.clear()
        self.last_stop = stop
        return stop
