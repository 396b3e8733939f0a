"""The x86-64 slot table: DR0-DR3 shared by hbreak and watchpoints, DR7 encoding (Intel SDM 18.2.4)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backends.api import Capabilities
from gdbstub import x86_64
from gdbstub.slots import GdbPoint, PointKind, SlotError
from gdbstub.x86_slots import DR7_FIXED, Piece, X86SlotTable, is_canonical, split_region

HB, W, R, A = PointKind.HW_BREAK, PointKind.WATCH_WRITE, PointKind.WATCH_READ, PointKind.WATCH_ACCESS


def dr7_of(t: X86SlotTable) -> int:
    return t.debug_regs().debugreg[7]


def test_empty_table_is_kvm_selftests_dr7() -> None:
    t = X86SlotTable()
    assert t.debug_regs().debugreg == [0, 0, 0, 0, 0, 0, 0, 0x400]


def test_hbreak_in_dr0_is_local_enable_exec_len1() -> None:
    t = X86SlotTable()
    t.insert(GdbPoint(HB, 0x401000, 1))
    regs = t.debug_regs().debugreg
    assert regs[0] == 0x401000
    assert regs[7] == 0x400 | 1  # L0, R/W0 = 00 (execute), LEN0 = 00


def test_4_byte_write_watch_in_dr1() -> None:
    t = X86SlotTable()
    t.insert(GdbPoint(HB, 0x401000, 1))  # takes DR0
    t.insert(GdbPoint(W, 0x402000, 4))
    regs = t.debug_regs().debugreg
    assert regs[1] == 0x402000
    # L0 | L1, R/W1 = 01 (write) at bits 20-21, LEN1 = 11 (4 bytes) at bits 22-23
    assert regs[7] == 0x400 | 1 << 0 | 1 << 2 | (0b01 | 0b11 << 2) << (16 + 4 * 1)
    assert regs[7] == 0xD00405


@pytest.mark.parametrize(
    ("kind", "length", "fields"),
    [
        (W, 1, 0b0001),  # write, LEN 00
        (W, 2, 0b0101),  # write, LEN 01
        (W, 4, 0b1101),  # write, LEN 11
        (W, 8, 0b1001),  # write, LEN 10
        (R, 4, 0b1111),  # read: programmed read/write (no read-only data breakpoint on x86)
        (A, 4, 0b1111),  # access: read/write
        (A, 8, 0b1011),
    ],
)
def test_rw_and_len_fields(kind: PointKind, length: int, fields: int) -> None:
    t = X86SlotTable()
    t.insert(GdbPoint(kind, 0x402000, length))
    assert dr7_of(t) == DR7_FIXED | 1 | fields << 16


def test_every_slot_has_its_own_fields() -> None:
    t = X86SlotTable()
    for i in range(4):
        t.insert(GdbPoint(W, 0x402000 + 8 * i, 8))
    assert dr7_of(t) == 0x400 | 0b01010101 | 0x9999 << 16
    assert t.debug_regs().debugreg[:4] == [0x402000, 0x402008, 0x402010, 0x402018]


def test_split_unaligned_8_byte_region() -> None:
    assert split_region(0x1003, 8) == [Piece(0x1003, 1), Piece(0x1004, 4), Piece(0x1008, 2), Piece(0x100A, 1)]
    assert split_region(0x1004, 8) == [Piece(0x1004, 4), Piece(0x1008, 4)]
    assert split_region(0x1006, 4) == [Piece(0x1006, 2), Piece(0x1008, 2)]  # straddles an 8-byte boundary
    assert split_region(0x1000, 16) == [Piece(0x1000, 8), Piece(0x1008, 8)]


def test_unaligned_watch_uses_one_dr_per_piece() -> None:
    t = X86SlotTable()
    t.insert(GdbPoint(W, 0x1003, 8))
    regs = t.debug_regs().debugreg
    assert regs[:4] == [0x1003, 0x1004, 0x1008, 0x100A]
    # LEN: 1 (00), 4 (11), 2 (01), 1 (00); all write (01)
    assert regs[7] == 0x400 | 0b01010101 | (0b0001 | 0b1101 << 4 | 0b0101 << 8 | 0b0001 << 12) << 16
    lines = t.describe()
    assert lines[0].startswith("DR0 watch 0x1003 len 8 (piece 1/4: 0x1003 len 1)")
    assert lines[3].startswith("DR3 watch 0x1003 len 8 (piece 4/4: 0x100a len 1)")
    assert lines[4] == f"DR7 0x{regs[7]:08x}"


@given(st.integers(0, 1 << 40), st.integers(1, 64))
def test_split_covers_exactly_with_aligned_pieces(addr: int, length: int) -> None:
    pieces = split_region(addr, length)
    pos = addr
    for p in pieces:
        assert p.start == pos and p.size in (1, 2, 4, 8) and p.start % p.size == 0
        pos = p.end
    assert pos == addr + length
    assert len(pieces) <= length // 8 + 6  # at most 3 ramp-up and 3 ramp-down pieces around the 8s


def test_pool_is_shared_between_hbreak_and_watch() -> None:
    t = X86SlotTable()
    bps = [GdbPoint(HB, 0x401000 + i, 1) for i in range(4)]
    for p in bps:
        t.insert(p)
    gen, regs = t.generation, t.debug_regs()
    watch = GdbPoint(W, 0x402000, 4)
    with pytest.raises(SlotError, match=r"needs 1 debug register and 0 of 4 are free"):
        t.insert(watch)
    assert (t.generation, t.debug_regs(), t.points()) == (gen, regs, bps)  # nothing changed
    assert t.remove(bps[2])
    t.insert(watch)
    assert t.owner(2) == watch
    assert t.debug_regs().debugreg[2] == 0x402000
    with pytest.raises(SlotError):
        t.insert(GdbPoint(HB, 0x403000, 1))


def test_split_is_all_or_nothing() -> None:
    t = X86SlotTable()
    t.insert(GdbPoint(HB, 0x401000, 1))
    t.insert(GdbPoint(HB, 0x401001, 1))
    t.insert(GdbPoint(W, 0x402000, 8))
    regs = t.debug_regs()
    with pytest.raises(SlotError, match=r"needs 2 debug registers and 1 of 4 are free"):
        t.insert(GdbPoint(W, 0x403004, 8))  # two 4-byte pieces
    assert t.debug_regs() == regs and len(t.points()) == 3


def test_region_needing_more_than_four_pieces_is_refused() -> None:
    t = X86SlotTable()
    with pytest.raises(SlotError, match=r"needs 5 aligned pieces"):
        t.insert(GdbPoint(W, 0x402000, 40))
    t.insert(GdbPoint(W, 0x402000, 32))  # 4 x 8 bytes fits exactly
    assert len(t.points()) == 1


def test_insert_and_remove_are_idempotent_and_generation_tracks_changes() -> None:
    t = X86SlotTable()
    p = GdbPoint(A, 0x402004, 4)
    t.insert(p)
    gen = t.generation
    t.insert(p)
    assert t.generation == gen
    assert t.remove(p) and not t.remove(p)
    assert t.generation == gen + 1
    t.insert(p)
    t.clear()
    assert t.points() == [] and t.debug_regs().debugreg[7] == 0x400


@pytest.mark.parametrize(
    ("point", "message"),
    [
        (GdbPoint(HB, 0x401000, 4), "kind 4 is not supported"),
        (GdbPoint(HB, 0x0000_8000_0000_0000, 1), "not a canonical"),
        (GdbPoint(W, 0x402000, 0), "at least 1 byte"),
        (GdbPoint(W, 0x0000_7FFF_FFFF_FFFC, 8), "not within canonical"),
    ],
)
def test_refusals(point: GdbPoint, message: str) -> None:
    t = X86SlotTable()
    with pytest.raises(SlotError, match=message):
        t.insert(point)
    assert t.points() == []


def test_canonical() -> None:
    assert is_canonical(0) and is_canonical(0x7FFF_FFFF_FFFF) and is_canonical(0xFFFF_8000_0000_0000)
    assert not is_canonical(0x8000_0000_0000) and not is_canonical(1 << 64) and not is_canonical(-1)
    t = X86SlotTable()
    t.insert(GdbPoint(HB, 0xFFFF_FFFF_8000_0000, 1))  # a kernel-half address is fine
    assert t.breakpoint_at(0xFFFF_FFFF_8000_0000) is not None


def test_breakpoint_at_and_owner() -> None:
    t = X86SlotTable()
    hb, w = GdbPoint(HB, 0x401000, 1), GdbPoint(W, 0x402000, 4)
    t.insert(w)
    t.insert(hb)
    assert t.breakpoint_at(0x401000) == hb and t.breakpoint_at(0x402000) is None
    assert t.owner(0) == w and t.owner(1) == hb and t.owner(2) is None


def test_describe() -> None:
    t = X86SlotTable()
    t.insert(GdbPoint(HB, 0x401000, 1))
    t.insert(GdbPoint(R, 0x402000, 4))
    assert t.describe() == [
        "DR0 hbreak 0x401000 len 1  dr0=0x0000000000401000 R/W=00 LEN=1",
        "DR1 rwatch 0x402000 len 4 [as read/write: x86 has no read-only data breakpoint]  "
        "dr1=0x0000000000402000 R/W=11 LEN=4",
        "DR2 free",
        "DR3 free",
        "DR7 0x00f00405",
    ]


def test_pool_size_from_capabilities() -> None:
    assert x86_64.new_slot_table(Capabilities("x86_64", 4, 4)).count == 4
    assert x86_64.new_slot_table(Capabilities("x86_64", 2, 0)).count == 2
    empty = x86_64.new_slot_table(Capabilities("x86_64", 0, 0))
    with pytest.raises(SlotError, match="no hardware debug registers"):
        empty.insert(GdbPoint(HB, 0x401000, 1))
    with pytest.raises(ValueError):
        X86SlotTable(5)
