"""Running several vCPUs at the backends.api level, as a debugger's all-stop loop does: one thread per vCPU
in run(k), the first exit kicks the others (tests/kvm/test_arm64_smp.py, tests/kvm/test_x86_smp.py).

Imports only the standard library and backends.api: the arm64 tests run where neither unicorn nor
hypothesis is installed.
"""

from __future__ import annotations

import queue
import struct
import threading
import time
from collections.abc import Callable, Iterable

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
