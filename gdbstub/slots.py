"""The hardware slot table: which gdb Z1..Z4 point owns which BRP/WRP.

gdb re-inserts every breakpoint and watchpoint around each stop, so insert and
remove are idempotent and cheap, and ``generation`` lets the caller push the
encoded registers (KVM_SET_GUEST_DEBUG) only when they really changed.  An
insert is all-or-nothing: when slots run out the table is left untouched and
SlotError says why, in words fit for the gdb user.

Addresses are kept as gdb sent them and are canonicalised (bits [63:53] as the
sign extension of bit 52, which also drops a TBI tag) for encoding and matching,
as the debug hardware compares them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from backends.api import MAX_DBG_REGS, DebugRegs
from gdbstub.hwdebug import (
    ADDR_LIMIT,
    LSC_BOTH,
    LSC_LOAD,
    LSC_STORE,
    MAX_ACCESS_BYTES,
    MAX_WATCH_LEN,
    WatchChunk,
    approx_chunks,
    canonical,
    encode_bcr,
    encode_bvr,
    exact_chunks,
    over_coverage,
)

__all__ = [
    "A64_INSN_LEN",
    "Assignment",
    "GdbPoint",
    "PointKind",
    "SlotError",
    "SlotTable",
]

A64_INSN_LEN = 4  # the only Z1 kind an A64 target accepts


class PointKind(enum.IntEnum):
    """gdb's Z packet type (Z0, software breakpoints, is not a slot's business)."""

    HW_BREAK = 1
    WATCH_WRITE = 2
    WATCH_READ = 3
    WATCH_ACCESS = 4

    @property
    def is_watch(self) -> bool:
        return self is not PointKind.HW_BREAK

    @property
    def lsc(self) -> int:
        """DBGWCR.LSC for this watch kind."""
        return {
            PointKind.WATCH_WRITE: LSC_STORE,
            PointKind.WATCH_READ: LSC_LOAD,
            PointKind.WATCH_ACCESS: LSC_BOTH,
        }[self]

    @property
    def gdb_name(self) -> str:
        """The gdb command that makes this kind, for messages."""
        return ("hbreak", "watch", "rwatch", "awatch")[self - 1]


@dataclass(frozen=True)
class GdbPoint:
    """One Z1..Z4 request; ``length`` is the packet's kind/length field."""

    kind: PointKind
    addr: int
    length: int


class SlotError(Exception):
    """An insert the hardware cannot honour; the message is shown to the gdb user."""


@dataclass(frozen=True)
class Assignment:
    """Where one point lives: its BRP (one slot, no chunks) or its WRPs, one per chunk."""

    point: GdbPoint
    slots: tuple[int, ...]
    chunks: tuple[WatchChunk, ...] = ()
    exact: bool = True
    padding: int = 0  # bytes watched outside the point's range (approximate covers)

    @property
    def start(self) -> int:
        """The canonical first byte of the point's range."""
        return canonical(self.point.addr)

    @property
    def end(self) -> int:
        return self.start + self.point.length


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


