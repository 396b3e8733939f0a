"""The x86-64 architecture for the debugger core (gdbstub/arch.py's Arch interface).

One register table drives target.xml, g/G, p/P and the registers expedited at stops (as in
gdbstub/aarch64.py).  The names and features are the ones gdb's amd64 target-description code looks
up (org.gnu.gdb.i386.core, .sse, .segments); there is no org.gnu.gdb.i386.linux feature (orig_rax)
because the guest is a whole machine, not a Linux process.  The backend (backends/kvm/x86.py) uses
exactly these register names.

Debug exits follow KVM's struct kvm_debug_exit_arch (kvm-hw-debug.md section 4): ``exception`` 1 (#DB)
with DR6 saying why and DR7 the debug control in force, or 3 (#BP) for an int3 with the PC on it.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

from backends.api import X86_BP_VECTOR, X86_DB_VECTOR, Capabilities, Exit, X86DebugRegs
from gdbstub.arch import Decoded, Event
from gdbstub.regtable import Reg, RegisterTable
from gdbstub.slots import GdbPoint, PointKind
from gdbstub.x86_slots import (
    DR6_BD,
    DR6_BS,
    DR7_FIXED,
    NUM_DRS,
    RW_EXEC,
    RW_WRITE,
    X86SlotTable,
    dr7_rw,
    dr7_slot_bits,
)

CORE = "org.gnu.gdb.i386.core"
SSE = "org.gnu.gdb.i386.sse"
SEGMENTS = "org.gnu.gdb.i386.segments"

NAME = "x86_64"
PC = "rip"
WATCH_BEFORE_ACCESS = False  # data breakpoints trap after the access: resuming cannot re-fire them
IDLE_GUEST_OWNS_DEBUG = False  # the x86 guests have no IDT: their own int3 must stay a stop gdb sees
NARROWED: frozenset[str] = frozenset()  # eflags and the selectors come from the backend as gdb's 32 bits
SW_BREAK = b"\xcc"  # int3
SW_BREAK_KIND = 1  # gdb's Z0 kind on x86: the breakpoint's length
# True: Z3 (rwatch) is accepted and programmed read/write (x86 has no read-only data breakpoint), so a
# write to the variable stops as a read.  gdb's native x86 code refuses read watchpoints instead, and
# gdb then emulates rwatch with an access watchpoint, ignoring hits that changed the value; a core
# that answers Z3 with an empty reply when this is False gets that behaviour.
READ_WATCHPOINTS = False  # the session answers Z3 with an empty reply: gdb falls back to Z4


_GPRS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp") + tuple(f"r{i}" for i in range(8, 16))
_SEGS = ("cs", "ss", "ds", "es", "fs", "gs")
_FPU_CTRL = ("fctrl", "fstat", "ftag", "fiseg", "fioff", "foseg", "fooff", "fop")


def _table() -> tuple[Reg, ...]:
    """gdb's amd64 order (0-15 GPRs, 16 rip, 17 eflags, 18-23 selectors, 24-31 st, 32-39 x87 control,
    40-55 xmm, 56 mxcsr), then the segment bases: gdb maps by name, but the usual order keeps
    transcripts comparable with other stubs."""
    ptr = {"rbp": "data_ptr", "rsp": "data_ptr"}
    regs = [Reg(n, 64, ptr.get(n, "int64"), CORE) for n in _GPRS]
    regs += [Reg("rip", 64, "code_ptr", CORE), Reg("eflags", 32, "i386_eflags", CORE)]
    regs += [Reg(n, 32, "int32", CORE) for n in _SEGS]
    regs += [Reg(f"st{i}", 80, "i387_ext", CORE) for i in range(8)]
    regs += [Reg(n, 32, "int", CORE, "float") for n in _FPU_CTRL]
    regs += [Reg(f"xmm{i}", 128, "vec128", SSE) for i in range(16)]
    regs += [Reg("mxcsr", 32, "i386_mxcsr", SSE, "vector")]
    regs += [Reg("fs_base", 64, "int", SEGMENTS), Reg("gs_base", 64, "int", SEGMENTS)]
    return tuple(regs)


REGISTERS: tuple[Reg, ...] = _table()
REGNUM: dict[str, int] = {r.name: i for i, r in enumerate(REGISTERS)}
_TABLE = RegisterTable(REGISTERS)
G_SIZE = _TABLE.g_size
encode_reg = _TABLE.encode_reg
decode_reg = _TABLE.decode_reg
encode_g = _TABLE.encode_g
decode_g = _TABLE.decode_g
# gdb needs pc, sp and the frame pointer at every stop: sending them saves a `g` per step.
EXPEDITED: tuple[int, ...] = (REGNUM["rip"], REGNUM["rsp"], REGNUM["rbp"])

_EFLAGS_FIELDS = (
    ("CF", 0), ("PF", 2), ("AF", 4), ("ZF", 6), ("SF", 7), ("TF", 8), ("IF", 9), ("DF", 10),
    ("OF", 11), ("NT", 14), ("RF", 16), ("VM", 17), ("AC", 18), ("VIF", 19), ("VIP", 20), ("ID", 21),
)  # fmt: skip
_MXCSR_FIELDS = (
    ("IE", 0), ("DE", 1), ("ZE", 2), ("OE", 3), ("UE", 4), ("PE", 5), ("DAZ", 6), ("IM", 7), ("DM", 8),
    ("ZM", 9), ("OM", 10), ("UM", 11), ("PM", 12), ("FZ", 15),
)  # fmt: skip
# The 128-bit views gdb users know from native amd64 debugging (`p $xmm0.v4_int32`).
_VEC128 = (
    ("v8_bfloat16", "bfloat16", 8), ("v8_half", "ieee_half", 8), ("v4_float", "ieee_single", 4),
    ("v2_double", "ieee_double", 2), ("v16_int8", "int8", 16), ("v8_int16", "int16", 8),
    ("v4_int32", "int32", 4), ("v2_int64", "int64", 2),
)  # fmt: skip


def _flags(ident: str, fields: tuple[tuple[str, int], ...]) -> list[str]:
    out = [f'    <flags id="{ident}" size="4">']
    out += [f'      <field name="{n}" start="{b}" end="{b}"/>' for n, b in fields]
    return out + ["    </flags>"]


def _vec128() -> list[str]:
    out = [f'    <vector id="x86_{name}" type="{t}" count="{n}"/>' for name, t, n in _VEC128]
    out.append('    <union id="vec128">')
    out += [f'      <field name="{name}" type="x86_{name}"/>' for name, _, _ in _VEC128]
    out.append('      <field name="uint128" type="uint128"/>')
    return out + ["    </union>"]


@cache
def target_xml() -> bytes:
    """The whole description in one annex (no xi:include round trips)."""
    out = ['<?xml version="1.0"?>', '<!DOCTYPE target SYSTEM "gdb-target.dtd">', "<target>",
           "  <architecture>i386:x86-64</architecture>"]  # fmt: skip
    for feature in (CORE, SSE, SEGMENTS):
        out.append(f'  <feature name="{feature}">')
        if feature == CORE:
            out += _flags("i386_eflags", _EFLAGS_FIELDS)
        elif feature == SSE:
            out += _vec128() + _flags("i386_mxcsr", _MXCSR_FIELDS)
        out += _TABLE.xml_regs(feature)
        out.append("  </feature>")
    out.append("</target>")
    return ("\n".join(out) + "\n").encode()


def narrow(name: str, value: int) -> int:
    """Nothing to narrow: the backend already gives eflags and the selectors as 32-bit values."""
    return value


def widen(name: str, value: int, current: int) -> int:
    return value


def sw_break_ok(addr: int, kind: int) -> bool:
    """int3 is one byte and may go anywhere."""
    return kind == SW_BREAK_KIND and 0 <= addr < 1 << 64


def new_slot_table(caps: Capabilities) -> X86SlotTable:
    """One pool for both kinds: KVM does not report x86 counts, so backends say 4 for each."""
    return X86SlotTable(min(NUM_DRS, max(caps.hw_breakpoints, caps.hw_watchpoints)))


def decode_exit(ex: Exit) -> Decoded:
    """What a KVM_EXIT_DEBUG means.

    DR6's B<i> bits may be set for a register whose condition matched while DR7 left it disabled
    (SDM 18.2.3), e.g. the breakpoint the core disabled to step off it; only slots DR7 enabled count.
    A data breakpoint that fired during a single step wins over the step: the access happened, and
    gdb must see it (as it does natively).  Among several data hits a write-only register is the
    surest evidence of what the access was.
    """
    if ex.exception == X86_BP_VECTOR:
        return Decoded(Event.SWBREAK, detail=f"int3 at {ex.pc:#x}")
    if ex.exception != X86_DB_VECTOR:
        return Decoded(Event.OTHER, detail=f"exception {ex.exception}")
    dr6, dr7 = ex.dr6, ex.dr7
    if not dr7 & DR7_FIXED:
        return _decode_without_dr7(dr6, dr7)
    fired = [i for i in range(NUM_DRS) if dr6 >> i & 1 and dr7 & dr7_slot_bits(i)]
    data = [i for i in fired if dr7_rw(dr7, i) != RW_EXEC]
    if data:
        writes = [i for i in data if dr7_rw(dr7, i) == RW_WRITE]
        slot = (writes or data)[0]
        return Decoded(Event.WATCH, is_write=True if writes else None, slot=slot, detail=f"DR{slot} dr6={dr6:#x}")
    if dr6 & DR6_BS:
        return Decoded(Event.STEP)
    if fired:
        return Decoded(Event.HWBREAK, slot=fired[0], detail=f"DR{fired[0]}")
    if dr6 & DR6_BD:
        return Decoded(Event.OTHER, detail=f"debug-register access with DR7.GD set, dr6={dr6:#x}")
    return Decoded(Event.OTHER, detail=f"#DB dr6={dr6:#x} dr7={dr7:#x}")


def _decode_without_dr7(dr6: int, dr7: int) -> Decoded:
    """An exit whose DR7 is not a DR7 (bit 10 always reads 1): some hosts (PVM) leave the field stale.
    Without it, B<i> cannot be told from a disabled slot's match, nor a data hit from an instruction
    breakpoint: a step is a step, and a B<i> alone is taken for the instruction breakpoint it most
    likely is (gdb checks its own breakpoint table at the pc either way)."""
    if dr6 & DR6_BS:
        return Decoded(Event.STEP, detail=f"no DR7 in the exit ({dr7:#x})")
    b = [i for i in range(NUM_DRS) if dr6 >> i & 1]
    if b:
        why = f"DR{b[0]}, taken for an instruction breakpoint: no DR7 ({dr7:#x})"
        return Decoded(Event.HWBREAK, slot=b[0], detail=why)
    return Decoded(Event.OTHER, detail=f"#DB dr6={dr6:#x} with no DR7 ({dr7:#x})")


def watch_point(table: X86SlotTable, d: Decoded, code_at_pc: Callable[[], bytes | None]) -> GdbPoint | None:
    """The watch point owning the DR that fired: DR6 names it, so there is nothing to guess."""
    if d.slot is None:
        return None
    point = table.owner(d.slot)
    return point if point is not None and PointKind(point.kind).is_watch else None


def step_over_regs(table: X86SlotTable, pc: int, no_watch: bool) -> X86DebugRegs:
    """The table's registers with the instruction breakpoint on pc (and every data breakpoint if
    no_watch) disabled, for one step: KVM does not set RF, so resuming on a breakpoint re-hits it."""
    regs = table.debug_regs()
    dr7 = regs.debugreg[7]
    for i in range(table.count):
        enabled = dr7 & dr7_slot_bits(i)
        if not enabled:
            continue
        is_exec = dr7_rw(dr7, i) == RW_EXEC
        if (is_exec and regs.debugreg[i] == pc) or (no_watch and not is_exec):
            dr7 &= ~dr7_slot_bits(i)
    regs.debugreg[7] = dr7
    return regs


def guest_exception(ex: Exit, get: Callable[[str], int]) -> dict[str, int]:
    """Not done on x86 yet (it would be KVM_GUESTDBG_INJECT_BP): the guest's own int3 stops in gdb."""
    return {}


def guest_debug_regs(get: Callable[[str], int], brps: int, wrps: int) -> X86DebugRegs | None:
    """The guest's own debug registers are not merged on x86 (its DR7 is the guest's business)."""
    return None


def guest_takes_debug(get: Callable[[str], int]) -> bool:
    return False
