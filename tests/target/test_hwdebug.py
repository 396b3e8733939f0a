"""aarch64 debug-register encoders, covers and matching rules (gdbstub.hwdebug)."""

from __future__ import annotations

import itertools
import time
from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gdbstub import hwdebug as hw
from gdbstub.hwdebug import (
    LSC_BOTH,
    LSC_LOAD,
    LSC_STORE,
    WatchChunk,
    approx_chunks,
    breakpoint_hits,
    encode_bcr,
    encode_bvr,
    encode_wcr,
    encode_wvr,
    exact_chunks,
    over_coverage,
    watch_hits,
)

BASE = 0x4000_1000  # a 4 KiB-aligned data page of the test guests


def overlaps(a: int, alen: int, b: int, blen: int) -> bool:
    return a < b + blen and b < a + alen


def covered(chunks: list[WatchChunk]) -> set[int]:
    return {x for c in chunks for x in range(c.start, c.end)}


def cover_hits(chunks: list[WatchChunk], addr: int, size: int, is_write: bool, lsc: int = LSC_BOTH) -> bool:
    return any(watch_hits(c.wcr(lsc), c.wvr(), addr, size, is_write) for c in chunks)


# --------------------------------------------------------------------------- encoders


def test_bcr_is_0x1e7() -> None:
    assert encode_bcr() == 0x1E7
    bcr = encode_bcr()
    assert (hw.BCR_E.get(bcr), hw.BCR_PMC.get(bcr), hw.BCR_BAS.get(bcr), hw.BCR_BT.get(bcr)) == (1, 3, 0xF, 0)


@pytest.mark.parametrize(
    ("addr", "bvr"),
    [
        (0x4000_0010, 0x4000_0010),
        (0x0000_7FFF_1234_0000, 0x0000_7FFF_1234_0000),  # 48-bit user address: bit 52 clear
        (0xFFFF_0000_1234_0000, 0xFFFF_0000_1234_0000),  # kernel address: already sign-extended
        (0x0010_0000_0000_1000, 0xFFF0_0000_0000_1000),  # bit 52 set: RESS[63:53] become ones
        (0x0B00_0000_1234_0000, 0x0000_0000_1234_0000),  # TBI tag in the top byte is dropped
    ],
)
def test_bvr_canonicalises(addr: int, bvr: int) -> None:
    assert encode_bvr(addr) == bvr


@pytest.mark.parametrize("addr", [0x4000_0002, 0x4000_0001, -4, 1 << 64])
def test_bvr_rejects(addr: int) -> None:
    with pytest.raises(ValueError):
        encode_bvr(addr)


def test_wcr_four_byte_write_at_offset_4() -> None:
    # E=1, PAC=0b11, LSC=0b10 (store), BAS=0b11110000
    assert encode_wcr(LSC_STORE, 0xF0) == 1 | 0b11 << 1 | 0b10 << 3 | 0xF0 << 5 == 0x1E17
    assert encode_wvr(BASE) == BASE
    (chunk,) = exact_chunks(BASE + 4, 4)
    assert (chunk.wcr(LSC_STORE), chunk.wvr()) == (0x1E17, BASE)


@pytest.mark.parametrize(("mask", "wcr"), [(3, 0x0300_1FF7), (6, 0x0600_1FF7), (31, 0x1F00_1FF7)])
def test_wcr_mask(mask: int, wcr: int) -> None:
    assert encode_wcr(LSC_STORE, mask=mask) == wcr
    assert encode_wcr(LSC_STORE, 0xFF, mask) == wcr
    assert hw.WCR_MASK.get(wcr) == mask and hw.WCR_BAS.get(wcr) == 0xFF


def test_wcr_lsc_and_pac() -> None:
    assert hw.WCR_LSC.get(encode_wcr(LSC_LOAD, 1)) == 0b01
    assert hw.WCR_LSC.get(encode_wcr(LSC_BOTH, 1)) == 0b11
    assert hw.WCR_PAC.get(encode_wcr(LSC_LOAD, 1, pac=hw.PAC_EL1)) == 0b01


