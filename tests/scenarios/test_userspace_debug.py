"""Userspace hardware debug on arm64 (kvm-hw-debug.md section 7.C): scenarios every backend must pass alike.

Each test runs on every available backend (``vm``: the simulated core, and arm64 KVM on an aarch64 host:
inside the emulated host, ``scripts/arm64-host``), through backends.api only.  Every test points PC at one
case of guests/debug_unit.S, sets the registers that case uses, and runs or steps.  A case that no
breakpoint or watchpoint stops ends at its ``brk #0xd0d`` (ESR_DONE) with PC = case + 4.  Deeper sim-only
checks (FAR policies, the unaligned matrix, busy pages) are in tests/sim/test_debug_unit.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

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
from tests.kvm.smp_rig import Fleet
from tests.scenarios.conftest import Guest
from tests.scenarios.rig import Traced

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
FPEN = 0b11 << 20  # CPACR_EL1: FP/SIMD enabled at EL0 and EL1


@pytest.fixture(scope="module")
def g(guest_elf: Callable[[str], object]) -> Guest:
    path = guest_elf("debug_unit")
    return Guest(path)  # type: ignore[arg-type]


@pytest.fixture
def vm(make_vm: Callable[[Guest], Traced], g: Guest) -> Traced:
    return make_vm(g)


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


def fill(vm: Traced, addr: int, size: int, value: int = OLD) -> None:
    vm.write_memory(addr, (u64(value) * (size // 8 + 1))[:size])


def at(vm: Traced, pc: int, **regs: int) -> None:
    vm.set_regs({"pc": pc, **regs})


def summary(vm: Traced, ex: Exit) -> tuple[ExitReason, int, int]:
    return ex.reason, ex.esr, vm.get_reg("pc")


# ---- set-up, registers, memory ------------------------------------------------------------------------


def test_reset_state(vm: Traced, g: Guest) -> None:
    regs = vm.get_regs()
    assert regs["pc"] == g.image.entry == g["_start"]
    assert regs["cpsr"] == CPSR_EL1
    assert len(regs) == 31 + 3 + 32 + 2


def test_register_round_trip(vm: Traced) -> None:
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


def test_sp_follows_the_mode(vm: Traced) -> None:
    vm.set_regs({"cpsr": CPSR_EL1, "sp": 0x4000_8000})
    vm.set_regs({"cpsr": CPSR_EL0, "sp": 0x4000_4000})
    assert vm.get_reg("sp") == 0x4000_4000  # SP_EL0
    vm.set_regs({"cpsr": CPSR_EL1})
    assert vm.get_reg("sp") == 0x4000_8000  # SP_EL1 kept its value
    assert vm.get_regs()["sp"] == 0x4000_8000


def test_memory_bounds(vm: Traced, g: Guest) -> None:
    vm.write_memory(g["u64_var"] + 1, b"\x01\x02\x03\x04\x05\x06\x07")  # unaligned edges
    assert vm.read_memory(g["u64_var"], 9) == b"\xa5\x01\x02\x03\x04\x05\x06\x07\xa5"
    with pytest.raises(BackendError):
        vm.read_memory(0x3FFF_FFFC, 8)
    with pytest.raises(BackendError):
        vm.read_memory(0x4000_0000 + (128 << 20) - 4, 8)


# ---- C1/C2: hardware breakpoints ----------------------------------------------------------------------


@pytest.mark.parametrize("slot", [0, 3, 5])
@pytest.mark.parametrize("cpsr", [CPSR_EL1, CPSR_EL1 & ~0x200], ids=["D=1", "D=0"])
def test_c1_c2_breakpoint_before_the_instruction(vm: Traced, g: Guest, slot: int, cpsr: int) -> None:
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


def test_breakpoint_on_later_instruction(vm: Traced, g: Guest) -> None:
    a, done = g["u64_var"], g["case_str"] + 4
    fill(vm, a, 8)
    vm.set_guest_debug(HW, debug_regs(bps=(done,)))
    at(vm, g["case_str"], x0=a, x1=NEW)
    assert summary(vm, vm.run()) == (ExitReason.DEBUG, ESR_BREAKPOINT, done)
    assert vm.read_memory(a, 8) == u64(NEW)


# ---- C3: single step ----------------------------------------------------------------------------------


def test_c3_step_at_an_enabled_breakpoint_makes_no_progress(vm: Traced, g: Guest) -> None:
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
def test_step_one_instruction_at_a_time(vm: Traced, g: Guest, control: int) -> None:
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


def test_step_an_mmio_store(vm: Traced, g: Guest, console: list[bytes]) -> None:
    """KVM_EXIT_MMIO first, then (on the re-entry that completes it) the step exit at PC + 4.  KVM reports
    this step with ISS.ISV = 0 (hsr 0xca000022): nothing ran in the guest after the emulated access."""
    vm.set_guest_debug(GUESTDBG_ENABLE | STEP)
    at(vm, g["case_mmio"], x0=UART, x1=ord("Z"))
    ex = vm.run()
    assert (ex.reason, ex.ec, vm.get_reg("pc")) == (ExitReason.DEBUG, 0x32, g["case_mmio"] + 4)
    print(f"\nMMIO step: esr={ex.esr:#x} far={ex.far:#x}")
    assert ex.esr == 0xCA00_0022
    assert console == [b"Z"]


# ---- C4: watchpoints fire before the access -----------------------------------------------------------


@pytest.mark.parametrize("lsc", [STORE, BOTH])
@pytest.mark.parametrize("slot", [0, 3])
def test_c4_write_watch(vm: Traced, g: Guest, lsc: int, slot: int) -> None:
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
def test_c4_read_watch(vm: Traced, g: Guest, lsc: int) -> None:
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


def test_c4_store_does_not_fire_load_watch(vm: Traced, g: Guest) -> None:
    a = g["u64_var"]
    fill(vm, a, 8)
    vm.set_guest_debug(HW, debug_regs(wps=((a, wcr(LOAD)),)))
    at(vm, g["case_str"], x0=a, x1=NEW)
    assert summary(vm, vm.run()) == (ExitReason.DEBUG, ESR_DONE, g["case_str"] + 4)
    assert vm.read_memory(a, 8) == u64(NEW)


def test_c9_far_is_stale_after_a_watchpoint(vm: Traced, g: Guest) -> None:
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
def test_c8_brk(vm: Traced, g: Guest, control: int) -> None:
    vm.set_guest_debug(control, debug_regs())
    at(vm, g["case_brk"])
    ex = vm.run()
    assert summary(vm, ex) == (ExitReason.DEBUG, 0xF200_0042, g["case_brk"])
    assert ex.ec == 0x3C


# ---- C10: control bits ----------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [1 << 18, 1 << 2, 1 << 31])
def test_c10_unknown_control_bit_is_refused(vm: Traced, g: Guest, bad: int) -> None:
    vm.set_guest_debug(HW, debug_regs(bps=(g["case_nop_bp"],)))
    with pytest.raises(BackendError, match="EINVAL"):
        vm.set_guest_debug(HW | bad, debug_regs())
    at(vm, g["case_nop_bp"])  # the earlier setting stands
    assert summary(vm, vm.run()) == (ExitReason.DEBUG, ESR_BREAKPOINT, g["case_nop_bp"])


def test_c10_valid_mask_is_accepted(vm: Traced) -> None:
    vm.set_guest_debug(GUESTDBG_VALID_MASK, debug_regs())
    assert vm.capabilities().guest_debug_flags == GUESTDBG_VALID_MASK


def test_c10_without_enable_everything_is_cleared(vm: Traced, g: Guest) -> None:
    hvc = g["case_hvc"]
    vm.set_guest_debug(HW | STEP, debug_regs(bps=(hvc,)))
    vm.set_guest_debug(0, debug_regs(bps=(hvc,)))
    at(vm, hvc, x0=PSCI_SYSTEM_OFF)  # no breakpoint, no step: the guest powers off
    assert vm.run().reason is ExitReason.SHUTDOWN


# ---- C11: slot counts -----------------------------------------------------------------------------------


def test_c11_capabilities_and_slots_beyond_the_count(vm: Traced, g: Guest) -> None:
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


# ---- UART, PSCI, kick -----------------------------------------------------------------------------------


def test_boot_prints_banner_and_powers_off(vm: Traced, console: list[bytes]) -> None:
    ex = vm.run()
    assert (ex.reason, ex.status) == (ExitReason.SHUTDOWN, 0)
    assert b"".join(console) == b"debug_unit\n"


def test_uart_store_then_continue(vm: Traced, g: Guest, console: list[bytes]) -> None:
    vm.set_guest_debug(GUESTDBG_ENABLE)
    at(vm, g["case_mmio"], x0=UART, x1=ord("K"))
    assert summary(vm, vm.run()) == (ExitReason.DEBUG, ESR_DONE, g["case_mmio"] + 4)
    assert console == [b"K"]


def test_psci_system_off(vm: Traced, g: Guest) -> None:
    at(vm, g["case_hvc_off"])
    ex = vm.run()
    assert (ex.reason, ex.status, ex.detail) == (ExitReason.SHUTDOWN, 0, "PSCI SYSTEM_OFF")


def test_kick_stops_a_running_guest(vm: Traced, g: Guest) -> None:
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


def test_kick_before_run(vm: Traced, g: Guest) -> None:
    vm.set_guest_debug(GUESTDBG_ENABLE)
    at(vm, g["case_nop_bp"])
    vm.kick()
    assert vm.run().reason is ExitReason.INTERRUPTED
    assert vm.get_reg("pc") == g["case_nop_bp"]
    assert summary(vm, vm.run()) == (ExitReason.DEBUG, ESR_DONE, g["case_nop_bp"] + 4)


# ---- C6/C7: unaligned, multi-doubleword and MASK watches (the sim's deeper matrix: tests/sim) -------------


def wcr_bas(lsc: int, bas: int, mask: int = 0) -> int:
    return 1 | 0b11 << 1 | lsc << 3 | bas << 5 | mask << 24


@pytest.mark.parametrize("lane", range(8))
def test_c6_byte_store_lanes(vm: Traced, g: Guest, lane: int) -> None:
    """A byte watch (BAS = one lane) fires only for a store to that byte; FAR is the byte."""
    x, buf = g["case_strb_unaligned"], g["byte_buf"]
    fill(vm, buf, 16)
    vm.set_guest_debug(HW, debug_regs(wps=((buf, wcr_bas(STORE, 1 << 3)),)))
    at(vm, x, x0=buf + lane, x1=0x3C)
    ex = vm.run()
    if lane == 3:
        assert summary(vm, ex) == (ExitReason.DEBUG, ESR_WATCH_WRITE, x)
        assert ex.far == buf + 3
        assert vm.read_memory(buf, 16) == u64(OLD) * 2
    else:
        assert summary(vm, ex) == (ExitReason.DEBUG, ESR_DONE, x + 4)
        assert vm.read_memory(buf + lane, 1) == b"\x3c"


@pytest.mark.parametrize(("dw", "bas", "far_off"), [(0, 0xC0, 6), (1, 0x03, 8), (1, 0x0C, None)], ids=str)
def test_c6_store_straddling_two_doublewords(vm: Traced, g: Guest, dw: int, bas: int, far_off: int | None) -> None:
    """A 4-byte store at +6 touches bytes 6-9: a watch on either doubleword's touched bytes fires."""
    x, buf = g["case_str_w_straddle"], g["straddle_buf"]
    fill(vm, buf, 16)
    vm.set_guest_debug(HW, debug_regs(wps=((buf + 8 * dw, wcr_bas(STORE, bas)),)))
    at(vm, x, x0=buf + 6, x1=0x1122_3344)
    ex = vm.run()
    if far_off is None:
        assert summary(vm, ex) == (ExitReason.DEBUG, ESR_DONE, x + 4)
    else:
        assert summary(vm, ex) == (ExitReason.DEBUG, ESR_WATCH_WRITE, x)
        assert ex.far == buf + far_off
        assert vm.read_memory(buf, 16) == u64(OLD) * 2


