"""AArch64 self-hosted debug registers: encoding, region covers and matching.

Pure architecture rules with no state, shared by the stub (which encodes what
gdb asks for) and the simulated core (which must decide, as the hardware
would, whether a breakpoint or watchpoint fires).  Field layouts follow the
ARM ARM descriptions of DBGBCR<n>_EL1, DBGWCR<n>_EL1 and ESR_ELx; see
DESIGN.md section 4 and kvm-hw-debug.md sections 3.2-3.5.

Addresses are compared on VA bits [52:0]: bits [63:53] of DBGBVR/DBGWVR are
RESS (a sign extension of bit 52) and whether they take part in the
comparison is CONSTRAINED UNPREDICTABLE, so we always write them as the sign
extension and never rely on them when matching.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = [
    "ADDR_LIMIT",
    "BCR_BAS",
    "BCR_BT",
    "BCR_E",
    "BCR_HMC",
    "BCR_LBN",
    "BCR_PMC",
    "BCR_SSC",
    "EC_BREAKPT_LOW",
    "EC_BRK64",
    "EC_SOFTSTP_LOW",
    "EC_WATCHPT_LOW",
    "LSC_BOTH",
    "LSC_LOAD",
    "LSC_STORE",
    "MAX_ACCESS_BYTES",
    "MAX_MASK",
    "MAX_WATCH_LEN",
    "MIN_MASK",
    "PAC_EL0",
    "PAC_EL1",
    "PAC_EL1_EL0",
    "PMC_EL0",
    "PMC_EL1",
    "PMC_EL1_EL0",
    "WCR_BAS",
    "WCR_E",
    "WCR_HMC",
    "WCR_LBN",
    "WCR_LSC",
    "WCR_MASK",
    "WCR_PAC",
    "WCR_SSC",
    "WCR_WT",
    "Field",
    "WatchChunk",
    "approx_chunks",
    "breakpoint_hits",
    "canonical",
    "ec",
    "encode_bcr",
    "encode_bvr",
    "encode_wcr",
    "encode_wvr",
    "esr_breakpoint",
    "esr_brk64",
    "esr_softstep",
    "esr_watchpoint",
    "exact_chunks",
    "il",
    "iss",
    "over_coverage",
    "watch_hits",
    "wnr",
]


@dataclass(frozen=True)
class Field:
    """A bit field of a system register, so encoders and decoders share one layout."""

    shift: int
    width: int

    @property
    def mask(self) -> int:
        """The field's bits in register position."""
        return ((1 << self.width) - 1) << self.shift

    def get(self, reg: int) -> int:
        return (reg >> self.shift) & ((1 << self.width) - 1)

    def put(self, value: int) -> int:
        """``value`` moved into place; raises ValueError if it does not fit (a silent
        truncation would arm a different breakpoint than the one asked for)."""
        if not 0 <= value < (1 << self.width):
            raise ValueError(f"{value:#x} does not fit a {self.width}-bit field")
        return value << self.shift


# DBGBCR<n>_EL1
BCR_E: Final = Field(0, 1)
BCR_PMC: Final = Field(1, 2)
BCR_BAS: Final = Field(5, 4)
BCR_HMC: Final = Field(13, 1)
BCR_SSC: Final = Field(14, 2)
BCR_LBN: Final = Field(16, 4)
BCR_BT: Final = Field(20, 4)

# DBGWCR<n>_EL1
WCR_E: Final = Field(0, 1)
WCR_PAC: Final = Field(1, 2)
WCR_LSC: Final = Field(3, 2)
WCR_BAS: Final = Field(5, 8)
WCR_HMC: Final = Field(13, 1)
WCR_SSC: Final = Field(14, 2)
WCR_LBN: Final = Field(16, 4)
WCR_WT: Final = Field(20, 1)
WCR_MASK: Final = Field(24, 5)

# PMC / PAC privilege selection (with HMC = 0, SSC = 0): bit0 = EL1, bit1 = EL0.
PMC_EL1: Final = 0b01
PMC_EL0: Final = 0b10
PMC_EL1_EL0: Final = 0b11
PAC_EL1: Final = 0b01
PAC_EL0: Final = 0b10
PAC_EL1_EL0: Final = 0b11

# LSC: which accesses a watchpoint matches (0b00 is reserved and never matches).
LSC_LOAD: Final = 0b01
LSC_STORE: Final = 0b10
LSC_BOTH: Final = 0b11