@pytest.mark.parametrize(
    ("lsc", "bas", "mask"),
    [(0, 1, 0), (4, 1, 0), (LSC_STORE, 0, 0), (LSC_STORE, 0b101, 0), (LSC_STORE, 0x100, 0)]
    + [(LSC_STORE, 0xFF, m) for m in (1, 2, 32)]
    + [(LSC_STORE, 0x0F, 4)],
)
def test_wcr_rejects(lsc: int, bas: int, mask: int) -> None:
    with pytest.raises(ValueError):
        encode_wcr(lsc, bas, mask)


def test_wvr_alignment_and_canonical() -> None:
    assert encode_wvr(BASE + 0x40, 6) == BASE + 0x40
    assert encode_wvr(0xFFFF_0000_1234_0040, 6) == 0xFFFF_0000_1234_0040
    assert encode_wvr(0x0010_0000_0000_0008) == 0xFFF0_0000_0000_0008
    for addr, mask in ((BASE + 4, 0), (BASE + 0x48, 6), (BASE, 2)):
        with pytest.raises(ValueError):
            encode_wvr(addr, mask)


def test_field_refuses_overflow() -> None:
    with pytest.raises(ValueError):
        hw.WCR_MASK.put(32)


# --------------------------------------------------------------------------- exact covers


def test_exact_chunks_examples() -> None:
    # a 4-byte variable straddling a doubleword boundary: two BAS chunks
    a, b = exact_chunks(BASE + 6, 4)
    assert (a.base, a.bas, a.mask, b.base, b.bas, b.mask) == (BASE, 0xC0, 0, BASE + 8, 0x03, 0)
    # a 64-byte aligned buffer: one MASK=6 chunk
    assert exact_chunks(BASE + 0x40, 64) == [WatchChunk(BASE + 0x40, 0xFF, 6, BASE + 0x40, BASE + 0x80)]
    # a 16-byte struct, 16-aligned: MASK=4
    assert [c.mask for c in exact_chunks(BASE + 0x10, 16)] == [4]
    # a 16-byte member at 8 mod 16: two whole doublewords as BAS=0xff
    assert [(c.base, c.bas, c.mask) for c in exact_chunks(BASE + 0x18, 16)] == [
        (BASE + 0x18, 0xFF, 0),
        (BASE + 0x20, 0xFF, 0),
    ]
    # one doubleword is BAS=0xff, not MASK=3
    assert [(c.bas, c.mask) for c in exact_chunks(BASE, 8)] == [(0xFF, 0)]
    # [0x28, 0x68): dword 0x28, 16-byte block 0x30, 32-byte block 0x40, dword 0x60
    chunks = exact_chunks(0x28, 64)
    assert [(c.start, c.end, c.mask) for c in chunks] == [
        (0x28, 0x30, 0),
        (0x30, 0x40, 4),
        (0x40, 0x60, 5),
        (0x60, 0x68, 0),
    ]
    # 2 GiB aligned is one chunk; blocks never exceed 2 GiB
    assert [c.mask for c in exact_chunks(1 << 31, 1 << 31)] == [31]
    assert [c.mask for c in exact_chunks(0, 1 << 31)] == [31]
    # the top of the address space
    assert [c.end for c in exact_chunks((1 << 64) - 16, 16)] == [1 << 64]


@pytest.mark.parametrize(("addr", "length"), [(0, 0), (0, (1 << 31) + 1), ((1 << 64) - 4, 8), (-8, 8)])
def test_exact_chunks_rejects(addr: int, length: int) -> None:
    with pytest.raises(ValueError):
        exact_chunks(addr, length)


def _bas_candidates(a: int, b: int) -> list[tuple[int, int]]:
    """Every contiguous byte run inside one doubleword within [a, b)."""
    out = []
    for s in range(a, b):
        for e in range(s + 1, min((s | 7) + 1, b) + 1):
            out.append((s, e))
    return out