@pytest.mark.parametrize(
    ("case", "buf", "size", "dw"),
    [("case_stp", "pair_buf", 16, 1), ("case_stp", "pair_buf", 16, 0), ("case_str_q", "quad_buf", 16, 1),
     ("case_stp_q", "quad_buf", 32, 0), ("case_stp_q", "quad_buf", 32, 3)],
)  # fmt: skip
def test_c6_wide_store_with_one_doubleword_watched(
    vm: Traced, g: Guest, case: str, buf: str, size: int, dw: int
) -> None:
    """stp x / str q / stp q: a watch on one doubleword fires before that doubleword is written (whether
    the instruction's other accesses are done at the exit is IMPDEF: the sim undoes them)."""
    x, base = g[case], g[buf]
    fill(vm, base, size)
    vm.set_guest_debug(HW, debug_regs(wps=((base + 8 * dw, wcr(STORE)),)))
    at(vm, x, x0=base, x1=NEW, x2=NEW, cpacr_el1=FPEN)  # KVM resets CPACR_EL1 to 0: FP/SIMD would trap
    ex = vm.run()
    assert summary(vm, ex) == (ExitReason.DEBUG, ESR_WATCH_WRITE, x)
    assert ex.far == base + 8 * dw
    assert vm.read_memory(base + 8 * dw, 8) == u64(OLD)


