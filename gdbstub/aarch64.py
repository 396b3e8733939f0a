"""The aarch64 target description: one register table drives target.xml, g/G, p/P and
the registers expedited in stop replies, so they can never disagree (the classic
"Remote 'g' packet reply is too long" bug of stubs that keep them apart).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

from backends.api import (
    EC_BKPT32,
    EC_BREAKPT_LOW,
    EC_BRK64,
    EC_SOFTSTP_LOW,
    EC_WATCHPT_LOW,
    Capabilities,
    DebugRegs,
    Exit,
)
from gdbstub.arch import Decoded, Event
from gdbstub.regtable import Reg, RegisterTable
from gdbstub.slots import GdbPoint, SlotTable

CORE = "org.gnu.gdb.aarch64.core"
FPU = "org.gnu.gdb.aarch64.fpu"
SYSTEM = "org.gdbstub.aarch64.system"  # EL1 system registers, group "system": `info registers system`
# (name, gdb type): what a kernel debugger looks at, read and written with p/P (both backends name them)
_SYSTEM_REGS = (
    ("sctlr_el1", "uint64"), ("tcr_el1", "uint64"), ("ttbr0_el1", "uint64"), ("ttbr1_el1", "uint64"),
    ("mair_el1", "uint64"), ("vbar_el1", "code_ptr"), ("esr_el1", "uint64"), ("far_el1", "data_ptr"),
    ("elr_el1", "code_ptr"), ("spsr_el1", "uint64"), ("sp_el0", "data_ptr"), ("sp_el1", "data_ptr"),
    ("cpacr_el1", "uint64"), ("contextidr_el1", "uint64"), ("mdscr_el1", "uint64"),
)  # fmt: skip

BRK0 = 0xD4200000  # BRK #0: the software breakpoint gdb's Z0 kind 4 asks for
SW_BREAK_KIND = 4


def _table() -> tuple[Reg, ...]:
    regs = [Reg(f"x{i}", 64, "int", CORE) for i in range(31)]
    regs += [Reg("sp", 64, "data_ptr", CORE), Reg("pc", 64, "code_ptr", CORE), Reg("cpsr", 32, "cpsr_flags", CORE)]
    regs += [Reg(f"v{i}", 128, "aarch64v", FPU, "vector") for i in range(32)]
    regs += [Reg("fpsr", 32, "int", FPU, "float"), Reg("fpcr", 32, "int", FPU, "float")]
    regs += [Reg(name, 64, type_, SYSTEM, "system", in_g=False) for name, type_ in _SYSTEM_REGS]
    return tuple(regs)


REGISTERS: tuple[Reg, ...] = _table()
REGNUM: dict[str, int] = {r.name: i for i, r in enumerate(REGISTERS)}
_TABLE = RegisterTable(REGISTERS)
G_SIZE = _TABLE.g_size
encode_reg = _TABLE.encode_reg
decode_reg = _TABLE.decode_reg
encode_g = _TABLE.encode_g
decode_g = _TABLE.decode_g
# gdb needs pc, sp and the frame registers at every stop: sending them saves a `g` per step.
EXPEDITED: tuple[int, ...] = (REGNUM["pc"], REGNUM["sp"], REGNUM["x29"], REGNUM["x30"])

_CPSR_FIELDS = (
    ("SP", 0, 0), ("EL", 2, 3), ("nRW", 4, 4), ("F", 6, 6), ("I", 7, 7), ("A", 8, 8), ("D", 9, 9),
    ("BTYPE", 10, 11), ("SSBS", 12, 12), ("IL", 20, 20), ("SS", 21, 21), ("PAN", 22, 22), ("UAO", 23, 23),
    ("DIT", 24, 24), ("TCO", 25, 25), ("V", 28, 28), ("C", 29, 29), ("Z", 30, 30), ("N", 31, 31),
)  # fmt: skip

_VECTOR_TYPES = """\
  <vector id="v2d" type="ieee_double" count="2"/>
  <vector id="v2u" type="uint64" count="2"/>
  <vector id="v2i" type="int64" count="2"/>
  <vector id="v4f" type="ieee_single" count="4"/>
  <vector id="v4u" type="uint32" count="4"/>
  <vector id="v4i" type="int32" count="4"/>
  <vector id="v8f" type="ieee_half" count="8"/>
  <vector id="v8u" type="uint16" count="8"/>
  <vector id="v8i" type="int16" count="8"/>
  <vector id="v16u" type="uint8" count="16"/>
  <vector id="v16i" type="int8" count="16"/>
  <vector id="v1u" type="uint128" count="1"/>
  <vector id="v1i" type="int128" count="1"/>
  <union id="vnd"><field name="f" type="v2d"/><field name="u" type="v2u"/><field name="s" type="v2i"/></union>
  <union id="vns"><field name="f" type="v4f"/><field name="u" type="v4u"/><field name="s" type="v4i"/></union>
  <union id="vnh"><field name="f" type="v8f"/><field name="u" type="v8u"/><field name="s" type="v8i"/></union>
  <union id="vnb"><field name="u" type="v16u"/><field name="s" type="v16i"/></union>
  <union id="vnq"><field name="u" type="v1u"/><field name="s" type="v1i"/></union>
  <union id="aarch64v">
    <field name="d" type="vnd"/><field name="s" type="vns"/><field name="h" type="vnh"/>
    <field name="b" type="vnb"/><field name="q" type="vnq"/>
  </union>
