"""AArch64 stage-1 address translation (the EL1&0 regime) in software, for debugger memory accesses.

A debugger names guest memory by virtual address, as the guest's own MMU sees it; KVM on arm64 has no
KVM_TRANSLATE (x86 has one), so a VMM walks the guest's page tables itself, as QEMU's gdbstub does for
its KVM guests.  Both arm64 backends use this walk: the simulated core for its watchpoint bookkeeping
too.  What it follows (Arm ARM, VMSAv8-64): SCTLR_EL1.M; TCR_EL1's T0SZ/T1SZ, EPD0/EPD1, TG0/TG1 (4, 16
and 64 KiB granules) and TBI0/TBI1; VA[55] picks TTBR0_EL1 or TTBR1_EL1; table, block and page
descriptors with 48-bit output addresses.  Not followed: 52-bit addresses (LPA/LPA2), big-endian tables
(SCTLR_EL1.EE), permissions and access flags (a debugger may read what the guest may not).  Stage 2 is
the hypervisor's own mapping: the result is a guest physical address (IPA), what read_memory takes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from backends.api import GuestMemoryError

MMU_REGS = ("sctlr_el1", "tcr_el1", "ttbr0_el1", "ttbr1_el1")
_OA_MASK = (1 << 48) - 1
_GRANULE0 = {0b00: 12, 0b01: 16, 0b10: 14}  # TCR_EL1.TG0 -> log2(granule)
_GRANULE1 = {0b10: 12, 0b11: 16, 0b01: 14}  # TCR_EL1.TG1 (encoded differently)
_BLOCK_LEVELS = {12: (1, 2), 14: (2,), 16: (2,)}  # levels where a block descriptor is valid (48-bit OA)


class TranslationFault(GuestMemoryError):
    """The guest's page tables map no memory at this virtual address; ``level`` is the lookup level that
    failed, as a translation fault's status code reports it (0 for an address outside both ranges)."""

    def __init__(self, message: str, level: int = 0) -> None:
        super().__init__(message)
        self.level = level


@dataclass(frozen=True)
class MmuRegs:
    sctlr: int
    tcr: int
    ttbr0: int
    ttbr1: int

    @property
    def enabled(self) -> bool:
        return bool(self.sctlr & 1)


def translate(va: int, regs: MmuRegs, read: Callable[[int, int], bytes]) -> int:
    """The guest physical address of ``va``; TranslationFault if the tables map nothing there.
    ``read(pa, size)`` reads guest physical memory (a descriptor outside it is a fault too)."""
    if not regs.enabled:
        return va
    tcr = regs.tcr
    upper = bool(va >> 55 & 1)
    if upper:  # TCR_EL1: T1SZ [21:16], EPD1 [23], TG1 [31:30], TBI1 [38]
        tsz, disabled, tbi, ttbr = tcr >> 16 & 63, tcr >> 23 & 1, tcr >> 38 & 1, regs.ttbr1
        granule = _GRANULE1.get(tcr >> 30 & 3, 12)
    else:  # T0SZ [5:0], EPD0 [7], TG0 [15:14], TBI0 [37]
        tsz, disabled, tbi, ttbr = tcr & 63, tcr >> 7 & 1, tcr >> 37 & 1, regs.ttbr0
        granule = _GRANULE0.get(tcr >> 14 & 3, 12)
    tsz = min(max(tsz, 16), 48)  # out-of-range TxSZ values are treated as the nearest supported one
    ia = 64 - tsz
    top_bits = 56 if tbi else 64  # with TBI the top byte is not part of the address
    high = va >> ia & ((1 << (top_bits - ia)) - 1)
    if disabled or high != (((1 << (top_bits - ia)) - 1) if upper else 0):
        raise TranslationFault(f"no translation for {va:#x}: outside the {'TTBR1' if upper else 'TTBR0'} range")
    stride = granule - 3
    level = 3 - (ia - 1 - granule) // stride
    table = ttbr & _OA_MASK & ~1
    while True:
        shift = granule + stride * (3 - level)
        bits = min(stride, ia - shift)
        entry = table + ((va >> shift) & ((1 << bits) - 1)) * 8
        try:
            desc = int.from_bytes(read(entry, 8), "little")
        except GuestMemoryError:
            raise TranslationFault(f"no translation for {va:#x}: level {level} table at {table:#x}", level) from None
        if not desc & 1:
            raise TranslationFault(f"no translation for {va:#x}: invalid level {level} descriptor", level)
        if level < 3 and desc & 2:  # a table: the next level
            table = desc & _OA_MASK & ~((1 << granule) - 1)
            level += 1
            continue
        if (level == 3 and not desc & 2) or (level < 3 and level not in _BLOCK_LEVELS[granule]):
            raise TranslationFault(f"no translation for {va:#x}: reserved level {level} descriptor", level)
        return (desc & _OA_MASK & ~((1 << shift) - 1)) | (va & ((1 << shift) - 1))