def _block_candidates(a: int, b: int, lo: int, hi: int) -> list[tuple[int, int]]:
    """Aligned 2^k blocks (lo <= 2^k <= hi) intersecting [a, b)."""
    out = []
    size = lo
    while size <= hi:
        for s in range(a - a % size, b, size):
            out.append((s, s + size))
        size *= 2
    return out


def brute_min_exact(a: int, b: int) -> int:
    """Fewest chunks whose union is exactly [a, b), by exhaustive interval-cover DP
    over every BAS run and every aligned block inside the range (overlaps allowed)."""
    cands = _bas_candidates(a, b) + [(s, e) for s, e in _block_candidates(a, b, 16, 1 << 10) if a <= s and e <= b]

    @cache
    def best(p: int) -> int:
        if p >= b:
            return 0
        return 1 + min(best(e) for s, e in cands if s <= p < e)

    return best(a)


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 300), st.integers(1, 200))
def test_exact_cover_is_exact_and_minimal(addr: int, length: int) -> None:
    addr += BASE
    chunks = exact_chunks(addr, length)
    assert covered(chunks) == set(range(addr, addr + length))
    assert sum(c.size for c in chunks) == length  # disjoint
    assert len(chunks) == brute_min_exact(addr, addr + length)
    assert over_coverage(chunks, addr, length) == 0
    assert approx_chunks(addr, length, len(chunks)) == chunks
    for c in chunks:  # every chunk encodes
        c.wcr(LSC_BOTH)
        c.wvr()


# --------------------------------------------------------------------------- approximate covers


@pytest.mark.parametrize(("m", "over", "count"), [(1, 64, 1), (2, 32, 2), (3, 8, 3), (4, 0, 4), (9, 0, 4)])
def test_approx_64_byte_struct_at_0x28(m: int, over: int, count: int) -> None:
    chunks = approx_chunks(0x28, 64, m)
    assert chunks is not None
    assert covered(chunks) >= set(range(0x28, 0x68))
    assert (over_coverage(chunks, 0x28, 64), len(chunks)) == (over, count)


def test_approx_prefers_least_padding() -> None:
    # [0x1004, 0x1014) needs 3 exactly; with 2: the 16-byte block 0x1000 + lanes 0x1010..0x1014 (4 over)
    chunks = approx_chunks(0x1004, 16, 2)
    assert chunks is not None
    assert [(c.start, c.end, c.mask) for c in chunks] == [(0x1000, 0x1010, 4), (0x1010, 0x1014, 0)]


def test_approx_impossible() -> None:
    assert approx_chunks(BASE, 8, 0) is None
    assert approx_chunks(0x7FFF_FFF8, 16, 1) is None  # would need a 4 GiB block
    assert approx_chunks(3, 1 << 31, 1) is None
    two = approx_chunks(3, 1 << 31, 2)
    assert two is not None and [c.mask for c in two] == [31, 0]


