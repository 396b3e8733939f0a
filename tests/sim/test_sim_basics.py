"""The simulated core's plain VM behaviour through backends.api: memory, registers, console, exits, kick."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from backends.api import (
    GUESTDBG_ENABLE,
    GUESTDBG_USE_SW_BP,
    BackendError,
    Exit,
    ExitReason,
    GuestMemoryError,
)
from backends.sim import SimBackend
from tests.sim.conftest import Guest

RAM_BASE = 0x4000_0000
RAM_SIZE = 128 << 20  # SimBackend's default
UART = 0x0900_0000
PSCI_SYSTEM_OFF = 0x8400_0008
ESR_DONE = 0xF200_0D0D  # brk #0xd0d, the end of every debug_unit case


@pytest.fixture
def vm(debug_unit: Guest) -> Iterator[SimBackend]:
    """A vCPU as a debugger has it: guest debug enabled, so the cases' closing BRK exits to us (C8)."""
    backend = SimBackend(debug_unit.image)
    backend.set_guest_debug(GUESTDBG_ENABLE | GUESTDBG_USE_SW_BP)
    yield backend
    backend.close()


# ---- memory ---------------------------------------------------------------------------------------


def test_image_is_loaded(vm: SimBackend, debug_unit: Guest) -> None:
    for seg in debug_unit.image.segments:
        assert vm.read_memory(seg.addr, len(seg.data)) == seg.data
        assert vm.read_memory(seg.addr + len(seg.data), seg.memsize - len(seg.data)) == bytes(
            seg.memsize - len(seg.data)
        )
    assert vm.get_reg("pc") == debug_unit.image.entry == debug_unit["_start"]
    assert vm.get_reg("cpsr") == 0x3C5  # EL1h, DAIF masked: KVM's reset PSTATE


@pytest.mark.parametrize(
    "addr",
    [RAM_BASE, RAM_BASE + 0x1003, RAM_BASE + RAM_SIZE - 16],
    ids=["ram-start", "unaligned", "ram-end"],
)
def test_memory_round_trip(vm: SimBackend, addr: int) -> None:
    data = bytes(range(1, 17))
    vm.write_memory(addr, data)
    assert vm.read_memory(addr, 16) == data
    assert vm.read_memory(addr + 5, 3) == bytes([6, 7, 8])
    vm.write_memory(addr + 4, b"\xff\xee")
    assert vm.read_memory(addr, 8) == bytes([1, 2, 3, 4, 0xFF, 0xEE, 7, 8])


@pytest.mark.parametrize(
    ("addr", "size"),
    [
        (0x1000, 4),  # unmapped
        (RAM_BASE - 4, 8),  # straddles the start of RAM
        (RAM_BASE + RAM_SIZE - 4, 8),  # straddles the end of RAM
        (RAM_BASE + RAM_SIZE, 1),  # just past RAM
        (UART, 4),  # MMIO is not memory
    ],
    ids=["unmapped", "below-ram", "past-end", "after-ram", "mmio"],
)
def test_memory_outside_ram(vm: SimBackend, addr: int, size: int) -> None:
    before = vm.read_memory(RAM_BASE + RAM_SIZE - 8, 8)
    with pytest.raises(GuestMemoryError):
        vm.read_memory(addr, size)
    with pytest.raises(GuestMemoryError):
        vm.write_memory(addr, b"\x55" * size)
    assert issubclass(GuestMemoryError, BackendError)
    assert vm.read_memory(RAM_BASE + RAM_SIZE - 8, 8) == before  # a refused write writes nothing


def test_write_memory_replaces_translated_code(vm: SimBackend, debug_unit: Guest) -> None:
    """A patched instruction runs as patched even after the old one was translated and executed."""
    case = debug_unit["case_brk"]
    vm.set_guest_debug(GUESTDBG_ENABLE)
    vm.set_regs({"pc": case})
    first = vm.run()
    assert (first.reason, first.esr, vm.get_reg("pc")) == (ExitReason.DEBUG, 0xF200_0042, case)
    vm.write_memory(case, (0xD420_0000 | 0x77 << 5).to_bytes(4, "little"))  # brk #0x77
    ex = vm.run()
    assert (ex.reason, ex.esr, vm.get_reg("pc")) == (ExitReason.DEBUG, 0xF200_0077, case)