"""


@cache
def target_xml() -> bytes:
    """The whole description in one annex (no xi:include round trips)."""
    out = ['<?xml version="1.0"?>', '<!DOCTYPE target SYSTEM "gdb-target.dtd">', "<target>",
           "  <architecture>aarch64</architecture>"]  # fmt: skip
    for feature in (CORE, FPU, SYSTEM):
        out.append(f'  <feature name="{feature}">')
        if feature == CORE:
            out.append('  <flags id="cpsr_flags" size="4">')
            out += [f'    <field name="{n}" start="{s}" end="{e}"/>' for n, s, e in _CPSR_FIELDS]
            out.append("  </flags>")
        elif feature == FPU:
            out.append(_VECTOR_TYPES.rstrip("\n"))
        out += _TABLE.xml_regs(feature)
        out.append("  </feature>")
    out.append("</target>")
    return ("\n".join(out) + "\n").encode()


MAX_ACCESS = 64  # the widest single data access: LD4/ST4 of four Q registers, DC ZVA of a 64-byte block


def access_size(insn: int) -> int:
    """The most bytes one A64 instruction can access in memory (ARM ARM C4.1.66 "Loads and Stores").

    Used to tell a real watchpoint hit from a hit on the padding of an approximate watch cover when
    FAR lies below the watched bytes: an access of N bytes at FAR cannot reach FAR + N.  Anything not
    decoded here (SIMD structures, cache maintenance, unknown encodings) gets the safe maximum.
    """
    v = (insn >> 26) & 1
    if insn & 0x3A000000 == 0x28000000:  # load/store pair (all addressing modes)
        opc = insn >> 30
        if v:
            return {0: 8, 1: 16, 2: 32}.get(opc, MAX_ACCESS)
        return 8 if opc in (0, 1) else 16
    if insn & 0x3A000000 == 0x38000000:  # single register: offsets, pre/post index, atomics
        size = insn >> 30
        if v and size == 0 and (insn >> 23) & 1:
            return 16  # Q register
        return 1 << size
    if insn & 0x3F000000 == 0x08000000:  # exclusive / acquire-release (pair form doubles the size)
        return (1 << (insn >> 30)) * (2 if (insn >> 21) & 1 else 1)
    if insn & 0x3B000000 == 0x18000000:  # load literal
        opc = insn >> 30
        if v:
            return {0: 4, 1: 8, 2: 16}.get(opc, MAX_ACCESS)
        return 8 if opc == 1 else 4
    return MAX_ACCESS


# ---- the debugger core's interface (gdbstub/arch.py) --------------------------------------------------

NAME = "aarch64"
PC = "pc"
READ_WATCHPOINTS = True  # LSC=01 watches loads only
WATCH_BEFORE_ACCESS = True  # arm64 watchpoints fire before the access: resuming re-fires unless stepped over
NARROWED = frozenset({"cpsr"})  # registers gdb sees narrower than the hardware has them
IDLE_GUEST_OWNS_DEBUG = True  # KVM gives the guest its debug registers back when guest_debug is 0
SW_BREAK = BRK0.to_bytes(4, "little")
_WATCH_ISS_WNR = 0x40


def narrow(name: str, value: int) -> int:
    """gdb's view of a register: cpsr is 32 bits of the 64-bit PSTATE."""
    return value & 0xFFFF_FFFF if name == "cpsr" else value


def widen(name: str, value: int, current: int) -> int:
    """A value gdb wrote, merged into the full register (PSTATE keeps its upper bits)."""
    return (current & ~0xFFFF_FFFF) | (value & 0xFFFF_FFFF) if name == "cpsr" else value


def sw_break_ok(addr: int, kind: int) -> bool:
    return kind == SW_BREAK_KIND and addr % 4 == 0


def new_slot_table(caps: Capabilities) -> SlotTable:
    return SlotTable(caps.hw_breakpoints, caps.hw_watchpoints)


_STEPPED = Decoded(Event.STEP)  # (immutable: shared by every step, the hottest exit)
_HW_BREAK = Decoded(Event.HWBREAK)