MIN_MASK: Final = 3  # MASK 1 and 2 are reserved
MAX_MASK: Final = 31  # 2 GiB, the largest region one WRP can watch
MAX_WATCH_LEN: Final = 1 << MAX_MASK
# The widest single access (a DC ZVA block): bounds how far below FAR a hit can lie.
MAX_ACCESS_BYTES: Final = 64
ADDR_LIMIT: Final = 1 << 64

_VA_BITS: Final = 53  # VA[52:0] take part in comparisons; [63:53] are RESS
_VA_MASK: Final = (1 << _VA_BITS) - 1


def canonical(addr: int) -> int:
    """``addr`` with bits [63:53] set to the sign extension of bit 52 (the RESS
    rule for DBGBVR/DBGWVR).  For a TBI-tagged pointer this drops the tag."""
    _check_addr(addr)
    low = addr & _VA_MASK
    if low >> (_VA_BITS - 1):
        return low | (ADDR_LIMIT - 1 - _VA_MASK)
    return low


def _check_addr(addr: int) -> None:
    if not 0 <= addr < ADDR_LIMIT:
        raise ValueError(f"address {addr:#x} is outside the 64-bit address space")


# --------------------------------------------------------------------------- breakpoints


def encode_bcr() -> int:
    """DBGBCR for an unlinked A64 address-match breakpoint at EL1 and EL0 (0x1E7):
    a debugger wants the guest kernel and its user space alike."""
    return BCR_E.put(1) | BCR_PMC.put(PMC_EL1_EL0) | BCR_BAS.put(0b1111) | BCR_BT.put(0)


def encode_bvr(addr: int) -> int:
    """DBGBVR for an instruction at ``addr``: bits [1:0] are RES0, so an unaligned
    address is refused rather than silently rounded."""
    _check_addr(addr)
    if addr & 3:
        raise ValueError(f"breakpoint address {addr:#x} is not 4-byte aligned")
    return canonical(addr)


def breakpoint_hits(bcr: int, bvr: int, pc: int, el: int = 1) -> bool:
    """Whether this BRP fires for an A64 instruction at ``pc`` executed at ``el``.

    Modelled: E, PMC, BAS and unlinked address match (BT = 0b0000).  Linked and
    context types (any other BT) are unsupported and never match.  HMC and SSC
    are ignored: the guest runs at EL1/EL0 in one security state.  BAS 0b1111 and
    0b0011 match the instruction at BVR; 0b1100 means BVR+2 (a T32 halfword),
    which no 4-aligned A64 pc can be; any other BAS never matches.
    """
    if el not in (0, 1):
        raise ValueError(f"exception level {el} is not modelled (only EL0 and EL1)")
    if not BCR_E.get(bcr) or BCR_BT.get(bcr) != 0:
        return False
    if not BCR_PMC.get(bcr) & (PMC_EL1 if el == 1 else PMC_EL0):
        return False
    if BCR_BAS.get(bcr) not in (0b1111, 0b0011) or pc & 3:
        return False
    return (pc & _VA_MASK) >> 2 == (bvr & _VA_MASK) >> 2


# --------------------------------------------------------------------------- watchpoints


def _is_contiguous(bas: int) -> bool:
    low = bas & -bas
    return bas != 0 and (bas + low) & bas == 0


def encode_wcr(lsc: int, bas: int = 0, mask: int = 0, *, pac: int = PAC_EL1_EL0) -> int:
    """DBGWCR for an unlinked watchpoint, EL1 and EL0 by default.

    With ``mask`` = 0 the watched bytes are the ``bas`` lanes of the doubleword at
    DBGWVR; they must be non-empty and contiguous (anything else is disabled or
    CONSTRAINED UNPREDICTABLE).  With ``mask`` in 3..31 a 2^mask-byte region is
    watched and BAS must be all ones, so ``bas`` may be 0 (meaning 0xff) or 0xff.
    """
    if lsc not in (LSC_LOAD, LSC_STORE, LSC_BOTH):
        raise ValueError(f"LSC {lsc:#b} is not load (01), store (10) or both (11)")
    if pac not in (PAC_EL1, PAC_EL0, PAC_EL1_EL0):
        raise ValueError(f"PAC {pac:#b} is not a valid EL0/EL1 selection")
    if mask == 0:
        if not (0 < bas <= 0xFF and _is_contiguous(bas)):
            raise ValueError(f"BAS {bas:#04x} must select a contiguous, non-empty set of byte lanes")
    elif MIN_MASK <= mask <= MAX_MASK:
        if bas not in (0, 0xFF):
            raise ValueError(f"BAS must be 0xff with MASK={mask}, not {bas:#04x}")
        bas = 0xFF
    else:
        raise ValueError(f"MASK {mask} is reserved (valid: 0 or {MIN_MASK}..{MAX_MASK})")
    return WCR_E.put(1) | WCR_PAC.put(pac) | WCR_LSC.put(lsc) | WCR_BAS.put(bas) | WCR_MASK.put(mask) | WCR_WT.put(0)


