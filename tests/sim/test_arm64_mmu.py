"""backends/arm64_mmu.py: the stage-1 walk both arm64 backends use for debugger accesses by virtual address.

Page tables are built here in a fake guest physical memory, one granule at a time, and the walk is checked
against what the architecture (VMSAv8-64) says each descriptor maps.
"""

from __future__ import annotations

import pytest

from backends.api import GuestMemoryError
from backends.arm64_mmu import MmuRegs, TranslationFault, translate

TG0 = {12: 0b00, 16: 0b01, 14: 0b10}
TG1 = {12: 0b10, 16: 0b11, 14: 0b01}
HIGH = 0xFFFF_0000_0000_0000


class Tables:
    """Guest physical memory holding page tables; ``map`` adds one leaf at a level."""

    def __init__(self, granule: int, ia: int = 48) -> None:
        self.granule, self.ia = granule, ia
        self.stride = granule - 3
        self.start = 3 - (ia - 1 - granule) // self.stride
        self.mem: dict[int, bytearray] = {}
        self.next = 0x4000_0000
        self.root = self._new()

    def _new(self) -> int:
        pa = self.next
        self.next += 1 << self.granule
        self.mem[pa] = bytearray(1 << self.granule)
        return pa

    def read(self, pa: int, size: int) -> bytes:
        base = pa & ~((1 << self.granule) - 1)
        if base not in self.mem:
            raise GuestMemoryError(f"{pa:#x} is not RAM")
        off = pa - base
        return bytes(self.mem[base][off : off + size])

    def _entry(self, table: int, va: int, level: int) -> int:
        shift = self.granule + self.stride * (3 - level)
        bits = min(self.stride, self.ia - shift)
        return table + ((va >> shift) & ((1 << bits) - 1)) * 8

    def map(self, va: int, pa: int, level: int = 3, raw: int | None = None) -> None:
        table = self.root
        for lv in range(self.start, level):
            at = self._entry(table, va, lv)
            desc = int.from_bytes(self.read(at, 8), "little")
            if not desc & 1:
                desc = self._new() | 0b11
                self._put(at, desc)
            table = desc & ((1 << 48) - 1) & ~((1 << self.granule) - 1)
        leaf = raw if raw is not None else pa | (0b11 if level == 3 else 0b01) | 1 << 10  # AF
        self._put(self._entry(table, va, level), leaf)

    def _put(self, at: int, desc: int) -> None:
        base = at & ~((1 << self.granule) - 1)
        self.mem[base][at - base : at - base + 8] = desc.to_bytes(8, "little")

    def regs(self, *, upper: bool = False, tbi: bool = False, epd: bool = False) -> MmuRegs:
        tsz = 64 - self.ia
        if upper:
            tcr = tsz << 16 | TG1[self.granule] << 30 | (1 << 38 if tbi else 0) | (1 << 23 if epd else 0) | 1 << 7
            return MmuRegs(sctlr=1, tcr=tcr, ttbr0=0, ttbr1=self.root)
        tcr = tsz | TG0[self.granule] << 14 | (1 << 37 if tbi else 0) | (1 << 7 if epd else 0) | 1 << 23
        return MmuRegs(sctlr=1, tcr=tcr, ttbr0=self.root, ttbr1=0)


def test_mmu_off_is_the_identity() -> None:
    assert translate(0x4000_1234, MmuRegs(0, 0, 0, 0), lambda pa, n: b"") == 0x4000_1234


@pytest.mark.parametrize("granule", [12, 14, 16])
@pytest.mark.parametrize("ia", [48, 39])
def test_a_page_maps_its_granule(granule: int, ia: int) -> None:
    t = Tables(granule, ia)
    va, pa = 0x12_3456 << granule & ((1 << ia) - 1), 0x4800_0000
    t.map(va, pa)
    regs = t.regs()
    assert translate(va + 0x18, regs, t.read) == pa + 0x18
    assert translate(va + (1 << granule) - 1, regs, t.read) == pa + (1 << granule) - 1
    with pytest.raises(TranslationFault, match="invalid level 3"):
        translate(va + (1 << granule), regs, t.read)  # the next page: unmapped


@pytest.mark.parametrize(("granule", "level"), [(12, 1), (12, 2), (14, 2), (16, 2)])
def test_blocks_map_the_whole_range_below_their_level(granule: int, level: int) -> None:
    t = Tables(granule)
    shift = granule + (granule - 3) * (3 - level)
    va, pa = 3 << shift, 5 << shift
    t.map(va, pa, level=level)
    assert translate(va + 0x1234, t.regs(), t.read) == pa + 0x1234
    assert translate(va + (1 << shift) - 8, t.regs(), t.read) == pa + (1 << shift) - 8


def test_upper_half_through_ttbr1() -> None:
    t = Tables(12)
    va = 0xFFFF_8000_0010_2000
    t.map(va, 0x4020_0000)
    assert translate(va + 4, t.regs(upper=True), t.read) == 0x4020_0004
    with pytest.raises(TranslationFault, match="TTBR0"):
        translate(0x10_2000, t.regs(upper=True), t.read)  # EPD0 set: the lower half is off


def test_top_byte_ignored_only_with_tbi() -> None:
    t = Tables(12)
    t.map(0x8000, 0x4000_8000)
    tagged = 0x5A00_0000_0000_8000
    assert translate(tagged | 0x10, t.regs(tbi=True), t.read) == 0x4000_8010
    with pytest.raises(TranslationFault, match="outside the TTBR0 range"):
        translate(tagged, t.regs(), t.read)


def test_addresses_outside_the_configured_size_fault() -> None:
    t = Tables(12, ia=39)
    t.map(0x8000, 0x4000_8000)
    with pytest.raises(TranslationFault, match="outside"):
        translate(1 << 39 | 0x8000, t.regs(), t.read)


def test_epd_disables_a_half() -> None:
    t = Tables(12)
    t.map(0x8000, 0x4000_8000)
    with pytest.raises(TranslationFault):
        translate(0x8000, t.regs(epd=True), t.read)


def test_reserved_descriptors_fault() -> None:
    t = Tables(12)
    t.map(0x8000, 0, level=3, raw=0x4000_8000 | 0b01)  # level 3 with bit 1 clear: reserved
    with pytest.raises(TranslationFault, match="reserved level 3"):
        translate(0x8000, t.regs(), t.read)
    t0 = Tables(12)
    t0.map(0, 0x4000_0000, level=0, raw=0x4000_0000 | 0b01)  # a level 0 block needs LPA2
    with pytest.raises(TranslationFault, match="reserved level 0"):
        translate(0x1000, t0.regs(), t0.read)


def test_a_table_outside_guest_memory_is_a_fault() -> None:
    t = Tables(12)
    t.map(0x8000, 0, level=2, raw=0x7_0000_0000 | 0b11)  # points at a level 3 table that is not RAM
    with pytest.raises(TranslationFault, match="level 3 table"):
        translate(0x8000, t.regs(), t.read)
