"""The x86-64 slot table: gdb's Z1..Z4 points in the four debug address registers DR0-DR3.

Unlike arm64 (separate BRPs and WRPs), x86 has ONE pool of four address registers shared by
instruction breakpoints and data breakpoints; DR7 says what each one does.  Encodings follow the
Intel SDM vol. 3B, 18.2 "Debug Registers" (kvm-hw-debug.md section 4):

- DR7: L<i> (local enable) at bit 2i, G<i> at 2i+1, bit 10 reads as 1, R/W<i> at 16+4i (00 instruction
  execution, 01 data write, 10 I/O, 11 data read or write), LEN<i> at 18+4i (00 = 1, 01 = 2,
  11 = 4, 10 = 8 bytes).  An instruction breakpoint must have LEN 00.
- A data breakpoint watches a naturally aligned 1, 2, 4 or 8-byte block (the CPU ignores the low address
  bits), so any other region is cut into aligned pieces, one register each, all-or-nothing.
- There is no read-only data breakpoint: rwatch (Z3) is programmed as read/write (R/W = 11), the same as
  awatch, and a write to the variable is reported as a read hit.  gdb's own x86 back end instead refuses
  read watchpoints so that gdb emulates them with an access watchpoint and drops hits that changed the
  value; this table keeps Z3 so the stub can offer either (see gdbstub/x86_64.py READ_WATCHPOINTS).

Like gdbstub/slots.py, insert and remove are idempotent and cheap (gdb re-inserts everything around
every stop), ``generation`` changes only when the encoded registers do, and a refused insert changes
nothing and raises SlotError with words fit for the gdb user.
"""

from __future__ import annotations

from dataclasses import dataclass

from backends.api import X86DebugRegs
from gdbstub.slots import GdbPoint, PointKind, SlotError

__all__ = [
    "DR6_B",
    "DR6_BD",
    "DR6_BS",
    "DR7_FIXED",
    "HW_BREAK_KIND",
    "LEN_BITS",
    "NUM_DRS",
    "RW_EXEC",
    "RW_READ_WRITE",
    "RW_WRITE",
    "Piece",
    "X86Assignment",
    "X86SlotTable",
    "dr7_enable",
    "dr7_rw",
    "dr7_slot_bits",
    "is_canonical",
    "split_region",
]

NUM_DRS = 4  # DR0-DR3: every x86-64 CPU has exactly four
HW_BREAK_KIND = 1  # gdb's Z1 kind on x86 (the int3 length); DR7 LEN must be 00 for execution

RW_EXEC = 0b00
RW_WRITE = 0b01
RW_READ_WRITE = 0b11
LEN_BITS = {1: 0b00, 2: 0b01, 4: 0b11, 8: 0b10}  # DR7 LEN field for each piece size
_LEN_OF = {bits: size for size, bits in LEN_BITS.items()}

DR7_FIXED = 0x400  # bit 10 is reserved and reads as 1 (what KVM's selftests write for "nothing enabled")
DR6_B = 0xF  # B0-B3: the condition of DR<i> was met (set even if DR7 does not enable it)
DR6_BD = 1 << 13  # a debug-register access while DR7.GD is set
DR6_BS = 1 << 14  # single step (TF)

_CANON_BITS = 47  # 4-level paging: bits 63..47 are copies of bit 47


def dr7_enable(i: int) -> int:
    """DR7's local-enable bit L<i>: hardware task switches clear it, and a 64-bit guest has none."""
    return 1 << (2 * i)


def dr7_slot_bits(i: int) -> int:
    """Both enable bits of DR<i> (L<i> and G<i>), for turning a slot off whichever the encoder used."""
    return 0b11 << (2 * i)


def dr7_rw(dr7: int, i: int) -> int:
    """DR7's R/W<i> field: what kind of access DR<i> traps."""
    return (dr7 >> (16 + 4 * i)) & 0b11


def _dr7_fields(i: int, rw: int, size: int) -> int:
    return (rw | LEN_BITS[size] << 2) << (16 + 4 * i)