def brute_min_over(a: int, b: int, m: int) -> int | None:
    """Least padding of any cover of [a, b) by <= m chunks, by trying every subset
    of trimmed doublewords and aligned blocks up to 256 bytes."""
    want = sum(1 << x for x in range(a, b))
    cands = [sum(1 << x for x in range(max(s, a), min(e, b))) for s, e in _block_candidates(a, b, 8, 8)]
    cands += [sum(1 << x for x in range(s, e)) for s, e in _block_candidates(a, b, 16, 256)]
    best: int | None = None
    for n in range(1, m + 1):
        for combo in itertools.combinations(cands, n):
            union = 0
            for c in combo:
                union |= c
            if union & want == want:
                over = (union & ~want).bit_count()
                best = over if best is None else min(best, over)
    return best


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 64), st.integers(1, 56), st.integers(1, 3))
def test_approx_cover_is_optimal(addr: int, length: int, m: int) -> None:
    chunks = approx_chunks(addr, length, m)
    expected = brute_min_over(addr, addr + length, m)
    if expected is None:
        assert chunks is None
        return
    assert chunks is not None
    assert len(chunks) <= m
    assert covered(chunks) >= set(range(addr, addr + length))
    assert over_coverage(chunks, addr, length) == expected


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 1 << 40), st.integers(1, 1 << 31), st.integers(1, 16))
def test_approx_cover_contains_range(addr: int, length: int, m: int) -> None:
    chunks = approx_chunks(addr, length, m)
    exact = exact_chunks(addr, length)
    if len(exact) <= m:
        assert chunks == exact
    if chunks is None:
        return
    assert len(chunks) <= m
    spans = sorted((c.start, c.end) for c in chunks)
    assert spans[0][0] <= addr and spans[-1][1] >= addr + length
    assert all(e1 == s2 for (_, e1), (s2, _) in itertools.pairwise(spans))  # contiguous, disjoint
    for c in chunks:
        c.wcr(LSC_BOTH)
        c.wvr()


def test_approx_is_fast() -> None:
    cases = [(BASE + 3, 1000, 4), (BASE + 3, 100, 16), (BASE + 0x28, 64, 3), ((1 << 40) + 5, 1 << 31, 16)]
    start = time.perf_counter()
    for _ in range(50):
        for addr, length, m in cases:
            approx_chunks(addr, length, m)
    per_call = (time.perf_counter() - start) / (50 * len(cases))
    assert per_call < 2e-3  # typically ~0.1 ms


# --------------------------------------------------------------------------- watchpoint matching


SIZES = (1, 2, 4, 8, 16, 32)


@pytest.mark.parametrize(
    ("size", "wr"), [(size, wr) for size in SIZES for wr in range(0, 33, size)], ids=lambda v: str(v)
)
def test_unaligned_matrix(size: int, wr: int) -> None:
    """Linux's breakpoint_test_arm64 matrix, widened: writes of 1/2/4/8/16(stp x)/32(stp q)
    bytes at every offset 0..32 in steps of the size, against watches of 1..8 bytes at
    every offset around them: a hit iff the byte ranges overlap."""
    p = BASE + 0x100
    for wsize in range(1, 9):
        for wp in range(wr - 16, wr + size + 16):
            chunks = exact_chunks(p + wp, wsize)
            want = overlaps(p + wr, size, p + wp, wsize)
            assert cover_hits(chunks, p + wr, size, True, LSC_STORE) == want, (wsize, wp)


@pytest.mark.parametrize("size", SIZES)
def test_write_below_an_8_byte_watch(size: int) -> None:
    p = BASE + 0x100
    assert cover_hits(exact_chunks(p - 8, 8), p - size, size, True, LSC_STORE)


@settings(max_examples=500, deadline=None)
@given(
    st.integers(0, 200),
    st.integers(1, 80),
    st.integers(0, 260),
    st.sampled_from((1, 2, 4, 8, 16, 32, 64)),
    st.integers(1, 4),
)
def test_chunks_hit_iff_overlap(waddr: int, wlen: int, aaddr: int, asize: int, m: int) -> None:
    waddr, aaddr = BASE + waddr, BASE + aaddr
    want = overlaps(aaddr, asize, waddr, wlen)
    assert cover_hits(exact_chunks(waddr, wlen), aaddr, asize, True) == want
    approx = approx_chunks(waddr, wlen, m)
    assert approx is not None
    hit = cover_hits(approx, aaddr, asize, False)
    assert hit == bool(covered(approx) & set(range(aaddr, aaddr + asize)))
    assert hit or not want


def test_load_store_lsc() -> None:
    for lsc, load, store in ((LSC_LOAD, True, False), (LSC_STORE, False, True), (LSC_BOTH, True, True)):
        wcr = encode_wcr(lsc, 0xFF)
        assert watch_hits(wcr, BASE, BASE, 8, is_write=False) == load
        assert watch_hits(wcr, BASE, BASE, 8, is_write=True) == store