class SlotTable:
    """gdb's hardware points mapped onto ``brps`` BRPs and ``wrps`` WRPs."""

    def __init__(self, brps: int, wrps: int) -> None:
        """Counts come from the backend's capabilities (0 means the target has none)."""
        for name, count in (("breakpoint", brps), ("watchpoint", wrps)):
            if not 0 <= count <= MAX_DBG_REGS:
                raise ValueError(f"{count} hardware {name} registers: must be 0..{MAX_DBG_REGS}")
        self.brps = brps
        self.wrps = wrps
        self.generation = 0
        self._entries: dict[GdbPoint, Assignment] = {}
        self._regs = DebugRegs()

    # ------------------------------------------------------------------ mutation

    def insert(self, point: GdbPoint) -> None:
        """Give ``point`` its slots, or raise SlotError with nothing changed.
        Inserting a point already present is a no-op."""
        if point in self._entries:
            return
        kind = PointKind(point.kind)
        if kind is PointKind.HW_BREAK:
            assignment = self._place_breakpoint(point)
        else:
            assignment = self._place_watch(point, kind)
        self._entries[point] = assignment
        self._refresh()

    def remove(self, point: GdbPoint) -> bool:
        """Free ``point``'s slots; False if it was not there (z is idempotent too)."""
        if self._entries.pop(point, None) is None:
            return False
        self._refresh()
        return True

    def clear(self) -> None:
        """Drop every point (gdb detaching or a new connection)."""
        self._entries.clear()
        self._refresh()

    def _refresh(self) -> None:
        regs = self._encode()
        if regs != self._regs:
            self._regs = regs
            self.generation += 1

    def _encode(self) -> DebugRegs:
        regs = DebugRegs()
        for a in self._entries.values():
            if a.point.kind == PointKind.HW_BREAK:
                regs.bcr[a.slots[0]] = encode_bcr()
                regs.bvr[a.slots[0]] = encode_bvr(a.point.addr)
            else:
                lsc = PointKind(a.point.kind).lsc
                for slot, chunk in zip(a.slots, a.chunks, strict=True):
                    regs.wcr[slot] = chunk.wcr(lsc)
                    regs.wvr[slot] = chunk.wvr()
        return regs

    def _used(self, watch: bool) -> set[int]:
        return {s for a in self._entries.values() if PointKind(a.point.kind).is_watch == watch for s in a.slots}

    def _place_breakpoint(self, point: GdbPoint) -> Assignment:
        if point.length != A64_INSN_LEN:
            raise SlotError(
                f"hardware breakpoint kind {point.length} is not supported: "
                f"A64 instructions are {A64_INSN_LEN} bytes (kind {A64_INSN_LEN})"
            )
        if not 0 <= point.addr < ADDR_LIMIT:
            raise SlotError(f"hardware breakpoint address {point.addr:#x} is outside the 64-bit address space")
        if point.addr % A64_INSN_LEN:
            raise SlotError(f"hardware breakpoint address {point.addr:#x} is not 4-byte aligned (A64 instructions are)")
        if self.brps == 0:
            raise SlotError("this target has no hardware breakpoints")
        used = self._used(watch=False)
        free = [i for i in range(self.brps) if i not in used]
        if not free:
            raise SlotError(f"no free hardware breakpoint ({len(used)} of {self.brps} in use)")
        return Assignment(point, (free[0],))

    def _place_watch(self, point: GdbPoint, kind: PointKind) -> Assignment:
        what = f"{kind.gdb_name} {point.addr:#x} len {point.length}"
        if not 1 <= point.length <= MAX_WATCH_LEN:
            raise SlotError(f"cannot {what}: the length must be 1..{MAX_WATCH_LEN} bytes (2 GiB)")
        if point.addr < 0 or point.addr + point.length > ADDR_LIMIT:
            raise SlotError(f"cannot {what}: the range runs past the end of the 64-bit address space")
        start = canonical(point.addr)
        if start + point.length > ADDR_LIMIT:
            raise SlotError(f"cannot {what}: the range runs past the end of the address space once canonical")
        if self.wrps == 0:
            raise SlotError("this target has no hardware watchpoints")
        used = self._used(watch=True)
        free = [i for i in range(self.wrps) if i not in used]
        if not free:
            raise SlotError(f"no free hardware watchpoint ({len(used)} of {self.wrps} in use)")
        exact = exact_chunks(start, point.length)
        if len(exact) <= len(free):
            return Assignment(point, tuple(free[: len(exact)]), tuple(exact))
        approx = approx_chunks(start, point.length, len(free))
        if approx is None:
            raise SlotError(
                f"cannot {what}: an exact cover needs {_plural(len(exact), 'hardware watchpoint')} and no "
                f"cover by the {len(free)} free ones exists ({len(used)} of {self.wrps} in use)"
            )
        pad = over_coverage(approx, start, point.length)
        return Assignment(
            point,
            tuple(free[: len(approx)]),
            tuple(approx),
            exact=pad == 0,
            padding=pad,
        )

    # ------------------------------------------------------------------ queries

    def points(self) -> list[GdbPoint]:
        """Present points, in insertion order."""
        return list(self._entries)

    def assignment(self, point: GdbPoint) -> Assignment | None:
        return self._entries.get(point)

    def debug_regs(self) -> DebugRegs:
        """The encoded registers for KVM_SET_GUEST_DEBUG (a copy of the cached set,
        rebuilt only when a point comes or goes)."""
        return self._regs.copy()

    def breakpoint_at(self, pc: int) -> GdbPoint | None:
        """The Z1 point a breakpoint exit at ``pc`` belongs to (canonical match, as the BRP compares)."""
        if not 0 <= pc < ADDR_LIMIT:
            return None
        target = canonical(pc)
        for a in self._entries.values():
            if a.point.kind == PointKind.HW_BREAK and a.start == target:
                return a.point
        return None

    def _watches(self) -> list[Assignment]:
        return [a for a in self._entries.values() if PointKind(a.point.kind).is_watch]

    def is_padding(self, far: int) -> bool:
        """True if ``far`` is a byte some WRP watches only as padding of an approximate
        cover: no point's range holds it."""
        if not 0 <= far < ADDR_LIMIT:
            return False
        far = canonical(far)
        every = self._watches()
        if any(a.start <= far < a.end for a in every):
            return False
        return any(c.start <= far < c.end for a in every for c in a.chunks)

    def watch_for(self, far: int, is_write: bool | None = None, access_size: int = MAX_ACCESS_BYTES) -> GdbPoint | None:
        """The watch point a watchpoint exit with FAR = ``far`` belongs to, or None for
        a padding hit that the caller should step over without telling gdb.

        FAR is the lowest address accessed or a watched byte the access touched, and
        may lie below the watched range (stp/ldp, stp q, DC ZVA on some cores):
        1. a point whose range holds ``far`` wins;
        2. else a point starting less than ``access_size`` above ``far`` may have been
           reached by a wide access: the nearest such point wins (the caller passes the
           size the trapped instruction can access, when it knows it; 64 bytes otherwise);
        3. else, if ``far`` is padding of an approximate cover, no point can have been
           touched: None;
        4. else the nearest point by distance (Linux's rule), None if there are none.
        Address decides first; ``is_write`` (the ESR's WnR) only breaks ties, in favour
        of points of that direction (`watch` and `rwatch` on one variable), because
        WnR is not a reliable guide for every instruction (atomics, cache maintenance).
        Remaining ties go to the earliest inserted point.  This assumes FAR never lies
        above the lowest watched byte the access touched, which holds for every FAR
        behaviour observed (kvm-hw-debug.md 3.4).
        """
        if not 0 <= far < ADDR_LIMIT:
            return None
        far = canonical(far)
        cands = self._watches()

        def other_direction(a: Assignment) -> bool:
            kind = PointKind(a.point.kind)
            if is_write is None or kind is PointKind.WATCH_ACCESS:
                return False
            return (kind is PointKind.WATCH_WRITE) != is_write

        def distance(a: Assignment) -> int:
            return a.start - far if far < a.start else max(0, far - (a.end - 1))

        inside = [a for a in cands if a.start <= far < a.end]
        if inside:
            return min(inside, key=other_direction).point
        reach = [a for a in cands if a.start - access_size < far < a.start]
        if reach:
            return min(reach, key=lambda a: (distance(a), other_direction(a))).point
        if self.is_padding(far) or not cands:
            return None
        return min(cands, key=lambda a: (distance(a), other_direction(a))).point

    def describe(self) -> list[str]:
        """One line per BRP, then per WRP, for `monitor slots`."""
        by_slot: dict[tuple[bool, int], tuple[Assignment, int]] = {}
        for a in self._entries.values():
            for j, slot in enumerate(a.slots):
                by_slot[(PointKind(a.point.kind).is_watch, slot)] = (a, j)
        lines: list[str] = []
        for i in range(self.brps):
            if (False, i) not in by_slot:
                lines.append(f"BRP{i} free")
                continue
            a, _ = by_slot[(False, i)]
            lines.append(
                f"BRP{i} hbreak {a.point.addr:#x}  bcr=0x{self._regs.bcr[i]:08x} bvr=0x{self._regs.bvr[i]:016x}"
            )
        for i in range(self.wrps):
            if (True, i) not in by_slot:
                lines.append(f"WRP{i} free")
                continue
            a, j = by_slot[(True, i)]
            chunk = a.chunks[j]
            if a.exact:
                how = "exact"
            else:
                pad = over_coverage([chunk], a.start, a.point.length)
                how = f"approximate, {_plural(pad, 'padding byte')}"
            p = a.point
            lines.append(
                f"WRP{i} {PointKind(p.kind).gdb_name} {p.addr:#x} len {p.length} "
                f"(chunk {j + 1}/{len(a.chunks)}, {how})  "
                f"wcr=0x{self._regs.wcr[i]:08x} wvr=0x{self._regs.wvr[i]:016x}  "
                f"watches [{chunk.start:#x}, {chunk.end:#x})"
            )
        return lines