def is_canonical(addr: int) -> bool:
    """A 48-bit canonical linear address: the only kind a debug register can ever match."""
    top = addr >> _CANON_BITS
    return 0 <= addr < 1 << 64 and top in (0, (1 << (64 - _CANON_BITS)) - 1)


@dataclass(frozen=True)
class Piece:
    """One naturally aligned block a data breakpoint watches."""

    start: int
    size: int

    @property
    def end(self) -> int:
        return self.start + self.size


def split_region(addr: int, length: int) -> list[Piece]:
    """The fewest naturally aligned 1/2/4/8-byte pieces that cover exactly [addr, addr+length).

    Greedy from the low end: at each address take the largest block it is aligned to that still fits.
    A data breakpoint ignores its register's low address bits, so an unaligned block would silently
    watch the wrong bytes.
    """
    pieces: list[Piece] = []
    pos, end = addr, addr + length
    while pos < end:
        size = next(s for s in (8, 4, 2, 1) if pos % s == 0 and pos + s <= end)
        pieces.append(Piece(pos, size))
        pos += size
    return pieces


_RW_FOR = {
    PointKind.HW_BREAK: RW_EXEC,
    PointKind.WATCH_WRITE: RW_WRITE,
    PointKind.WATCH_READ: RW_READ_WRITE,  # no read-only breakpoint: the approximation in the module docstring
    PointKind.WATCH_ACCESS: RW_READ_WRITE,
}


@dataclass(frozen=True)
class X86Assignment:
    """Where one point lives: one DR per piece (an hbreak has a single 1-byte piece)."""

    point: GdbPoint
    slots: tuple[int, ...]
    pieces: tuple[Piece, ...]

    @property
    def rw(self) -> int:
        return _RW_FOR[PointKind(self.point.kind)]