def test_never_matching_encodings() -> None:
    good = encode_wcr(LSC_BOTH, 0xFF)
    cases = {
        "E=0": good & ~1,
        "LSC=00": good & ~hw.WCR_LSC.mask,
        "BAS=0": good & ~hw.WCR_BAS.mask,
        "MASK=1": good | hw.WCR_MASK.put(1),
        "MASK=2": good | hw.WCR_MASK.put(2),
        "WT=1 (linked)": good | hw.WCR_WT.put(1),
        "PAC=00": good & ~hw.WCR_PAC.mask,
    }
    for name, wcr in cases.items():
        for is_write in (False, True):
            for el in (0, 1):
                assert not watch_hits(wcr, BASE, BASE, 8, is_write, el), name


def test_privilege_pac() -> None:
    el1_only = encode_wcr(LSC_BOTH, 0xFF, pac=hw.PAC_EL1)
    el0_only = encode_wcr(LSC_BOTH, 0xFF, pac=hw.PAC_EL0)
    assert watch_hits(el1_only, BASE, BASE, 1, True) and not watch_hits(el1_only, BASE, BASE, 1, True, el=0)
    assert watch_hits(el0_only, BASE, BASE, 1, True, el=0) and not watch_hits(el0_only, BASE, BASE, 1, True)


def test_mask_region() -> None:
    wcr = encode_wcr(LSC_STORE, mask=6)
    wvr = BASE + 0x40
    assert watch_hits(wcr, wvr, BASE + 0x40, 1, True)
    assert watch_hits(wcr, wvr, BASE + 0x7F, 1, True)
    assert watch_hits(wcr, wvr, BASE + 0x3C, 8, True)  # straddles into the region
    assert not watch_hits(wcr, wvr, BASE + 0x80, 8, True)
    assert not watch_hits(wcr, wvr, BASE + 0x38, 8, True)
    # low WVR bits are ignored (masked off), as are BAS bits
    assert watch_hits(wcr | hw.WCR_BAS.mask, wvr + 0x18, BASE + 0x40, 1, True)
    # a 2 GiB region
    big = encode_wcr(LSC_LOAD, mask=31)
    assert watch_hits(big, 1 << 31, (1 << 32) - 1, 1, False)
    assert not watch_hits(big, 1 << 31, 1 << 32, 1, False)


def test_bas_lanes_and_deprecated_wvr_bit2() -> None:
    wcr = encode_wcr(LSC_STORE, 0b0000_0110)  # bytes 1 and 2
    assert [watch_hits(wcr, BASE, BASE + i, 1, True) for i in range(8)] == [i in (1, 2) for i in range(8)]
    # WVR bit 2 set (only 4-aligned): BAS[3:0] selects lanes of the upper word
    assert [watch_hits(wcr, BASE + 4, BASE + i, 1, True) for i in range(8)] == [i in (5, 6) for i in range(8)]
    high = encode_wcr(LSC_STORE, 0xF0)  # BAS[7:4] are ignored in that case
    assert not any(watch_hits(high, BASE + 4, BASE + i, 1, True) for i in range(8))
    # non-contiguous BAS (CONSTRAINED UNPREDICTABLE) is taken lane by lane
    odd = encode_wcr(LSC_STORE, 1) | hw.WCR_BAS.put(0b1000_0001)
    assert watch_hits(odd, BASE, BASE + 7, 1, True) and not watch_hits(odd, BASE, BASE + 3, 1, True)


def test_ress_bits_do_not_take_part() -> None:
    wcr = encode_wcr(LSC_STORE, 0xFF)
    assert watch_hits(wcr, 0xFFE0_0000_4000_1000, 0x0000_0000_4000_1000, 8, True)
    assert not watch_hits(wcr, 0xFFF0_0000_4000_1000, 0x0000_0000_4000_1000, 8, True)  # bit 52 does


