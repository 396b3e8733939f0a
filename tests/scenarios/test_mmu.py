"""A guest with its MMU on, running in the upper half of the address space as a kernel does (guests/mmu.S):
backends.api's translate() follows its page tables, and breakpoints and watchpoints match the virtual
addresses it runs at.

The guest maps RAM 1:1 through TTBR0_EL1, and its code and data pages at 0xffffff8000200000 (linked there,
loaded at ``_hi_lma``) through TTBR1_EL1; it stops at ``mmu_on`` (brk #0x5501) once the MMU is on, then
counts to 1000 in ``hi_counter`` through its upper-half address and powers off.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest

from backends.api import (
    GUESTDBG_ENABLE,
    GUESTDBG_SINGLESTEP,
    GUESTDBG_USE_HW,
    GUESTDBG_USE_SW_BP,
    DebugRegs,
    ExitReason,
    GuestMemoryError,
)
from tests.scenarios.conftest import Guest
from tests.scenarios.rig import Traced, describe_exit

HW = GUESTDBG_ENABLE | GUESTDBG_USE_HW
EC_BRK64, EC_BREAKPT_LOW, EC_SOFTSTP_LOW, EC_WATCHPT_LOW = 0x3C, 0x30, 0x32, 0x34
BCR = 0x1E7  # enabled, EL0 and EL1, BAS 0xf
WCR_STORE8 = 1 | 0b11 << 1 | 0b10 << 3 | 0xFF << 5  # enabled, EL0 and EL1, stores, 8 bytes
BRK0 = (0xD4200000).to_bytes(4, "little")
LOOPS = 1000


@pytest.fixture(scope="module")
def g(guest_elf: Callable[[str], object]) -> Guest:
    return Guest(guest_elf("mmu"))  # type: ignore[arg-type]


@pytest.fixture
def vm(make_vm: Callable[[Guest], Traced], g: Guest) -> Traced:
    return make_vm(g)


def to_mmu_on(vm: Traced, g: Guest, control: int = GUESTDBG_ENABLE, regs: DebugRegs | None = None) -> None:
    """Run the start-up code (MMU on) up to its brk #SIGNAL, then point PC past it."""
    vm.set_guest_debug(control, regs)
    ex = vm.run()
    assert (ex.reason, ex.ec, vm.get_reg("pc")) == (ExitReason.DEBUG, EC_BRK64, g["mmu_on"]), describe_exit(ex)
    assert vm.get_reg("sctlr_el1") & 1, "the guest turned its MMU on"
    vm.set_regs({"pc": g["mmu_on"] + 4})


def counter(vm: Traced, g: Guest) -> int:
    return int.from_bytes(vm.read_memory(vm.translate(g["hi_counter"]), 8), "little")


def test_translate_follows_the_guests_page_tables(vm: Traced, g: Guest) -> None:
    assert vm.translate(g["_start"]) == g["_start"]  # MMU off: the identity
    to_mmu_on(vm, g)
    lma = g["_hi_lma"]
    assert vm.translate(g["hi_loop"]) == lma
    assert vm.translate(g["hi_store"] + 2) == lma + (g["hi_store"] - g["hi_loop"]) + 2
    assert vm.translate(g["hi_counter"]) == lma + 0x1000  # an L3 page of its own
    assert vm.translate(g["done"]) == g["done"]  # TTBR0: RAM 1:1 through a 1 GiB block
    for unmapped in (g["hi_loop"] + 0x2000, 0xFFFF_FF80_4000_0000, 0x1000, 1 << 39):
        with pytest.raises(GuestMemoryError):
            vm.translate(unmapped)
    vm.set_guest_debug(0)
    ex = vm.run()
    assert ex.reason is ExitReason.SHUTDOWN, describe_exit(ex)
    assert counter(vm, g) == LOOPS
    vm.note("counter", LOOPS)


def test_watchpoint_on_an_upper_half_address(vm: Traced, g: Guest) -> None:
    watch = DebugRegs()
    watch.wvr[0], watch.wcr[0] = g["hi_counter"], WCR_STORE8  # (bits 63:53 as the address has them)
    to_mmu_on(vm, g, HW, watch)
    for n in range(3):
        ex = vm.run()
        assert (ex.reason, ex.ec) == (ExitReason.DEBUG, EC_WATCHPT_LOW), describe_exit(ex)
        assert ex.far == g["hi_counter"] and vm.get_reg("pc") == g["hi_store"]
        assert counter(vm, g) == n, "stopped before the store"
        vm.set_guest_debug(HW | GUESTDBG_SINGLESTEP, DebugRegs())  # step over it with the watch out
        ex = vm.run()
        assert (ex.reason, ex.ec, vm.get_reg("pc")) == (ExitReason.DEBUG, EC_SOFTSTP_LOW, g["hi_after_store"])
        assert counter(vm, g) == n + 1
        vm.set_guest_debug(HW, watch)


