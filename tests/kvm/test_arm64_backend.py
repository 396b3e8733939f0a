"""The arm64 KVM backend on a real aarch64 /dev/kvm (kvm-hw-debug.md section 7.C), through backends.api only.

Runs only on an aarch64 host with /dev/kvm (marker ``kvm_arm64``); on x86-64 it runs inside the emulated
arm64 host: ``/work/shared/reference/arm64-kvm-host/run.sh pytest $PWD -- tests/kvm/test_arm64_backend.py``.
Imports nothing that needs unicorn (the emulated host has no unicorn).

Every test points PC at one case of guests/debug_unit.S (as tests/sim/test_debug_unit.py does), sets the
registers that case uses, and runs or steps.  A case that no breakpoint or watchpoint stops ends at its
``brk #0xd0d`` (ESR_DONE) with PC = case + 4.
"""

from __future__ import annotations

import faulthandler
import os
import platform
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from backends.api import (
    GUESTDBG_ENABLE,
    GUESTDBG_SINGLESTEP,
    GUESTDBG_USE_HW,
    GUESTDBG_USE_SW_BP,
    GUESTDBG_VALID_MASK,
    BackendError,
    DebugRegs,
    Exit,
    ExitReason,
)
from backends.elf import ImageError, load_image
from backends.kvm.arm64 import KvmArm64Backend
from tests.conftest import ROOT
from tests.kvm.conftest import elf_symbols

ON_ARM64_KVM = platform.machine().lower() in ("aarch64", "arm64") and os.path.exists("/dev/kvm")
pytestmark = [
    pytest.mark.kvm_arm64,
    pytest.mark.skipif(not ON_ARM64_KVM, reason="needs an aarch64 host with /dev/kvm (see the module docstring)"),
]

HW = GUESTDBG_ENABLE | GUESTDBG_USE_HW
STEP = GUESTDBG_SINGLESTEP

ESR_BREAKPOINT = 0xC200_0022
ESR_STEP = 0xCB00_0022
ESR_WATCH_WRITE = 0xD200_0062
ESR_WATCH_READ = 0xD200_0022
ESR_DONE = 0xF200_0D0D
BCR = 0x1E7
LOAD, STORE, BOTH = 0b01, 0b10, 0b11
CPSR_EL1 = 0x3C5
CPSR_EL0 = 0x3C0
UART = 0x0900_0000
PSCI_SYSTEM_OFF = 0x8400_0008

OLD = 0xA5A5_A5A5_A5A5_A5A5
NEW = 0x1122_3344_5566_7788
SENTINEL = 0x5EE5_5EE5_5EE5_5EE5


class Guest:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.image = load_image(path)
        self.symbols = elf_symbols(path)

    def __getitem__(self, name: str) -> int:
        return self.symbols[name]


@pytest.fixture(scope="module")
def g(guest_elf: Callable[[str], Path]) -> Guest:
    return Guest(guest_elf("debug_unit"))