# --------------------------------------------------------------------------- breakpoint matching


def test_breakpoint_hits() -> None:
    bcr, pc = encode_bcr(), 0x4000_0010
    bvr = encode_bvr(pc)
    assert breakpoint_hits(bcr, bvr, pc) and breakpoint_hits(bcr, bvr, pc, el=0)
    assert not breakpoint_hits(bcr, bvr, pc + 4)
    assert not breakpoint_hits(bcr, bvr, pc + 2)  # not an A64 pc
    assert not breakpoint_hits(bcr & ~1, bvr, pc)
    # RESS bits ignored, bit 52 compared
    assert breakpoint_hits(bcr, 0xFFE0_0000_4000_0010, pc)
    assert not breakpoint_hits(bcr, 0xFFF0_0000_4000_0010, pc)
    kernel = 0xFFFF_8000_1000_0000
    assert breakpoint_hits(bcr, encode_bvr(kernel), kernel)


@pytest.mark.parametrize(
    ("bas", "hits"), [(0b1111, True), (0b0011, True), (0b1100, False), (0b0000, False), (0b0001, False)]
)
def test_breakpoint_bas(bas: int, hits: bool) -> None:
    bcr = encode_bcr() & ~hw.BCR_BAS.mask | hw.BCR_BAS.put(bas)
    assert breakpoint_hits(bcr, 0x4000_0010, 0x4000_0010) == hits


def test_breakpoint_pmc_and_bt() -> None:
    base = encode_bcr() & ~hw.BCR_PMC.mask
    el1 = base | hw.BCR_PMC.put(hw.PMC_EL1)
    el0 = base | hw.BCR_PMC.put(hw.PMC_EL0)
    assert breakpoint_hits(el1, 0x1000, 0x1000, el=1) and not breakpoint_hits(el1, 0x1000, 0x1000, el=0)
    assert breakpoint_hits(el0, 0x1000, 0x1000, el=0) and not breakpoint_hits(el0, 0x1000, 0x1000, el=1)
    assert not breakpoint_hits(base, 0x1000, 0x1000)
    for bt in range(1, 16):  # linked, context, mismatch, VMID: unsupported
        assert not breakpoint_hits(encode_bcr() | hw.BCR_BT.put(bt), 0x1000, 0x1000)


# --------------------------------------------------------------------------- syndromes


def test_esr_values() -> None:
    assert hw.esr_breakpoint() == 0xC200_0022
    assert hw.esr_watchpoint(True) == 0xD200_0062
    assert hw.esr_watchpoint(False) == 0xD200_0022
    assert hw.esr_softstep() == 0xCB00_0022
    assert hw.esr_softstep(ex=True) == 0xCB00_0062
    assert hw.esr_softstep(ex=None) == 0xCA00_0022
    assert hw.esr_brk64(0) == 0xF200_0000
    assert hw.esr_brk64(0x800) == 0xF200_0800
    with pytest.raises(ValueError):
        hw.esr_brk64(0x10000)


def test_esr_decoders() -> None:
    assert hw.ec(hw.esr_breakpoint()) == hw.EC_BREAKPT_LOW == 0x30
    assert hw.ec(hw.esr_softstep()) == hw.EC_SOFTSTP_LOW == 0x32
    assert hw.ec(hw.esr_watchpoint(True)) == hw.EC_WATCHPT_LOW == 0x34
    assert hw.ec(hw.esr_brk64(5)) == hw.EC_BRK64 == 0x3C
    assert hw.iss(hw.esr_brk64(5)) == 5 and hw.il(hw.esr_brk64(5))
    assert hw.wnr(hw.esr_watchpoint(True)) and not hw.wnr(hw.esr_watchpoint(False))
    assert hw.ec(0xD200_0062 | 0x55 << 32) == 0x34  # hsr_high does not disturb EC
