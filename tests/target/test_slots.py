"""The slot table: gdb Z1..Z4 points onto BRPs/WRPs (gdbstub.slots)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backends.api import MAX_DBG_REGS, DebugRegs
from gdbstub import hwdebug as hw
from gdbstub.slots import GdbPoint, PointKind, SlotError, SlotTable

BASE = 0x4000_1000
CODE = 0x4000_0000


def hbreak(addr: int) -> GdbPoint:
    return GdbPoint(PointKind.HW_BREAK, addr, 4)


def watch(addr: int, length: int, kind: PointKind = PointKind.WATCH_WRITE) -> GdbPoint:
    return GdbPoint(kind, addr, length)


def snapshot(t: SlotTable) -> tuple[DebugRegs, int, list[GdbPoint], list[str]]:
    return t.debug_regs(), t.generation, t.points(), t.describe()


def enabled(values: list[int]) -> list[int]:
    return [i for i, v in enumerate(values) if v & 1]


def wrps_used(t: SlotTable) -> int:
    return len(enabled(t.debug_regs().wcr))


# --------------------------------------------------------------------------- breakpoints


def test_seventh_hbreak_fails_and_changes_nothing() -> None:
    t = SlotTable(6, 4)
    for i in range(6):
        t.insert(hbreak(CODE + 4 * i))
    regs = t.debug_regs()
    assert enabled(regs.bcr) == list(range(6))
    assert regs.bcr[:6] == [0x1E7] * 6 and regs.bvr[:6] == [CODE + 4 * i for i in range(6)]
    before = snapshot(t)
    with pytest.raises(SlotError, match=r"no free hardware breakpoint \(6 of 6 in use\)"):
        t.insert(hbreak(CODE + 0x100))
    assert snapshot(t) == before


def test_remove_frees_the_slot() -> None:
    t = SlotTable(6, 4)
    for i in range(6):
        t.insert(hbreak(CODE + 4 * i))
    assert t.remove(hbreak(CODE + 8))
    assert t.debug_regs().bcr[2] == 0
    t.insert(hbreak(CODE + 0x100))
    assert t.debug_regs().bvr[2] == CODE + 0x100
    assert t.breakpoint_at(CODE + 0x100) == hbreak(CODE + 0x100)
    assert t.breakpoint_at(CODE + 8) is None


def test_slot_count_comes_from_the_caller() -> None:
    t = SlotTable(2, 2)
    t.insert(hbreak(CODE))
    t.insert(hbreak(CODE + 4))
    with pytest.raises(SlotError, match=r"\(2 of 2 in use\)"):
        t.insert(hbreak(CODE + 8))
    big = SlotTable(16, 16)
    for i in range(16):
        big.insert(hbreak(CODE + 4 * i))
    assert len(enabled(big.debug_regs().bcr)) == MAX_DBG_REGS
    for bad in ((17, 4), (4, -1)):
        with pytest.raises(ValueError):
            SlotTable(*bad)


def test_no_hardware_at_all() -> None:
    t = SlotTable(0, 0)
    with pytest.raises(SlotError, match="no hardware breakpoints"):
        t.insert(hbreak(CODE))
    with pytest.raises(SlotError, match="no hardware watchpoints"):
        t.insert(watch(BASE, 4))
    assert t.describe() == []


@pytest.mark.parametrize(
    ("point", "why"),
    [
        (hbreak(CODE + 2), "not 4-byte aligned"),
        (GdbPoint(PointKind.HW_BREAK, CODE, 2), "kind 2 is not supported"),
        (hbreak(1 << 64), "outside the 64-bit address space"),
    ],
)
def test_hbreak_rejects(point: GdbPoint, why: str) -> None:
    t = SlotTable(6, 4)
    with pytest.raises(SlotError, match=why):
        t.insert(point)
    assert t.generation == 0 and t.points() == []


def test_breakpoint_at() -> None:
    t = SlotTable(6, 4)
    t.insert(hbreak(CODE + 0x10))
    t.insert(watch(CODE + 0x20, 4))
    assert t.breakpoint_at(CODE + 0x10) == hbreak(CODE + 0x10)
    assert t.breakpoint_at(CODE + 0x20) is None  # a watch is not a breakpoint
    assert t.breakpoint_at(CODE + 0x14) is None
    assert t.breakpoint_at(1 << 64) is None


# --------------------------------------------------------------------------- idempotence and generation


def test_idempotent_insert_and_remove() -> None:
    t = SlotTable(6, 4)
    g0 = t.generation
    t.insert(hbreak(CODE))
    t.insert(watch(BASE, 8))
    g1 = t.generation
    assert g1 > g0
    t.insert(hbreak(CODE))
    t.insert(watch(BASE, 8))
    assert t.generation == g1
    assert t.points() == [hbreak(CODE), watch(BASE, 8)]
    assert len(enabled(t.debug_regs().bcr)) == 1 and wrps_used(t) == 1
    assert t.remove(hbreak(CODE))
    g2 = t.generation
    assert g2 > g1
    assert not t.remove(hbreak(CODE))
    assert not t.remove(watch(BASE, 4))
    assert t.generation == g2


def test_generation_bumps_only_on_real_changes() -> None:
    t = SlotTable(6, 4)
    t.clear()
    assert t.generation == 0
    t.insert(watch(BASE, 4))
    assert t.generation == 1
    with pytest.raises(SlotError):
        t.insert(watch(BASE, 0))
    assert t.generation == 1
    t.clear()
    assert t.generation == 2 and t.points() == []
    t.clear()
    assert t.generation == 2
    assert t.debug_regs() == DebugRegs()


def test_debug_regs_is_a_copy() -> None:
    t = SlotTable(6, 4)
    t.insert(hbreak(CODE))
    regs = t.debug_regs()
    regs.bcr[0] = 0
    assert t.debug_regs().bcr[0] == 0x1E7


# --------------------------------------------------------------------------- watch covers


def test_straddling_watch_uses_two_wrps() -> None:
    t = SlotTable(6, 4)
    t.insert(watch(BASE + 6, 4))
    regs = t.debug_regs()
    assert enabled(regs.wcr) == [0, 1]
    assert regs.wvr[:2] == [BASE, BASE + 8]
    assert [hw.WCR_BAS.get(w) for w in regs.wcr[:2]] == [0xC0, 0x03]
    assert [hw.WCR_LSC.get(w) for w in regs.wcr[:2]] == [hw.LSC_STORE] * 2
    # a write to either half fires
    for addr in (BASE + 6, BASE + 8, BASE + 9):
        assert any(hw.watch_hits(regs.wcr[i], regs.wvr[i], addr, 1, True) for i in (0, 1))


def test_aligned_64_byte_buffer_uses_one_wrp_with_mask() -> None:
    t = SlotTable(6, 4)
    t.insert(watch(BASE + 0x40, 64, PointKind.WATCH_ACCESS))
    regs = t.debug_regs()
    assert enabled(regs.wcr) == [0]
    assert hw.WCR_MASK.get(regs.wcr[0]) == 6 and hw.WCR_LSC.get(regs.wcr[0]) == hw.LSC_BOTH
    assert regs.wvr[0] == BASE + 0x40


def test_member_at_8_mod_16_uses_two_wrps() -> None:
    t = SlotTable(6, 4)
    t.insert(watch(BASE + 0x18, 16, PointKind.WATCH_READ))
    regs = t.debug_regs()
    assert enabled(regs.wcr) == [0, 1]
    assert [hw.WCR_BAS.get(w) for w in regs.wcr[:2]] == [0xFF, 0xFF]
    assert [hw.WCR_LSC.get(w) for w in regs.wcr[:2]] == [hw.LSC_LOAD] * 2


def test_exhaustion_falls_back_to_an_approximate_cover() -> None:
    t = SlotTable(6, 4)
    t.insert(watch(BASE + 0x100, 8))
    t.insert(watch(BASE + 0x200, 8))
    # [0x1004, 0x1014) needs 3 WRPs exactly; 2 are free: a 16-byte block + 4 lanes (4 padding bytes)
    p = watch(BASE + 4, 16)
    t.insert(p)
    a = t.assignment(p)
    assert a is not None
    assert (a.slots, a.exact, a.padding) == ((2, 3), False, 4)
    regs = t.debug_regs()
    assert hw.WCR_MASK.get(regs.wcr[2]) == 4 and regs.wvr[2] == BASE
    assert t.is_padding(BASE) and not t.is_padding(BASE + 4)
    before = snapshot(t)
    with pytest.raises(SlotError, match=r"no free hardware watchpoint \(4 of 4 in use\)"):
        t.insert(watch(BASE + 0x300, 1))
    assert snapshot(t) == before


def test_exhaustion_without_any_cover_changes_nothing() -> None:
    t = SlotTable(6, 4)
    for i in range(3):
        t.insert(watch(BASE + 0x100 * i, 8))
    before = snapshot(t)
    # crossing a 2 GiB boundary: one WRP cannot cover it at any size
    with pytest.raises(SlotError, match=r"needs 2 hardware watchpoints.*1 free ones.*\(3 of 4 in use\)"):
        t.insert(watch(0x7FFF_FFF8, 16))
    assert snapshot(t) == before


def test_one_point_never_shares_a_wrp() -> None:
    t = SlotTable(6, 4)
    t.insert(watch(BASE, 8, PointKind.WATCH_WRITE))
    t.insert(watch(BASE, 8, PointKind.WATCH_READ))
    regs = t.debug_regs()
    assert enabled(regs.wcr) == [0, 1] and regs.wvr[0] == regs.wvr[1] == BASE
    assert [hw.WCR_LSC.get(w) for w in regs.wcr[:2]] == [hw.LSC_STORE, hw.LSC_LOAD]


@pytest.mark.parametrize(
    ("point", "why"),
    [
        (watch(BASE, 0), "length must be 1..2147483648"),
        (watch(BASE, (1 << 31) + 1), "length must be"),
        (watch((1 << 64) - 4, 8), "past the end of the 64-bit address space"),
        (watch(-8, 8), "past the end"),
    ],
)
def test_watch_rejects(point: GdbPoint, why: str) -> None:
    t = SlotTable(6, 4)
    with pytest.raises(SlotError, match=why):
        t.insert(point)
    assert t.points() == []


def test_largest_watch() -> None:
    t = SlotTable(6, 4)
    t.insert(watch(1 << 31, 1 << 31))
    assert hw.WCR_MASK.get(t.debug_regs().wcr[0]) == 31
    t.insert(watch((1 << 64) - 8, 8))
    assert t.debug_regs().wvr[1] == (1 << 64) - 8


# --------------------------------------------------------------------------- attributing hits


def test_watch_for_exact_hits() -> None:
    t = SlotTable(6, 4)
    a, b = watch(BASE + 6, 4), watch(BASE + 0x40, 64, PointKind.WATCH_ACCESS)
    t.insert(a)
    t.insert(b)
    assert t.watch_for(BASE + 6) == a
    assert t.watch_for(BASE + 9) == a
    assert t.watch_for(BASE + 0x40) == b
    assert t.watch_for(BASE + 0x7F) == b
    assert not t.is_padding(BASE + 9)


def test_watch_for_stp_reporting_the_lowest_address() -> None:
    # stp x1, x2, [p] with an 8-byte watch at p+8: Apple M1 reports FAR = p
    p = BASE + 0x100
    t = SlotTable(6, 4)
    w = watch(p + 8, 8)
    t.insert(w)
    t.insert(watch(p - 0x80, 8))  # another point, further away
    assert t.watch_for(p) == w
    assert t.watch_for(p + 8) == w
    # stp q0, q1 (32 bytes) at p-16
    assert t.watch_for(p - 16) == w


def test_watch_for_dc_zva() -> None:
    # dc zva zeroes a 64-byte block; FAR = the block start, 40 bytes below the watch
    p = BASE + 0x200
    t = SlotTable(6, 4)
    w = watch(p + 40, 8)
    t.insert(w)
    t.insert(watch(p + 0x100, 8))
    assert t.watch_for(p) == w


def test_watch_for_padding_hits() -> None:
    t = SlotTable(6, 1)
    # [0x1078, 0x1088) crosses a 128-byte line: one WRP needs the 256-byte block at 0x1000
    w = watch(BASE + 0x78, 16, PointKind.WATCH_ACCESS)
    t.insert(w)
    a = t.assignment(w)
    assert a is not None and not a.exact and a.padding == 256 - 16
    assert t.watch_for(BASE + 0x80) == w  # in range
    assert t.watch_for(BASE + 0xA0) is None and t.is_padding(BASE + 0xA0)  # above: cannot reach it
    assert t.watch_for(BASE + 0x10) is None and t.is_padding(BASE + 0x10)  # 104 bytes below: too far
    assert t.watch_for(BASE + 0x40) == w and t.is_padding(BASE + 0x40)  # 56 below: a wide access may reach it
    assert t.watch_for(BASE + 0x39) == w
    assert t.watch_for(BASE + 0x38) is None  # exactly 64 below: a 64-byte access ends just short


def test_watch_for_nearest_and_direction() -> None:
    t = SlotTable(6, 4)
    assert t.watch_for(BASE) is None
    a, b = watch(BASE, 8), watch(BASE + 0x1000, 8)
    t.insert(a)
    t.insert(b)
    assert t.watch_for(BASE + 0x100) == a  # Linux's nearest-watchpoint rule
    assert t.watch_for(BASE + 0xF00) == b
    r = watch(BASE, 8, PointKind.WATCH_READ)
    t.insert(r)
    assert t.watch_for(BASE + 4, is_write=True) == a
    assert t.watch_for(BASE + 4, is_write=False) == r
    assert t.watch_for(BASE + 4) == a  # no direction: the earliest inserted
    assert t.watch_for(BASE + 0x1000, is_write=False) == b  # no read point there: by address
    assert t.watch_for(1 << 64) is None


# --------------------------------------------------------------------------- describe


def test_describe() -> None:
    t = SlotTable(6, 4)
    t.insert(hbreak(0x4000_0010))
    t.insert(watch(0x4000_1006, 4))
    lines = t.describe()
    assert len(lines) == 10
    assert lines[0] == "BRP0 hbreak 0x40000010  bcr=0x000001e7 bvr=0x0000000040000010"
    assert lines[1:6] == [f"BRP{i} free" for i in range(1, 6)]
    assert lines[6] == (
        "WRP0 watch 0x40001006 len 4 (chunk 1/2, exact)  wcr=0x00001817 wvr=0x0000000040001000"
        "  watches [0x40001006, 0x40001008)"
    )
    assert lines[7] == (
        "WRP1 watch 0x40001006 len 4 (chunk 2/2, exact)  wcr=0x00000077 wvr=0x0000000040001008"
        "  watches [0x40001008, 0x4000100a)"
    )
    assert lines[8:] == ["WRP2 free", "WRP3 free"]


def test_describe_approximate() -> None:
    t = SlotTable(2, 2)
    t.insert(watch(0x28, 64, PointKind.WATCH_ACCESS))
    assert t.describe()[2:] == [
        "WRP0 awatch 0x28 len 64 (chunk 1/2, approximate, 8 padding bytes)  wcr=0x05001fff"
        " wvr=0x0000000000000020  watches [0x20, 0x40)",
        "WRP1 awatch 0x28 len 64 (chunk 2/2, approximate, 24 padding bytes)  wcr=0x06001fff"
        " wvr=0x0000000000000040  watches [0x40, 0x80)",
    ]


# --------------------------------------------------------------------------- random sequences

POOL = [hbreak(CODE + 4 * i) for i in range(8)] + [
    watch(BASE + off, length, kind)
    for off, length, kind in [
        (0, 8, PointKind.WATCH_WRITE),
        (6, 4, PointKind.WATCH_WRITE),
        (0x28, 64, PointKind.WATCH_ACCESS),
        (0x40, 64, PointKind.WATCH_READ),
        (0x18, 16, PointKind.WATCH_READ),
        (0x3, 29, PointKind.WATCH_ACCESS),
        (0x1001, 1, PointKind.WATCH_WRITE),
    ]
]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.sampled_from(POOL)), max_size=30), st.sampled_from([(2, 2), (6, 4)]))
def test_random_sequences_keep_invariants(ops: list[tuple[bool, GdbPoint]], counts: tuple[int, int]) -> None:
    t = SlotTable(*counts)
    for is_insert, point in ops:
        regs, gen, points = t.debug_regs(), t.generation, t.points()
        if is_insert:
            try:
                t.insert(point)
            except SlotError:
                assert (t.debug_regs(), t.generation, t.points()) == (regs, gen, points)
                continue
        else:
            t.remove(point)
        assert (t.generation != gen) == (t.debug_regs() != regs)
        assert t.generation in (gen, gen + 1)
        new = t.debug_regs()
        # registers beyond the counts stay zero
        assert not any(new.bcr[counts[0] :] + new.wcr[counts[1] :])
        slots_seen: list[int] = []
        for p in t.points():
            a = t.assignment(p)
            assert a is not None
            slots_seen += [s for s in a.slots if p.kind != PointKind.HW_BREAK]
            if p.kind == PointKind.HW_BREAK:
                (s,) = a.slots
                assert hw.breakpoint_hits(new.bcr[s], new.bvr[s], p.addr)
                assert t.breakpoint_at(p.addr) == p
                continue
            # every byte of the range fires its own WRPs for the right direction, and is attributed to it
            write = p.kind != PointKind.WATCH_READ
            for x in (p.addr, p.addr + p.length - 1):
                assert any(hw.watch_hits(new.wcr[s], new.wvr[s], x, 1, write) for s in a.slots)
                owner = t.watch_for(x, is_write=write)
                assert owner is not None and owner.addr <= x < owner.addr + owner.length
        assert len(slots_seen) == len(set(slots_seen)) == len(enabled(new.wcr))
