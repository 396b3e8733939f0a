"""What only the arm64 KVM backend has (the scenarios every backend shares are in tests/scenarios).

Runs only on an aarch64 host with /dev/kvm (marker ``kvm_arm64``); on x86-64 it runs inside the emulated
arm64 host: ``scripts/arm64-host pytest -m kvm_arm64 tests/kvm`` (``scripts/test`` runs it).  Imports
nothing that needs unicorn (a real arm64 host need not have it).
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from backends.api import GUESTDBG_ENABLE, GUESTDBG_USE_SW_BP, ExitReason
from backends.elf import ImageError
from backends.kvm.arm64 import KvmArm64Backend
from tests.conftest import ROOT
from tests.scenarios.conftest import Guest, watchdog  # noqa: F401 (the watchdog fixture, reused)
from tests.scenarios.test_userspace_debug import ESR_DONE, HW, SENTINEL, STEP, at, debug_regs, summary

ON_ARM64_KVM = platform.machine().lower() in ("aarch64", "arm64") and os.path.exists("/dev/kvm")
pytestmark = [
    pytest.mark.kvm_arm64,
    pytest.mark.skipif(not ON_ARM64_KVM, reason="needs an aarch64 host with /dev/kvm (see the module docstring)"),
]


@pytest.fixture(scope="module")
def g(guest_elf: Callable[[str], Path]) -> Guest:
    return Guest(guest_elf("debug_unit"))


@pytest.fixture
def console() -> list[bytes]:
    return []


@pytest.fixture
def vm(g: Guest, console: list[bytes]) -> Iterator[KvmArm64Backend]:
    backend = KvmArm64Backend(g.image, console=console.append)
    yield backend
    backend.close()


# ---- what only the KVM backend has ---------------------------------------------------------------


def test_refuses_a_non_aarch64_elf() -> None:
    x86 = ROOT / "guests" / "build" / "x86" / "demo.elf"
    if not x86.exists():
        pytest.skip(f"{x86} not built")
    with pytest.raises(ImageError, match="not aarch64"):
        KvmArm64Backend(x86)


def test_inserted_brk_runs_in_a_fresh_vm(g: Guest) -> None:
    """A debugger's software breakpoint (write_memory of a BRK) is what the vCPU executes, also in a VM
    created after another one freed the pages (the stale-code pitfall of the emulated host)."""
    for imm in (0x77, 0x78):
        with KvmArm64Backend(g.image) as vm:
            x = g["case_nop_bp"]
            vm.set_guest_debug(GUESTDBG_ENABLE | GUESTDBG_USE_SW_BP)
            at(vm, x)
            assert summary(vm, vm.run()) == (ExitReason.DEBUG, ESR_DONE, x + 4)
            vm.write_memory(x, (0xD420_0000 | imm << 5).to_bytes(4, "little"))
            at(vm, x)
            assert summary(vm, vm.run()) == (ExitReason.DEBUG, 0xF200_0000 | imm, x)


def test_c11_emulated_host_counts(vm: KvmArm64Backend) -> None:
    """The emulated arm64 host (QEMU -cpu max) has 6 breakpoints and 4 watchpoints."""
    caps = vm.capabilities()
    if os.environ.get("A64_EXPECT_CAPS", "6/4") != f"{caps.hw_breakpoints}/{caps.hw_watchpoints}":
        pytest.skip(f"not the emulated host's counts: {caps.hw_breakpoints}/{caps.hw_watchpoints}")
    assert (caps.hw_breakpoints, caps.hw_watchpoints) == (6, 4)


def test_round_trip_timings(vm: KvmArm64Backend, g: Guest) -> None:
    """Not a check: prints how long a breakpoint re-hit and a single step take from Python (run with -s)."""
    x = g["case_nop_bp"]
    vm.set_guest_debug(HW, debug_regs(bps=(x,)))
    at(vm, x)
    n = 200
    t0 = time.perf_counter()
    for _ in range(n):
        vm.run()
    bp = (time.perf_counter() - t0) / n
    vm.set_guest_debug(GUESTDBG_ENABLE | STEP, debug_regs())
    t0 = time.perf_counter()
    for _ in range(n):
        at(vm, x)
        vm.run()
    step = (time.perf_counter() - t0) / n
    t0 = time.perf_counter()
    for _ in range(20):
        vm.get_regs()
    regs = (time.perf_counter() - t0) / 20
    print(
        f"\nround trips: bp re-hit {1e6 * bp:.0f} us, set pc + step {1e6 * step:.0f} us, get_regs {1e6 * regs:.0f} us"
    )


def test_other_mmio_reads_zero(vm: KvmArm64Backend, g: Guest) -> None:
    """This VMM's policy for MMIO outside the UART: reads 0, writes ignored (the sim stops with SIGSEGV)."""
    vm.set_guest_debug(GUESTDBG_ENABLE)
    at(vm, g["case_ldr"], x0=0x0A00_0000, x1=SENTINEL)
    assert summary(vm, vm.run()) == (ExitReason.DEBUG, ESR_DONE, g["case_ldr"] + 4)
    assert vm.get_reg("x1") == 0