class X86SlotTable:
    """gdb's hardware points in a shared pool of ``count`` debug address registers (4 on every CPU)."""

    def __init__(self, count: int = NUM_DRS) -> None:
        """``count`` may be below 4 when the backend reserves some registers (0: no hardware debug)."""
        if not 0 <= count <= NUM_DRS:
            raise ValueError(f"{count} debug address registers: x86-64 has 0..{NUM_DRS}")
        self.count = count
        self.generation = 0
        self._entries: dict[GdbPoint, X86Assignment] = {}
        self._owner: dict[int, X86Assignment] = {}
        self._regs = self._encode()

    # ------------------------------------------------------------------ mutation

    def insert(self, point: GdbPoint) -> None:
        """Give ``point`` its registers, or raise SlotError with nothing changed; a repeat is a no-op."""
        if point in self._entries:
            return
        pieces = self._pieces(point)
        free = [i for i in range(self.count) if i not in self._owner]
        if len(pieces) > len(free):
            used = self.count - len(free)
            need = "1 debug register" if len(pieces) == 1 else f"{len(pieces)} debug registers"
            raise SlotError(
                f"cannot {self._what(point)}: it needs {need} and {len(free)} of {self.count} are free "
                f"(x86 shares DR0-DR{self.count - 1} between hbreak and watchpoints; {used} in use)"
            )
        a = X86Assignment(point, tuple(free[: len(pieces)]), tuple(pieces))
        self._entries[point] = a
        for slot in a.slots:
            self._owner[slot] = a
        self._refresh()

    def remove(self, point: GdbPoint) -> bool:
        """Free ``point``'s registers; False if it was not there (z is idempotent too)."""
        a = self._entries.pop(point, None)
        if a is None:
            return False
        for slot in a.slots:
            del self._owner[slot]
        self._refresh()
        return True

    def clear(self) -> None:
        """Drop every point (gdb detaching, or a new connection)."""
        self._entries.clear()
        self._owner.clear()
        self._refresh()

    @staticmethod
    def _what(point: GdbPoint) -> str:
        return f"{PointKind(point.kind).gdb_name} {point.addr:#x} len {point.length}"

    def _pieces(self, point: GdbPoint) -> list[Piece]:
        kind = PointKind(point.kind)
        if self.count == 0:
            raise SlotError("this target has no hardware debug registers")
        if kind is PointKind.HW_BREAK:
            if point.length != HW_BREAK_KIND:
                raise SlotError(f"hardware breakpoint kind {point.length} is not supported: x86 uses kind 1")
            if not is_canonical(point.addr):
                raise SlotError(f"hardware breakpoint address {point.addr:#x} is not a canonical x86-64 address")
            return [Piece(point.addr, 1)]
        if point.length < 1:
            raise SlotError(f"cannot {self._what(point)}: the length must be at least 1 byte")
        last = point.addr + point.length - 1
        if not (is_canonical(point.addr) and is_canonical(last) and (point.addr >> 63) == (last >> 63)):
            raise SlotError(f"cannot {self._what(point)}: the range is not within canonical x86-64 addresses")
        pieces = split_region(point.addr, point.length)
        if len(pieces) > self.count:
            raise SlotError(
                f"cannot {self._what(point)}: it needs {len(pieces)} aligned pieces (1, 2, 4 or 8 bytes each) "
                f"and x86 has only {self.count} debug registers"
            )
        return pieces

    def _refresh(self) -> None:
        regs = self._encode()
        if regs != self._regs:
            self._regs = regs
            self.generation += 1

    def _encode(self) -> X86DebugRegs:
        regs = X86DebugRegs()
        dr7 = DR7_FIXED
        for slot, a in sorted(self._owner.items()):
            piece = a.pieces[a.slots.index(slot)]
            regs.debugreg[slot] = piece.start
            dr7 |= dr7_enable(slot) | _dr7_fields(slot, a.rw, piece.size)
        regs.debugreg[7] = dr7
        return regs

    # ------------------------------------------------------------------ queries

    def points(self) -> list[GdbPoint]:
        """Present points, in insertion order."""
        return list(self._entries)

    def assignment(self, point: GdbPoint) -> X86Assignment | None:
        return self._entries.get(point)

    def owner(self, slot: int) -> GdbPoint | None:
        """The gdb point DR<slot> belongs to (DR6 names the register that fired, so this is exact)."""
        a = self._owner.get(slot)
        return a.point if a is not None else None

    def debug_regs(self) -> X86DebugRegs:
        """DR0-DR3 and DR7 for KVM_SET_GUEST_DEBUG (a copy; rebuilt only when a point comes or goes)."""
        return self._regs.copy()

    def breakpoint_at(self, pc: int) -> GdbPoint | None:
        """The Z1 point whose instruction breakpoint is on ``pc`` (linear address, compared exactly)."""
        for a in self._entries.values():
            if a.point.kind == PointKind.HW_BREAK and a.point.addr == pc:
                return a.point
        return None

    def describe(self) -> list[str]:
        """One line per DR0-DR3, then DR7, for `monitor slots`."""
        lines: list[str] = []
        dr7 = self._regs.debugreg[7]
        for i in range(self.count):
            a = self._owner.get(i)
            if a is None:
                lines.append(f"DR{i} free")
                continue
            p = a.point
            kind = PointKind(p.kind)
            line = f"DR{i} {kind.gdb_name} {p.addr:#x} len {p.length}"
            if len(a.pieces) > 1:
                j = a.slots.index(i)
                piece = a.pieces[j]
                line += f" (piece {j + 1}/{len(a.pieces)}: {piece.start:#x} len {piece.size})"
            if kind is PointKind.WATCH_READ:
                line += " [as read/write: x86 has no read-only data breakpoint]"
            rw, size = dr7_rw(dr7, i), _LEN_OF[(dr7 >> (18 + 4 * i)) & 0b11]
            lines.append(f"{line}  dr{i}=0x{self._regs.debugreg[i]:016x} R/W={rw:02b} LEN={size}")
        lines.append(f"DR7 0x{dr7:08x}")
        return lines