def encode_wvr(addr: int, mask: int = 0) -> int:
    """DBGWVR for a BAS watchpoint (8-byte aligned doubleword) or a MASK one (aligned
    to 2^mask, since the masked-off bits must be zero), canonicalised."""
    _check_addr(addr)
    if mask != 0 and not MIN_MASK <= mask <= MAX_MASK:
        raise ValueError(f"MASK {mask} is reserved (valid: 0 or {MIN_MASK}..{MAX_MASK})")
    align = 8 if mask == 0 else 1 << mask
    if addr % align:
        raise ValueError(f"watchpoint base {addr:#x} is not {align}-byte aligned")
    return canonical(addr)


def watch_hits(wcr: int, wvr: int, access_addr: int, access_size: int, is_write: bool, el: int = 1) -> bool:
    """Whether this WRP fires for an access of ``access_size`` bytes at ``access_addr``.

    Architecture rules as modelled: E must be set; LSC 01 matches loads, 10 stores,
    11 both, 00 nothing; PAC bit0 admits EL1 accesses, bit1 EL0 (HMC and SSC are
    ignored: the guest runs at EL1/EL0 in one security state).  MASK 1 and 2 are
    reserved and never match; MASK 3..31 watches the aligned 2^MASK region at WVR
    (low bits and BAS ignored, as QEMU does); MASK 0 watches the BAS lanes of the
    doubleword at align_down(WVR, 8), or with WVR bit 2 set (deprecated) only
    BAS[3:0], as the upper word's lanes.  BAS 0 never matches; a non-contiguous
    BAS (CONSTRAINED UNPREDICTABLE) is taken lane by lane.  The hit is iff some
    accessed byte is watched.  Linked watchpoints (WT = 1) are out of scope and
    never match.
    """
    if el not in (0, 1):
        raise ValueError(f"exception level {el} is not modelled (only EL0 and EL1)")
    if access_size <= 0:
        raise ValueError(f"access size {access_size} must be positive")
    if not WCR_E.get(wcr) or WCR_WT.get(wcr):
        return False
    if not WCR_LSC.get(wcr) & (LSC_STORE if is_write else LSC_LOAD):
        return False
    if not WCR_PAC.get(wcr) & (PAC_EL1 if el == 1 else PAC_EL0):
        return False
    lo = access_addr & _VA_MASK
    hi = lo + access_size  # exclusive
    base = wvr & _VA_MASK
    mask = WCR_MASK.get(wcr)
    if mask:
        if mask < MIN_MASK:
            return False
        start = base & ~((1 << mask) - 1)
        return lo < start + (1 << mask) and start < hi
    bas = WCR_BAS.get(wcr)
    if base & 4:
        bas = (bas & 0xF) << 4
    dword = base & ~7
    for lane in range(8):
        if bas >> lane & 1 and lo <= dword + lane < hi:
            return True
    return False


@dataclass(frozen=True)
class WatchChunk:
    """What one WRP watches: the bytes [start, end), either as BAS lanes of the
    doubleword at ``base`` (mask = 0) or as the aligned 2^mask block at ``base``
    (bas = 0xff).  Kept as data so the slot table can describe and attribute hits."""

    base: int
    bas: int
    mask: int
    start: int
    end: int

    def __post_init__(self) -> None:
        if self.mask == 0:
            lanes = _is_contiguous(self.bas) and self.base % 8 == 0
            first = (self.bas & -self.bas).bit_length() - 1
            ok = lanes and self.start == self.base + first and self.end == self.base + self.bas.bit_length()
        else:
            ok = (
                MIN_MASK <= self.mask <= MAX_MASK
                and self.bas == 0xFF
                and self.base % (1 << self.mask) == 0
                and (self.start, self.end) == (self.base, self.base + (1 << self.mask))
            )
        if not ok or self.end > ADDR_LIMIT:
            raise ValueError(f"inconsistent watch chunk {self!r}")

    @classmethod
    def lanes(cls, start: int, end: int) -> WatchChunk:
        """A BAS chunk watching [start, end), which must lie in one doubleword."""
        base = start & ~7
        if not (start < end <= base + 8):
            raise ValueError(f"[{start:#x}, {end:#x}) is not a non-empty part of one doubleword")
        bas = ((1 << (end - start)) - 1) << (start - base)
        return cls(base, bas, 0, start, end)

    @classmethod
    def block(cls, base: int, mask: int) -> WatchChunk:
        """A MASK chunk watching the aligned 2^mask bytes at ``base``."""
        return cls(base, 0xFF, mask, base, base + (1 << mask))

    @property
    def size(self) -> int:
        return self.end - self.start

    def wcr(self, lsc: int, *, pac: int = PAC_EL1_EL0) -> int:
        return encode_wcr(lsc, self.bas, self.mask, pac=pac)

    def wvr(self) -> int:
        return encode_wvr(self.base, self.mask)