def test_hardware_and_software_breakpoints_at_upper_half_addresses(vm: Traced, g: Guest) -> None:
    bp = DebugRegs()
    bp.bvr[0], bp.bcr[0] = g["hi_after_store"], BCR
    to_mmu_on(vm, g, HW | GUESTDBG_USE_SW_BP, bp)
    ex = vm.run()
    assert (ex.reason, ex.ec, vm.get_reg("pc")) == (ExitReason.DEBUG, EC_BREAKPT_LOW, g["hi_after_store"])
    assert counter(vm, g) == 1
    # a software breakpoint goes where the guest's tables put the instruction, in code that has run already
    # (nothing else changes: the sim must drop what it translated from the old bytes)
    at = vm.translate(g["hi_store"])
    orig = vm.read_memory(at, 4)
    vm.write_memory(at, BRK0)
    vm.set_regs({"pc": g["hi_loop"]})  # (one more load and add)
    ex = vm.run()
    assert (ex.reason, ex.ec, vm.get_reg("pc")) == (ExitReason.DEBUG, EC_BRK64, g["hi_store"]), describe_exit(ex)
    assert counter(vm, g) == 1, "one more load and add, the store not yet"
    vm.write_memory(at, orig)
    vm.set_guest_debug(0)
    ex = vm.run()
    assert ex.reason is ExitReason.SHUTDOWN, describe_exit(ex)
    assert counter(vm, g) == LOOPS + 1  # (the iteration restarted at hi_loop counted once more)


def test_translation_faults_enter_the_guests_vectors(vm: Traced, g: Guest) -> None:
    """Accesses the guest's tables do not map are its own business: Data/Instruction Abort to its EL1 vectors
    (translation fault at the level that failed, WnR, FAR_EL1), never an exit."""
    to_mmu_on(vm, g)
    vm.set_regs({"pc": g["faults"]})
    ex = vm.run()
    assert (ex.reason, ex.ec, vm.get_reg("pc")) == (ExitReason.DEBUG, EC_BRK64, g["faults_done"]), describe_exit(ex)
    words = struct.unpack("<13Q", vm.read_memory(g["fault_n"], 13 * 8))
    assert words[0] == 4, words
    log = [words[1 + 3 * i : 4 + 3 * i] for i in range(4)]  # (ESR_EL1, FAR_EL1, ELR_EL1)
    unmapped = 0xFFFF_FF80_0030_0000
    assert [(far, elr) for _, far, elr in log] == [
        (unmapped + 8, g["fault_load"]), (unmapped + 0x10, g["fault_store"]), (1 << 39, g["fault_range"]),
        (unmapped, unmapped),
    ]  # fmt: skip
    ecs = [esr >> 26 for esr, _, _ in log]
    assert ecs == [0x25, 0x25, 0x25, 0x21], [hex(esr) for esr, _, _ in log]  # from the current EL
    wnr = [bool(esr & 1 << 6) for esr, _, _ in log]
    assert wnr == [False, True, False, False]
    assert all((esr & 0x3C) == 0x04 for esr, _, _ in log), "DFSC/IFSC: translation faults"
    vm.note("fault ESRs", [hex(esr) for esr, _, _ in log])


def test_stepping_a_faulting_load_lands_on_the_abort_vector(vm: Traced, g: Guest) -> None:
    to_mmu_on(vm, g)
    vm.set_regs({"pc": g["faults"]})
    vm.set_guest_debug(GUESTDBG_ENABLE | GUESTDBG_SINGLESTEP)
    while vm.get_reg("pc") != g["fault_load"]:  # the set-up: vectors, stack, addresses
        ex = vm.run()
        assert (ex.reason, ex.ec) == (ExitReason.DEBUG, EC_SOFTSTP_LOW), describe_exit(ex)
    ex = vm.run()
    assert (ex.reason, ex.ec) == (ExitReason.DEBUG, EC_SOFTSTP_LOW), describe_exit(ex)
    assert vm.get_reg("pc") == g["vectors"] + 0x200
    assert (vm.get_reg("elr_el1"), vm.get_reg("far_el1")) == (g["fault_load"], 0xFFFF_FF80_0030_0008)
    assert vm.get_reg("esr_el1") >> 26 == 0x25