@pytest.mark.parametrize(("offset", "hits"), [(0, True), (40, True), (56, True), (64, False), (-8, False)])
def test_c7_mask_watch(vm: Traced, g: Guest, offset: int, hits: bool) -> None:
    """MASK=6, BAS=0xff: the aligned 64 bytes at mask_area + 64."""
    x, region = g["case_str"], g["mask_area"] + 64
    fill(vm, region - 64, 192)
    vm.set_guest_debug(HW, debug_regs(wps=((region, wcr_bas(STORE, 0xFF, mask=6)),)))
    at(vm, x, x0=region + offset, x1=NEW)
    ex = vm.run()
    if hits:
        assert summary(vm, ex) == (ExitReason.DEBUG, ESR_WATCH_WRITE, x)
        assert ex.far == region + offset
    else:
        assert summary(vm, ex) == (ExitReason.DEBUG, ESR_DONE, x + 4)
        assert vm.read_memory(region + offset, 8) == u64(NEW)


@pytest.mark.parametrize("ctrl", [wcr_bas(STORE, 0xFF, mask=1), wcr_bas(STORE, 0xFF, mask=2), wcr_bas(STORE, 0),
                                  wcr_bas(0b00, 0xFF)], ids=["mask1", "mask2", "bas0", "lsc0"])  # fmt: skip