# ---- registers ------------------------------------------------------------------------------------

REG_VALUES = {
    "x0": 0x0123_4567_89AB_CDEF,
    "x30": 0xFFFF_FFFF_FFFF_FFFF,
    "sp": 0x4000_3FF0,
    "pc": 0x4000_0038,
    "cpsr": 0x6000_03C5,  # Z and C set, EL1h, DAIF masked
    "v0": 0x0011_2233_4455_6677_8899_AABB_CCDD_EEFF,
    "v31": 1 << 127,
    "fpsr": 0x0800_009F,  # QC and every cumulative exception flag
    "fpcr": 0x0340_0000,  # AHP, DN, FZ, RMode=RP
}


@pytest.mark.parametrize(("name", "value"), REG_VALUES.items())
def test_register_round_trip(vm: SimBackend, name: str, value: int) -> None:
    vm.set_regs({name: value})
    assert vm.get_reg(name) == value
    assert vm.get_regs()[name] == value


def test_set_regs_writes_only_the_named(vm: SimBackend) -> None:
    vm.set_regs({"x1": 1, "x2": 2})
    before = vm.get_regs()
    vm.set_regs({"x1": 0x1111, "v5": 0x5555 << 64})
    after = vm.get_regs()
    assert after == {**before, "x1": 0x1111, "v5": 0x5555 << 64}


def test_get_regs_names_the_arch_table(vm: SimBackend) -> None:
    expected = [f"x{i}" for i in range(31)] + ["sp", "pc", "cpsr"] + [f"v{i}" for i in range(32)] + ["fpsr", "fpcr"]
    assert list(vm.get_regs()) == expected


@pytest.mark.parametrize("name", ["x31", "w0", "q0", "xzr", "PC", ""])
def test_unknown_register(vm: SimBackend, name: str) -> None:
    before = vm.get_regs()
    with pytest.raises(BackendError):
        vm.get_reg(name)
    with pytest.raises(BackendError):
        vm.set_regs({"x0": 0x1234, name: 1})
    assert vm.get_regs() == before  # refused as a whole: x0 not written either


# ---- exits ----------------------------------------------------------------------------------------


def test_boot_prints_banner_and_powers_off(debug_unit: Guest) -> None:
    out: list[bytes] = []
    vm = SimBackend(debug_unit.image, console=out.append)
    try:
        ex = vm.run()
        assert (ex.reason, ex.status) == (ExitReason.SHUTDOWN, 0)
        assert b"".join(out) == b"debug_unit\n"
        assert out[0] == b"d"  # one callback per byte written to the data register
        assert vm.get_reg("x0") == PSCI_SYSTEM_OFF
    finally:
        vm.close()


def test_uart_store_reaches_console(debug_unit: Guest) -> None:
    out: list[bytes] = []
    vm = SimBackend(debug_unit.image, console=out.append)
    try:
        vm.set_guest_debug(GUESTDBG_ENABLE | GUESTDBG_USE_SW_BP)
        vm.set_regs({"pc": debug_unit["case_mmio"], "x0": UART, "x1": 0x141})  # only the low byte is sent
        ex = vm.run()
        assert (ex.reason, ex.esr, vm.get_reg("pc")) == (ExitReason.DEBUG, ESR_DONE, debug_unit["case_mmio"] + 4)
        assert out == [b"A"]
    finally:
        vm.close()


def test_uart_without_console(vm: SimBackend, debug_unit: Guest) -> None:
    vm.set_regs({"pc": debug_unit["case_mmio"], "x0": UART, "x1": 0x41})
    ex = vm.run()
    assert (ex.reason, ex.esr) == (ExitReason.DEBUG, ESR_DONE)


@pytest.mark.parametrize("debug", [False, True], ids=["no-debug", "debug-enabled"])
def test_psci_system_off(vm: SimBackend, debug_unit: Guest, debug: bool) -> None:
    if debug:
        vm.set_guest_debug(GUESTDBG_ENABLE)
    vm.set_regs({"pc": debug_unit["case_hvc"], "x0": PSCI_SYSTEM_OFF})
    ex = vm.run()
    assert (ex.reason, ex.status) == (ExitReason.SHUTDOWN, 0)