def decode_exit(ex: Exit) -> Decoded:
    ec = ex.ec
    if ec == EC_SOFTSTP_LOW:
        return _STEPPED
    if ec == EC_BREAKPT_LOW:
        return _HW_BREAK
    if ec == EC_WATCHPT_LOW:
        return Decoded(Event.WATCH, ex.far, bool(ex.esr & _WATCH_ISS_WNR))
    if ec in (EC_BRK64, EC_BKPT32):
        return Decoded(Event.SWBREAK, detail=f"BRK #{ex.esr & 0xFFFF:#x}")
    return Decoded(Event.OTHER, detail=f"esr={ex.esr:#x}")


def watch_point(table: SlotTable, d: Decoded, code_at_pc: Callable[[], bytes | None]) -> GdbPoint | None:
    """The gdb watch point a watchpoint exit belongs to; None for a padding hit gdb must not see.
    FAR may lie below the watched bytes, so how far the trapped load/store reaches matters."""
    code = code_at_pc()
    size = access_size(int.from_bytes(code, "little")) if code is not None and len(code) == 4 else MAX_ACCESS
    return table.watch_for(d.addr, d.is_write, size)


def step_over_regs(table: SlotTable, pc: int, no_watch: bool) -> DebugRegs:
    """The table's registers with any BRP on pc (and every WRP if no_watch) disabled, for one step."""
    regs = table.debug_regs().copy()
    for i in range(len(regs.bcr)):
        if regs.bcr[i] & 1 and (regs.bvr[i] & ((1 << 53) - 1)) == pc:
            regs.bcr[i] &= ~1
    if no_watch:
        regs.wcr = [w & ~1 for w in regs.wcr]
    return regs


def guest_exception(ex: Exit, get: Callable[[str], int]) -> dict[str, int]:
    """The register writes that deliver a debug exception the debugger does not own (the guest's own BRK)
    to the guest's EL1 vectors, as the architecture would have without a debugger: arm64 KVM has no
    injection ioctl, so the VMM emulates the entry (QEMU does the same).  Order matters: PSTATE first,
    so that sp_el0/sp (the live one) mean the new mode's stack pointers."""
    pstate = get("cpsr")
    el, sp_h = (pstate >> 2) & 3, pstate & 1
    vector = get("vbar_el1") + (0x400 if el == 0 else 0x200 if sp_h else 0)
    esr = ex.esr & 0xFFFF_FFFF
    ec = esr >> 26
    if ec in (0x30, 0x32, 0x34) and el == 1:  # KVM saw a "lower EL" debug exception; the guest's own EL1
        esr |= 1 << 26  # takes it as the "current EL" class (0x31, 0x33, 0x35)
    writes = {
        "esr_el1": esr,
        "elr_el1": get("pc"),
        "spsr_el1": pstate & 0xFFFF_FFFF,
        "cpsr": 0x3C5,  # EL1h, DAIF masked; SS, IL and NZCV clear (as the sim and arm64 KVM enter vectors)
    }
    if ec in (0x34, 0x35):
        writes["far_el1"] = ex.far
    if not (el == 1 and sp_h):  # SP_EL0 was live: bank it, the handler runs on SP_EL1
        writes.update(sp_el0=get("sp"), sp=get("sp_el1"))
    writes["pc"] = vector
    return writes


_MDSCR_KDE, _MDSCR_MDE, _OSLSR_OSLK, _PSTATE_D = 1 << 13, 1 << 15, 1 << 1, 1 << 9


def guest_debug_regs(get: Callable[[str], int], brps: int, wrps: int) -> DebugRegs | None:
    """The guest's own breakpoints and watchpoints (KVM keeps them for it: GET_ONE_REG dbg*_el1), or None
    when they cannot fire anyway (MDSCR_EL1.MDE off, OS lock set)."""
    if not get("mdscr_el1") & _MDSCR_MDE or get("oslsr_el1") & _OSLSR_OSLK:
        return None
    regs = DebugRegs()
    for i in range(brps):
        regs.bcr[i], regs.bvr[i] = get(f"dbgbcr{i}_el1"), get(f"dbgbvr{i}_el1")
    for i in range(wrps):
        regs.wcr[i], regs.wvr[i] = get(f"dbgwcr{i}_el1"), get(f"dbgwvr{i}_el1")
    return regs


def guest_takes_debug(get: Callable[[str], int]) -> bool:
    """Would the guest's own breakpoint or watchpoint raise an exception now (to its EL1)?  From EL0 always;
    from EL1 with MDSCR_EL1.KDE set and PSTATE.D clear; never under the OS lock."""
    if get("oslsr_el1") & _OSLSR_OSLK:
        return False
    pstate = get("cpsr")
    return (pstate >> 2) & 3 == 0 or bool(get("mdscr_el1") & _MDSCR_KDE and not pstate & _PSTATE_D)
