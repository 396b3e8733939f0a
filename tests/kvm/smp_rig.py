"""Running several vCPUs at the backends.api level, as a debugger's all-stop loop does: one thread per vCPU
in run(k), the first exit kicks the others (tests/kvm/test_arm64_smp.py, tests/kvm/test_x86_smp.py).

Imports only the standard library, pytest and backends.api: the arm64 tests run where neither unicorn nor
hypothesis is installed.
"""

from __future__ import annotations

import queue
import struct
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from backends.api import Backend, Exit

JOIN_TIMEOUT = 20.0  # generous: the emulated arm64 host time-shares one CPU between every vCPU thread


class Fleet:
    """One thread per vCPU, each in one vm.run(k).  ``exits`` fills in as they return; ``order`` is the order
    in which they did.  stop() kicks the vCPUs still running and joins every thread."""

    def __init__(self, vm: Backend, vcpus: Iterable[int]) -> None:
        self.vm = vm
        self.vcpus = list(vcpus)
        self.exits: dict[int, Exit] = {}
        self.order: list[int] = []
        self.errors: list[tuple[int, BaseException]] = []
        self._returned: queue.Queue[int] = queue.Queue()
        self._lock = threading.Lock()
        self.threads = {
            k: threading.Thread(target=self._run, args=(k,), name=f"vcpu{k}", daemon=True) for k in self.vcpus
        }

    def _run(self, k: int) -> None:
        try:
            ex = self.vm.run(k)
        except BaseException as e:  # reported by stop()
            with self._lock:
                self.errors.append((k, e))
        else:
            with self._lock:
                self.exits[k] = ex
                self.order.append(k)
        self._returned.put(k)

    def start(self) -> Fleet:
        for t in self.threads.values():
            t.start()
        return self

    def running(self, k: int) -> bool:
        return self.threads[k].is_alive()

    def first(self, timeout: float = JOIN_TIMEOUT) -> int:
        """The vCPU whose run() returned first (waits for it)."""
        try:
            return self._returned.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no vCPU of {self.vcpus} stopped within {timeout} s") from None

    def wait(self, k: int, timeout: float = JOIN_TIMEOUT) -> Exit:
        """vCPU k's exit, once its run() returned."""
        self.threads[k].join(timeout)
        assert not self.threads[k].is_alive(), f"vCPU {k}'s run() did not return within {timeout} s"
        self._raise()
        return self.exits[k]

    def stop(self, timeout: float = JOIN_TIMEOUT) -> dict[int, Exit]:
        """Kick every vCPU still in run() (all-stop), join them all, return every exit."""
        for k in self.vcpus:
            if self.threads[k].is_alive():
                self.vm.kick(k)
        deadline = time.monotonic() + timeout
        for k, t in self.threads.items():
            t.join(max(0.0, deadline - time.monotonic()))
            assert not t.is_alive(), f"vCPU {k}'s run() did not return within {timeout} s of the kick"
        self._raise()
        return dict(self.exits)

    def _raise(self) -> None:
        if self.errors:
            k, e = self.errors[0]
            raise AssertionError(f"vCPU {k}'s run() raised {e!r}") from e


def u64(vm: Backend, addr: int) -> int:
    value: int = struct.unpack("<Q", vm.read_memory(addr, 8))[0]
    return value


def wait_until(condition: Callable[[], bool], what: str, timeout: float = JOIN_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting until {what}")
        time.sleep(0.01)


def counters(vm: Backend, per_cpu: int, n: int) -> list[int]:
    return [u64(vm, per_cpu + 64 * k) for k in range(n)]


class Lab:
    """The VMs and Fleets one test made: close() stops every Fleet still running (after a failure some
    vCPUs may be), then closes every VM."""

    def __init__(self, open_vm: Callable[[int], Backend]) -> None:
        self._open = open_vm
        self.vms: list[Backend] = []
        self.fleets: list[Fleet] = []

    def vm(self, cpus: int) -> Any:
        """A new VM with that many vCPUs (typed Any: each test module knows its backend class)."""
        vm = self._open(cpus)
        self.vms.append(vm)
        return vm

    def start(self, vm: Backend, vcpus: Iterable[int]) -> Fleet:
        """A Fleet running those vCPUs (stopped at close() if the test did not)."""
        fleet = Fleet(vm, vcpus)
        self.fleets.append(fleet)
        return fleet.start()

    def close(self) -> None:
        for f in self.fleets:
            try:
                f.stop()
            except AssertionError:
                pass
        for vm in self.vms:
            vm.close()


def all_started(vm: Backend, sym: dict[str, int], n: int) -> bool:
    """guests/smp.S (both arches) flags `started + 8*k` once vCPU k reached its loop."""
    return all(u64(vm, sym["started"] + 8 * k) == 1 for k in range(n))


def lab_fixtures() -> tuple[Any, Any]:
    """The `make_vm(cpus)` and `start(vm, vcpus)` fixtures of an SMP test module, over its `lab` fixture:
    ``make_vm, start = lab_fixtures()``."""
    import pytest

    @pytest.fixture
    def make_vm(lab: Lab) -> Callable[[int], Any]:
        return lab.vm

    @pytest.fixture
    def start(lab: Lab) -> Callable[..., Fleet]:
        return lab.start

    return make_vm, start