def _check_range(addr: int, length: int) -> None:
    _check_addr(addr)
    if not 1 <= length <= MAX_WATCH_LEN:
        raise ValueError(f"watch length {length} is outside 1..{MAX_WATCH_LEN}")
    if addr + length > ADDR_LIMIT:
        raise ValueError(f"[{addr:#x}, +{length:#x}) runs past the end of the address space")


def _dword_or_block(base: int, mask: int) -> WatchChunk:
    # A whole doubleword is written as BAS=0xff rather than MASK=3 (same bytes,
    # and what gdb and Linux use).
    return WatchChunk.lanes(base, base + 8) if mask == 3 else WatchChunk.block(base, mask)


def exact_chunks(addr: int, length: int) -> list[WatchChunk]:
    """The fewest chunks that watch exactly [addr, addr+length).

    Greedy from the left: a partial doubleword at either edge is one BAS chunk;
    from an aligned position, take the largest aligned power-of-two block (up to
    2 GiB) that fits in what is left.  This is optimal: edge bytes can only be
    watched by a BAS chunk, and the minimum partition of an aligned interval into
    aligned power-of-two blocks is the greedy one (checked by brute force in the
    tests).
    """
    _check_range(addr, length)
    end = addr + length
    chunks: list[WatchChunk] = []
    p = addr
    while p < end:
        if p & 7 or end - p < 8:
            stop = min((p | 7) + 1, end)
            chunks.append(WatchChunk.lanes(p, stop))
            p = stop
            continue
        align = (p & -p).bit_length() - 1 if p else 64
        k = min(align, (end - p).bit_length() - 1, MAX_MASK)
        chunks.append(_dword_or_block(p, k))
        p += 1 << k
    return chunks


def over_coverage(chunks: list[WatchChunk], addr: int, length: int) -> int:
    """Bytes watched outside [addr, addr+length), summed over chunks (the padding
    whose hits the stub has to step over invisibly)."""
    end = addr + length
    return sum(c.size - max(0, min(c.end, end) - max(c.start, addr)) for c in chunks)


_Option = tuple[int, int, tuple[WatchChunk, ...]] | None  # (over-coverage, chunks, cover)


def _better(x: _Option, y: _Option) -> _Option:
    if x is None:
        return y
    if y is None:
        return x
    return x if (x[0], x[1]) <= (y[0], y[1]) else y


def _join(x: _Option, y: _Option) -> _Option:
    if x is None or y is None:
        return None
    return (x[0] + y[0], x[1] + y[1], x[2] + y[2])


def _convolve(left: list[_Option], right: list[_Option]) -> list[_Option]:
    out: list[_Option] = []
    for c in range(len(left)):
        best: _Option = None
        for c1 in range(c + 1):
            best = _better(best, _join(left[c1], right[c - c1]))
        out.append(best)
    return out