def test_undefined_instruction(vm: SimBackend, debug_unit: Guest) -> None:
    case = debug_unit["case_udf"]
    vm.set_regs({"pc": case})
    ex = vm.run()
    assert (ex.reason, ex.signal) == (ExitReason.FAULT, 4)
    assert vm.get_reg("pc") == case


@pytest.mark.parametrize(
    ("case", "addr"),
    [("case_ldr", 0x1000), ("case_str", 0x1000), ("case_ldr", RAM_BASE + RAM_SIZE)],
    ids=["load-unmapped", "store-unmapped", "load-past-ram"],
)
def test_access_outside_memory(vm: SimBackend, debug_unit: Guest, case: str, addr: int) -> None:
    vm.set_regs({"pc": debug_unit[case], "x0": addr, "x1": 0x5A5A})
    ex = vm.run()
    assert (ex.reason, ex.signal) == (ExitReason.FAULT, 11)
    assert vm.get_reg("pc") == debug_unit[case]
    assert vm.get_reg("x1") == 0x5A5A


# ---- kick -----------------------------------------------------------------------------------------


def test_kick_stops_a_running_guest(vm: SimBackend, debug_unit: Guest) -> None:
    spin = debug_unit["case_spin"]
    vm.set_regs({"pc": spin})
    result: list[Exit] = []

    def runner() -> None:
        result.append(vm.run())

    t = threading.Thread(target=runner, daemon=True)
    t.start()
    time.sleep(0.2)
    assert t.is_alive(), f"run() returned without a kick: {result}"
    start = time.monotonic()
    vm.kick()
    t.join(2.0)
    assert not t.is_alive(), "run() did not return within 2 s of kick()"
    assert time.monotonic() - start < 2.0
    (ex,) = result
    assert ex.reason is ExitReason.INTERRUPTED
    assert vm.get_reg("pc") == spin
    # the kick is consumed: the next run executes
    vm.set_regs({"pc": debug_unit["case_nop_bp"]})
    again = vm.run()
    assert (again.reason, again.esr) == (ExitReason.DEBUG, ESR_DONE)


def test_kick_before_run(vm: SimBackend, debug_unit: Guest) -> None:
    case = debug_unit["case_nop_bp"]
    vm.set_regs({"pc": case})
    vm.kick()
    start = time.monotonic()
    ex = vm.run()
    assert ex.reason is ExitReason.INTERRUPTED
    assert time.monotonic() - start < 0.5
    assert vm.get_reg("pc") == case  # nothing executed
    again = vm.run()
    assert (again.reason, again.esr, vm.get_reg("pc")) == (ExitReason.DEBUG, ESR_DONE, case + 4)


def test_capabilities_defaults(vm: SimBackend) -> None:
    caps = vm.capabilities()
    assert (caps.arch, caps.hw_breakpoints, caps.hw_watchpoints) == ("aarch64", 6, 4)
    assert (caps.single_step, caps.sw_breakpoints, caps.guest_debug_flags, caps.vcpus) == (True, True, 0x30003, 1)


def test_guest_debug_control_mask_is_configurable() -> None:
    """An older or stricter KVM: the control bits the core accepts (KVM_CAP_SET_GUEST_DEBUG2's answer)."""
    from backends.api import GUESTDBG_ENABLE, GUESTDBG_SINGLESTEP, GUESTDBG_USE_HW, BackendError
    from backends.sim import SimBackend

    sim = SimBackend(guest_debug_flags=GUESTDBG_ENABLE | GUESTDBG_USE_HW)
    assert sim.capabilities().guest_debug_flags == GUESTDBG_ENABLE | GUESTDBG_USE_HW
    assert sim.capabilities().debug_id == sim.id_aa64dfr0()
    sim.set_guest_debug(GUESTDBG_ENABLE | GUESTDBG_USE_HW)
    with pytest.raises(BackendError, match="EINVAL"):
        sim.set_guest_debug(GUESTDBG_ENABLE | GUESTDBG_SINGLESTEP)
    with pytest.raises(BackendError, match="mask"):
        SimBackend(guest_debug_flags=1 << 18)