def test_c7_reserved_watches_never_fire(vm: Traced, g: Guest, ctrl: int) -> None:
    x, a = g["case_str"], g["mask_area"] + 64
    fill(vm, a, 8)
    vm.set_guest_debug(HW, debug_regs(wps=((a, ctrl),)))
    at(vm, x, x0=a, x1=NEW)
    assert summary(vm, vm.run()) == (ExitReason.DEBUG, ESR_DONE, x + 4)


# ---- C15: several vCPUs -----------------------------------------------------------------------------------


def test_c15_breakpoint_on_every_vcpu(make_vm: Callable[..., Traced], guest_elf: Callable[[str], object]) -> None:
    """The debugger's breakpoint, set on every vCPU while all are stopped (KVM_SET_GUEST_DEBUG is per vCPU),
    fires on each of them, also on one the guest starts later (PSCI CPU_ON); all-stop between rounds."""
    smp = Guest(guest_elf("smp"))  # type: ignore[arg-type]
    vm = make_vm(smp, cpus=2)
    if vm.capabilities().vcpus < 2:
        pytest.skip(f"not applicable: the {vm.kind} backend runs one vCPU")
    bp = debug_regs(bps=(smp["cpu_work"],))
    for k in (0, 1):
        vm.set_guest_debug(HW, bp, vcpu=k)
    hits: set[int] = set()
    for _ in range(10):  # rounds of the vCPUs yet to hit (one that hit stays parked on the breakpoint)
        fleet = Fleet(vm.backend, [k for k in (0, 1) if k not in hits]).start()
        fleet.first()
        for k, ex in fleet.stop().items():
            if ex.reason is ExitReason.DEBUG and ex.ec == 0x30:
                assert vm.backend.get_reg("pc", k) == smp["cpu_work"]
                hits.add(k)
        if hits == {0, 1}:
            break
    vm.note("vcpus that hit", sorted(hits))  # (the order they ran in is the host's business)
    assert hits == {0, 1}