def approx_chunks(addr: int, length: int, max_chunks: int) -> list[WatchChunk] | None:
    """A cover of [addr, addr+length) by at most ``max_chunks`` chunks with the
    least over-coverage (ties: fewer chunks); exact when that fits.  None when no
    such cover exists (the range would need a block above 2 GiB, or max_chunks = 0).

    Algorithm: an optimal cover can be taken to be disjoint aligned power-of-two
    blocks of doublewords (two such blocks are nested or disjoint, and a nested
    one is useless); a single-doubleword block is a BAS chunk trimmed to the range
    and so costs nothing.  These blocks are the nodes of a binary trie over the
    doubleword index, so a tree DP gives, for each node v and budget c, the
    cheapest cover of v's part of the range with at most c chunks: either v whole
    (one MASK chunk), or the best split of c between v's two children.  Nodes
    outside the range cost 0 with 0 chunks and nodes inside it 0 with 1 chunk, so
    only the <= 2 boundary nodes per level (<= 58 nodes) need work: O(58 * c)
    plus one O(c^2) convolution where the two boundary paths meet.  Exhaustive
    over all aligned candidate blocks, and well under a millisecond for c <= 16.
    """
    _check_range(addr, length)
    if max_chunks < 0:
        raise ValueError(f"max_chunks {max_chunks} is negative")
    end = addr + length
    m = max_chunks
    lo_dw, hi_dw = addr >> 3, (end - 1) >> 3  # inclusive doubleword indices
    top_level = MAX_MASK - 3  # a level-k node is 2^k doublewords = 2^(k+3) bytes

    empty: list[_Option] = [(0, 0, ())] * (m + 1)

    def node(k: int, i: int) -> tuple[str, list[_Option]]:
        start, stop = i << (k + 3), (i + 1) << (k + 3)
        if stop <= addr or start >= end:
            return "empty", empty
        if addr <= start and stop <= end:
            return "full", [None] + [(0, 1, (_dword_or_block(start, k + 3),))] * m
        if k == 0:
            return "part", [None] + [(0, 1, (WatchChunk.lanes(max(start, addr), min(stop, end)),))] * m
        over = (stop - start) - (min(stop, end) - max(start, addr))
        whole: _Option = (over, 1, (WatchChunk.block(start, k + 3),))
        (ltag, left), (rtag, right) = node(k - 1, 2 * i), node(k - 1, 2 * i + 1)
        split: list[_Option]
        if ltag == "empty" or rtag == "empty":
            split = right if ltag == "empty" else left
        elif ltag == "full" or rtag == "full":
            # A full child costs exactly one chunk and no padding: no search needed.
            one, other = (left[1], right) if ltag == "full" else (right[1], left)
            split = [None, *(_join(other[c - 1], one) for c in range(1, m + 1))]
        else:
            split = _convolve(left, right)
        return "part", [split[0]] + [_better(whole, split[c]) for c in range(1, m + 1)]

    level = (lo_dw ^ hi_dw).bit_length()  # smallest level whose node holds the whole range
    if level <= top_level:
        best = node(level, lo_dw >> level)[1]
    else:
        best = empty
        for i in range(lo_dw >> top_level, (hi_dw >> top_level) + 1):
            best = _convolve(best, node(top_level, i)[1])
    result = best[m]
    if result is None:
        return None
    return sorted(result[2], key=lambda c: c.start)


# --------------------------------------------------------------------------- syndromes

EC_BREAKPT_LOW: Final = 0x30
EC_SOFTSTP_LOW: Final = 0x32
EC_WATCHPT_LOW: Final = 0x34
EC_BRK64: Final = 0x3C

_IL: Final = 1 << 25
_DEBUG_FSC: Final = 0x22  # IFSC/DFSC "debug exception"
_WNR: Final = 1 << 6
_ISV: Final = 1 << 24
_EX: Final = 1 << 6


def _esr(ec_value: int, iss_value: int) -> int:
    return ec_value << 26 | _IL | iss_value


def esr_breakpoint() -> int:
    """ESR of a hardware breakpoint taken from EL1/EL0 to EL2 (0xC2000022)."""
    return _esr(EC_BREAKPT_LOW, _DEBUG_FSC)


def esr_watchpoint(is_write: bool) -> int:
    """ESR of a watchpoint from a lower EL: 0xD2000062 for a store, 0xD2000022 for a load."""
    return _esr(EC_WATCHPT_LOW, _DEBUG_FSC | (_WNR if is_write else 0))


def esr_softstep(ex: bool | None = False) -> int:
    """ESR of a software-step exception from a lower EL.

    ``ex`` False (the default) gives ISV=1, EX=0: 0xCB000022, the value measured on
    real KVM after an ordinary instruction; True gives ISV=1, EX=1 (a load-exclusive
    was stepped), 0xCB000062; None gives ISV=0 (EX not known), 0xCA000022.
    """
    if ex is None:
        return _esr(EC_SOFTSTP_LOW, _DEBUG_FSC)
    return _esr(EC_SOFTSTP_LOW, _ISV | _DEBUG_FSC | (_EX if ex else 0))


def esr_brk64(imm16: int) -> int:
    """ESR of an A64 BRK #imm16 (EC 0x3C, IL=1, ISS = the immediate)."""
    if not 0 <= imm16 <= 0xFFFF:
        raise ValueError(f"BRK immediate {imm16:#x} does not fit 16 bits")
    return _esr(EC_BRK64, imm16)


def ec(esr: int) -> int:
    """Exception class, ESR bits [31:26]."""
    return (esr >> 26) & 0x3F


def il(esr: int) -> bool:
    return bool(esr & _IL)


def iss(esr: int) -> int:
    return esr & 0x1FFFFFF


def wnr(esr: int) -> bool:
    """For a watchpoint syndrome: True if the access was a write."""
    return bool(esr & _WNR)