@pytest.fixture(autouse=True)
def watchdog() -> Iterator[None]:
    """A guest that never exits blocks KVM_RUN forever: dump every thread's stack and end the process."""
    faulthandler.dump_traceback_later(60, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture
def console() -> list[bytes]:
    return []


@pytest.fixture
def vm(g: Guest, console: list[bytes]) -> Iterator[KvmArm64Backend]:
    backend = KvmArm64Backend(g.image, console=console.append)
    yield backend
    backend.close()


def wcr(lsc: int, bas: int = 0xFF, pac: int = 0b11) -> int:
    return 1 | pac << 1 | lsc << 3 | bas << 5


def debug_regs(bps: tuple[int, ...] = (), wps: tuple[tuple[int, int], ...] = ()) -> DebugRegs:
    regs = DebugRegs()
    for i, addr in enumerate(bps):
        regs.bcr[i], regs.bvr[i] = BCR, addr
    for i, (addr, ctrl) in enumerate(wps):
        regs.wvr[i], regs.wcr[i] = addr, ctrl
    return regs


def u64(value: int) -> bytes:
    return value.to_bytes(8, "little")


def fill(vm: KvmArm64Backend, addr: int, size: int, value: int = OLD) -> None:
    vm.write_memory(addr, (u64(value) * (size // 8 + 1))[:size])


def at(vm: KvmArm64Backend, pc: int, **regs: int) -> None:
    vm.set_regs({"pc": pc, **regs})


def summary(vm: KvmArm64Backend, ex: Exit) -> tuple[ExitReason, int, int]:
    return ex.reason, ex.esr, vm.get_reg("pc")


# ---- set-up, registers, memory ------------------------------------------------------------------------


def test_refuses_a_non_aarch64_elf() -> None:
    x86 = ROOT / "guests" / "build" / "x86" / "demo.elf"
    if not x86.exists():
        pytest.skip(f"{x86} not built")
    with pytest.raises(ImageError, match="not aarch64"):
        KvmArm64Backend(x86)


def test_reset_state(vm: KvmArm64Backend, g: Guest) -> None:
    regs = vm.get_regs()
    assert regs["pc"] == g.image.entry == g["_start"]
    assert regs["cpsr"] == CPSR_EL1
    assert len(regs) == 31 + 3 + 32 + 2


def test_register_round_trip(vm: KvmArm64Backend) -> None:
    values = {f"x{i}": 0x1111_0000_0000_0000 + i for i in range(31)}
    values.update({f"v{i}": (i + 1) << 120 | 0xABCD << 64 | i for i in range(32)})
    values.update({"fpsr": 0x0800_0010, "fpcr": 0x0040_0000, "pc": 0x4000_1000})
    vm.set_regs(values)
    got = vm.get_regs()
    assert {k: got[k] for k in values} == values
    with pytest.raises(BackendError):
        vm.set_regs({"x99": 1})
    with pytest.raises(BackendError):
        vm.set_regs({"fpsr": 1 << 32})


def test_sp_follows_the_mode(vm: KvmArm64Backend) -> None:
    vm.set_regs({"cpsr": CPSR_EL1, "sp": 0x4000_8000})
    vm.set_regs({"cpsr": CPSR_EL0, "sp": 0x4000_4000})
    assert vm.get_reg("sp") == 0x4000_4000  # SP_EL0
    vm.set_regs({"cpsr": CPSR_EL1})
    assert vm.get_reg("sp") == 0x4000_8000  # SP_EL1 kept its value
    assert vm.get_regs()["sp"] == 0x4000_8000


def test_memory_bounds(vm: KvmArm64Backend, g: Guest) -> None:
    vm.write_memory(g["u64_var"] + 1, b"\x01\x02\x03\x04\x05\x06\x07")  # unaligned edges
    assert vm.read_memory(g["u64_var"], 9) == b"\xa5\x01\x02\x03\x04\x05\x06\x07\xa5"
    with pytest.raises(BackendError):
        vm.read_memory(0x3FFF_FFFC, 8)
    with pytest.raises(BackendError):
        vm.read_memory(0x4000_0000 + (128 << 20) - 4, 8)


# ---- C1/C2: hardware breakpoints ----------------------------------------------------------------------


@pytest.mark.parametrize("slot", [0, 3, 5])
@pytest.mark.parametrize("cpsr", [CPSR_EL1, CPSR_EL1 & ~0x200], ids=["D=1", "D=0"])
def test_c1_c2_breakpoint_before_the_instruction(vm: KvmArm64Backend, g: Guest, slot: int, cpsr: int) -> None:
    x, a = g["case_str"], g["u64_var"]
    fill(vm, a, 8)
    regs = DebugRegs()
    regs.bcr[slot], regs.bvr[slot] = BCR, x
    vm.set_guest_debug(HW, regs)
    at(vm, x, x0=a, x1=NEW, cpsr=cpsr)
    for _ in range(3):
        ex = vm.run()
        assert summary(vm, ex) == (ExitReason.DEBUG, ESR_BREAKPOINT, x)
        assert ex.ec == 0x30 and ex.esr >> 32 == 0
        assert vm.read_memory(a, 8) == u64(OLD)
        assert (vm.get_reg("x0"), vm.get_reg("x1")) == (a, NEW)


def test_breakpoint_on_later_instruction(vm: KvmArm64Backend, g: Guest) -> None:
    a, done = g["u64_var"], g["case_str"] + 4
    fill(vm, a, 8)
    vm.set_guest_debug(HW, debug_regs(bps=(done,)))
    at(vm, g["case_str"], x0=a, x1=NEW)
    assert summary(vm, vm.run()) == (ExitReason.DEBUG, ESR_BREAKPOINT, done)
    assert vm.read_memory(a, 8) == u64(NEW)


# ---- C3: single step ----------------------------------------------------------------------------------


def test_c3_step_at_an_enabled_breakpoint_makes_no_progress(vm: KvmArm64Backend, g: Guest) -> None:
    x, a = g["case_str"], g["u64_var"]
    fill(vm, a, 8)
    vm.set_guest_debug(HW, debug_regs(bps=(x,)))
    at(vm, x, x0=a, x1=NEW)
    assert summary(vm, vm.run()) == (ExitReason.DEBUG, ESR_BREAKPOINT, x)
    vm.set_guest_debug(HW | STEP, debug_regs(bps=(x,)))
    for _ in range(2):
        assert summary(vm, vm.run()) == (ExitReason.DEBUG, ESR_BREAKPOINT, x)
        assert vm.read_memory(a, 8) == u64(OLD)
    vm.set_guest_debug(HW | STEP, debug_regs())
    ex = vm.run()
    assert summary(vm, ex) == (ExitReason.DEBUG, ESR_STEP, x + 4)
    assert vm.read_memory(a, 8) == u64(NEW)
    vm.set_guest_debug(HW, debug_regs(bps=(x,)))
    assert summary(vm, vm.run()) == (ExitReason.DEBUG, ESR_DONE, x + 4)


@pytest.mark.parametrize("control", [GUESTDBG_ENABLE | STEP, HW | STEP, GUESTDBG_ENABLE | GUESTDBG_USE_SW_BP | STEP])
def test_step_one_instruction_at_a_time(vm: KvmArm64Backend, g: Guest, control: int) -> None:
    loop, buf = g["case_fill_loop"], g["fill_buf"]
    fill(vm, buf, 64)
    vm.set_guest_debug(control, debug_regs())
    at(vm, loop, x0=buf, x1=2, x2=NEW)
    expected = [loop + 4, loop + 8, loop, loop + 4, loop + 8, loop + 12]
    seen = []
    for _ in expected:
        ex = vm.run()
        assert (ex.reason, ex.esr) == (ExitReason.DEBUG, ESR_STEP)
        seen.append(vm.get_reg("pc"))
    assert seen == expected
    assert vm.read_memory(buf, 24) == u64(NEW) * 2 + u64(OLD)
    assert summary(vm, vm.run()) == (ExitReason.DEBUG, ESR_DONE, loop + 12)


def test_step_an_mmio_store(vm: KvmArm64Backend, g: Guest, console: list[bytes]) -> None:
    """KVM_EXIT_MMIO first, then (on the re-entry that completes it) the step exit at PC + 4.  KVM reports
    this step with ISS.ISV = 0 (hsr 0xca000022): nothing ran in the guest after the emulated access."""
    vm.set_guest_debug(GUESTDBG_ENABLE | STEP)
    at(vm, g["case_mmio"], x0=UART, x1=ord("Z"))
    ex = vm.run()
    assert (ex.reason, ex.ec, vm.get_reg("pc")) == (ExitReason.DEBUG, 0x32, g["case_mmio"] + 4)
    print(f"\nMMIO step: esr={ex.esr:#x} far={ex.far:#x}")
    assert ex.esr in (ESR_STEP, 0xCA00_0022)
    assert console == [b"Z"]


# ---- C4: watchpoints fire before the access -----------------------------------------------------------


@pytest.mark.parametrize("lsc", [STORE, BOTH])
@pytest.mark.parametrize("slot", [0, 3])
def test_c4_write_watch(vm: KvmArm64Backend, g: Guest, lsc: int, slot: int) -> None:
    x, a = g["case_str"], g["u64_var"]
    fill(vm, a, 16)
    regs = DebugRegs()
    regs.wvr[slot], regs.wcr[slot] = a, wcr(lsc)
    vm.set_guest_debug(HW, regs)
    at(vm, x, x0=a, x1=NEW)
    for _ in range(2):
        ex = vm.run()
        assert summary(vm, ex) == (ExitReason.DEBUG, ESR_WATCH_WRITE, x)
        assert ex.ec == 0x34 and ex.far == a, f"esr={ex.esr:#x} far={ex.far:#x}"
        assert vm.read_memory(a, 16) == u64(OLD) * 2
        assert (vm.get_reg("x0"), vm.get_reg("x1")) == (a, NEW)
    vm.set_guest_debug(HW | STEP, debug_regs())  # C5: step over it with the watch disabled
    assert summary(vm, vm.run()) == (ExitReason.DEBUG, ESR_STEP, x + 4)
    assert vm.read_memory(a, 8) == u64(NEW)


@pytest.mark.parametrize("lsc", [LOAD, BOTH])
def test_c4_read_watch(vm: KvmArm64Backend, g: Guest, lsc: int) -> None:
    x, a = g["case_ldr"], g["u64_var"]
    fill(vm, a, 8, NEW)
    vm.set_guest_debug(HW, debug_regs(wps=((a, wcr(lsc)),)))
    at(vm, x, x0=a, x1=SENTINEL)
    for _ in range(2):
        ex = vm.run()
        assert summary(vm, ex) == (ExitReason.DEBUG, ESR_WATCH_READ, x)
        assert ex.far == a
        assert vm.get_reg("x1") == SENTINEL
        assert vm.read_memory(a, 8) == u64(NEW)


def test_c4_store_does_not_fire_load_watch(vm: KvmArm64Backend, g: Guest) -> None:
    a = g["u64_var"]
    fill(vm, a, 8)
    vm.set_guest_debug(HW, debug_regs(wps=((a, wcr(LOAD)),)))
    at(vm, g["case_str"], x0=a, x1=NEW)
    assert summary(vm, vm.run()) == (ExitReason.DEBUG, ESR_DONE, g["case_str"] + 4)
    assert vm.read_memory(a, 8) == u64(NEW)


def test_c9_far_is_stale_after_a_watchpoint(vm: KvmArm64Backend, g: Guest) -> None:
    a = g["u64_var"]
    vm.set_guest_debug(HW, debug_regs(wps=((a, wcr(STORE)),)))
    at(vm, g["case_str"], x0=a, x1=NEW)
    assert vm.run().far == a
    vm.set_guest_debug(HW, debug_regs(bps=(g["case_nop_bp"],)))
    at(vm, g["case_nop_bp"])
    ex = vm.run()
    assert (ex.esr, ex.far) == (ESR_BREAKPOINT, a)


# ---- C8: BRK --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("control", [GUESTDBG_ENABLE, GUESTDBG_ENABLE | GUESTDBG_USE_SW_BP, HW])
def test_c8_brk(vm: KvmArm64Backend, g: Guest, control: int) -> None:
    vm.set_guest_debug(control, debug_regs())
    at(vm, g["case_brk"])
    ex = vm.run()
    assert summary(vm, ex) == (ExitReason.DEBUG, 0xF200_0042, g["case_brk"])
    assert ex.ec == 0x3C


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


# ---- C10: control bits ----------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [1 << 18, 1 << 2, 1 << 31])
def test_c10_unknown_control_bit_is_refused(vm: KvmArm64Backend, g: Guest, bad: int) -> None:
    vm.set_guest_debug(HW, debug_regs(bps=(g["case_nop_bp"],)))
    with pytest.raises(BackendError, match="EINVAL"):
        vm.set_guest_debug(HW | bad, debug_regs())
    at(vm, g["case_nop_bp"])  # the earlier setting stands
    assert summary(vm, vm.run()) == (ExitReason.DEBUG, ESR_BREAKPOINT, g["case_nop_bp"])


def test_c10_valid_mask_is_accepted(vm: KvmArm64Backend) -> None:
    vm.set_guest_debug(GUESTDBG_VALID_MASK, debug_regs())
    assert vm.capabilities().guest_debug_flags == GUESTDBG_VALID_MASK


def test_c10_without_enable_everything_is_cleared(vm: KvmArm64Backend, g: Guest) -> None:
    hvc = g["case_hvc"]
    vm.set_guest_debug(HW | STEP, debug_regs(bps=(hvc,)))
    vm.set_guest_debug(0, debug_regs(bps=(hvc,)))
    at(vm, hvc, x0=PSCI_SYSTEM_OFF)  # no breakpoint, no step: the guest powers off
    assert vm.run().reason is ExitReason.SHUTDOWN


# ---- C11: slot counts -----------------------------------------------------------------------------------


def test_c11_capabilities_and_slots_beyond_the_count(vm: KvmArm64Backend, g: Guest) -> None:
    caps = vm.capabilities()
    dfr0 = vm.id_aa64dfr0()
    assert (caps.hw_breakpoints, caps.hw_watchpoints) == ((dfr0 >> 12 & 0xF) + 1, (dfr0 >> 20 & 0xF) + 1)
    assert caps.arch == "aarch64"
    print(f"\nC11 caps: HW_BPS={caps.hw_breakpoints} HW_WPS={caps.hw_watchpoints} ID_AA64DFR0_EL1={dfr0:#x}")
    x, a = g["case_str"], g["u64_var"]
    regs = DebugRegs()
    regs.bcr[caps.hw_breakpoints], regs.bvr[caps.hw_breakpoints] = BCR, x  # accepted, never loaded
    regs.wcr[caps.hw_watchpoints], regs.wvr[caps.hw_watchpoints] = wcr(BOTH), a
    vm.set_guest_debug(HW, regs)
    at(vm, x, x0=a, x1=NEW)
    assert summary(vm, vm.run()) == (ExitReason.DEBUG, ESR_DONE, x + 4)
    assert vm.read_memory(a, 8) == u64(NEW)


def test_c11_emulated_host_counts(vm: KvmArm64Backend) -> None:
    """The emulated arm64 host (QEMU -cpu max) has 6 breakpoints and 4 watchpoints."""
    caps = vm.capabilities()
    if os.environ.get("A64_EXPECT_CAPS", "6/4") != f"{caps.hw_breakpoints}/{caps.hw_watchpoints}":
        pytest.skip(f"not the emulated host's counts: {caps.hw_breakpoints}/{caps.hw_watchpoints}")
    assert (caps.hw_breakpoints, caps.hw_watchpoints) == (6, 4)


# ---- UART, PSCI, kick -----------------------------------------------------------------------------------


def test_boot_prints_banner_and_powers_off(vm: KvmArm64Backend, console: list[bytes]) -> None:
    ex = vm.run()
    assert (ex.reason, ex.status) == (ExitReason.SHUTDOWN, 0)
    assert b"".join(console) == b"debug_unit\n"


def test_uart_store_then_continue(vm: KvmArm64Backend, g: Guest, console: list[bytes]) -> None:
    vm.set_guest_debug(GUESTDBG_ENABLE)
    at(vm, g["case_mmio"], x0=UART, x1=ord("K"))
    assert summary(vm, vm.run()) == (ExitReason.DEBUG, ESR_DONE, g["case_mmio"] + 4)
    assert console == [b"K"]


def test_other_mmio_reads_zero(vm: KvmArm64Backend, g: Guest) -> None:
    vm.set_guest_debug(GUESTDBG_ENABLE)
    at(vm, g["case_ldr"], x0=0x0A00_0000, x1=SENTINEL)
    assert summary(vm, vm.run()) == (ExitReason.DEBUG, ESR_DONE, g["case_ldr"] + 4)
    assert vm.get_reg("x1") == 0


def test_psci_system_off(vm: KvmArm64Backend, g: Guest) -> None:
    at(vm, g["case_hvc_off"])
    ex = vm.run()
    assert (ex.reason, ex.status, ex.detail) == (ExitReason.SHUTDOWN, 0, "PSCI SYSTEM_OFF")


def test_kick_stops_a_running_guest(vm: KvmArm64Backend, g: Guest) -> None:
    vm.set_guest_debug(GUESTDBG_ENABLE)  # the closing brk exits only with guest debug on
    at(vm, g["case_spin"])
    result: list[Exit] = []
    t = threading.Thread(target=lambda: result.append(vm.run()), daemon=True)
    t.start()
    t.join(0.3)
    assert t.is_alive(), f"run() returned without a kick: {result}"
    start = time.monotonic()
    vm.kick()
    t.join(2)
    assert not t.is_alive(), "run() did not return within 2 s of kick()"
    print(f"\nkick latency: {1e3 * (time.monotonic() - start):.2f} ms")
    assert result[0].reason is ExitReason.INTERRUPTED
    assert g["case_spin"] == vm.get_reg("pc")
    at(vm, g["case_nop_bp"])  # the kick is consumed: the next run executes
    assert summary(vm, vm.run()) == (ExitReason.DEBUG, ESR_DONE, g["case_nop_bp"] + 4)


def test_kick_before_run(vm: KvmArm64Backend, g: Guest) -> None:
    vm.set_guest_debug(GUESTDBG_ENABLE)
    at(vm, g["case_nop_bp"])
    vm.kick()
    assert vm.run().reason is ExitReason.INTERRUPTED
    assert vm.get_reg("pc") == g["case_nop_bp"]
    assert summary(vm, vm.run()) == (ExitReason.DEBUG, ESR_DONE, g["case_nop_bp"] + 4)


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
