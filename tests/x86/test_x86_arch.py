"""gdbstub/x86_64.py: the register table, target.xml, g/G and p/P, and the decoding of KVM debug exits."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backends.api import Exit, ExitReason
from gdbstub import x86_64
from gdbstub.arch import Decoded, Event, arch_for
from gdbstub.slots import GdbPoint, PointKind
from gdbstub.x86_slots import X86SlotTable

HB, W, R, A = PointKind.HW_BREAK, PointKind.WATCH_WRITE, PointKind.WATCH_READ, PointKind.WATCH_ACCESS
DR6 = 0xFFFF0FF0
BS = 1 << 14

# gdb's amd64 core and SSE register names (i386_validate_tdesc_p looks each one up by name).
AMD64_CORE = ["rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", *(f"r{i}" for i in range(8, 16)), "rip",
              "eflags", "cs", "ss", "ds", "es", "fs", "gs", *(f"st{i}" for i in range(8)), "fctrl", "fstat",
              "ftag", "fiseg", "fioff", "foseg", "fooff", "fop"]  # fmt: skip


def test_arch_for_finds_the_module() -> None:
    arch = arch_for("x86_64")
    assert arch.NAME == "x86_64" and arch.PC == "rip" and arch.WATCH_BEFORE_ACCESS is False
    assert arch.NARROWED == frozenset()
    assert arch.SW_BREAK == b"\xcc" and arch.SW_BREAK_KIND == 1


def test_register_table() -> None:
    names = [r.name for r in x86_64.REGISTERS]
    assert names[:40] == AMD64_CORE
    assert names[40:57] == [*(f"xmm{i}" for i in range(16)), "mxcsr"]
    assert names[57:] == ["fs_base", "gs_base"]
    sizes = {r.name: r.size for r in x86_64.REGISTERS}
    assert sizes["rip"] == 8 and sizes["eflags"] == 4 and sizes["gs"] == 4 and sizes["st7"] == 10
    assert sizes["fop"] == 4 and sizes["xmm15"] == 16 and sizes["mxcsr"] == 4 and sizes["gs_base"] == 8
    assert x86_64.G_SIZE == 16 * 8 + 8 + 4 + 6 * 4 + 8 * 10 + 8 * 4 + 16 * 16 + 4 + 2 * 8 == 552
    assert [x86_64.REGISTERS[i].name for i in x86_64.EXPEDITED] == ["rip", "rsp", "rbp"]


def test_target_xml_parses_and_matches_the_table() -> None:
    root = ET.fromstring(x86_64.target_xml())
    assert root.findtext("architecture") == "i386:x86-64"
    features = {f.get("name"): f for f in root.findall("feature")}
    assert list(features) == ["org.gnu.gdb.i386.core", "org.gnu.gdb.i386.sse", "org.gnu.gdb.i386.segments"]
    regs = [r for f in root.findall("feature") for r in f.findall("reg")]
    assert [int(r.get("regnum", "-1")) for r in regs] == list(range(len(x86_64.REGISTERS)))
    defined = {e.get("id") for f in features.values() for e in f if e.tag in ("flags", "vector", "union")}
    predefined = {"int", "int32", "int64", "code_ptr", "data_ptr", "i387_ext"}
    for r, table in zip(regs, x86_64.REGISTERS, strict=True):
        assert (r.get("name"), int(r.get("bitsize", "0"))) == (table.name, table.bits)
        assert r.get("type") in defined | predefined, r.get("type")
    types = {r.get("name"): r.get("type") for r in regs}
    assert types["rip"] == "code_ptr" and types["rsp"] == types["rbp"] == "data_ptr"
    assert types["eflags"] == "i386_eflags" and types["mxcsr"] == "i386_mxcsr" and types["st0"] == "i387_ext"
    assert types["xmm0"] == "vec128"
    groups = {r.get("name"): r.get("group") for r in regs}
    assert groups["fop"] == "float" and groups["mxcsr"] == "vector"
    assert "org.gnu.gdb.i386.linux" not in x86_64.target_xml().decode()


def _values(seed: int) -> dict[str, int]:
    return {r.name: (seed * (i + 7) * 0x9E3779B97F4A7C15) % (1 << r.bits) for i, r in enumerate(x86_64.REGISTERS)}


@given(st.integers(0, 1 << 64))
def test_g_round_trip(seed: int) -> None:
    values = _values(seed)
    text = x86_64.encode_g(values)
    assert len(text) == 2 * 552
    assert x86_64.decode_g(text) == values


def test_g_layout_is_little_endian_in_regnum_order() -> None:
    values = dict.fromkeys(_values(0), 0)
    values.update(rax=0x1122334455667788, st0=0x3FFF_8000_0000_0000_0000, gs_base=0xAB)
    text = x86_64.encode_g(values)
    assert text.startswith("8877665544332211")
    st0 = 16 * 8 + 8 + 4 + 6 * 4
    assert text[2 * st0 : 2 * st0 + 20] == "0000000000000080ff3f"  # 10 bytes, 1.0 in i387 extended
    assert text.endswith("ab" + "00" * 7)


def test_g_with_unchanged_registers_and_bad_lengths() -> None:
    text = x86_64.encode_g(_values(3))
    marked = "xx" * 8 + text[16:]
    assert "rax" not in x86_64.decode_g(marked) and "rbx" in x86_64.decode_g(marked)
    with pytest.raises(ValueError):
        x86_64.decode_g(text[:-2])


def test_p_and_big_registers() -> None:
    st0 = x86_64.REGNUM["st0"]
    assert x86_64.encode_reg(st0, 0x4000_A000_0000_0000_0000) == "00000000000000a00040"
    assert x86_64.decode_reg(st0, "00000000000000a00040") == 0x4000_A000_0000_0000_0000
    xmm1 = x86_64.REGNUM["xmm1"]
    assert x86_64.decode_reg(xmm1, x86_64.encode_reg(xmm1, 1 << 127 | 5)) == 1 << 127 | 5
    with pytest.raises(ValueError):
        x86_64.decode_reg(st0, "00" * 8)
    eflags = x86_64.REGNUM["eflags"]
    assert x86_64.encode_reg(eflags, 0x246) == "46020000"
    assert x86_64.narrow("eflags", 0x246) == 0x246 and x86_64.widen("eflags", 0x202, 0x246) == 0x202


def test_sw_break_ok() -> None:
    assert x86_64.sw_break_ok(0x401003, 1)  # int3 goes anywhere
    assert not x86_64.sw_break_ok(0x401000, 4)


# ---- debug exits ---------------------------------------------------------------------------------


def db(dr6: int, dr7: int) -> Exit:
    return Exit(ExitReason.DEBUG, exception=1, pc=0x401000, dr6=DR6 | dr6, dr7=dr7)


def _table(*points: GdbPoint) -> X86SlotTable:
    t = X86SlotTable()
    for p in points:
        t.insert(p)
    return t


HB_DR0_W_DR1 = _table(GdbPoint(HB, 0x401000, 1), GdbPoint(W, 0x402000, 4), GdbPoint(A, 0x403000, 8))
DR7 = HB_DR0_W_DR1.debug_regs().debugreg[7]


def test_decode_int3() -> None:
    d = x86_64.decode_exit(Exit(ExitReason.DEBUG, exception=3, pc=0x401005))
    assert d.event is Event.SWBREAK and "0x401005" in d.detail


def test_decode_single_step() -> None:
    assert x86_64.decode_exit(db(BS, 0x400)).event is Event.STEP  # KVM: dr6 = 0xffff4ff0, dr7 = 0x400
    assert x86_64.decode_exit(Exit(ExitReason.DEBUG, exception=1, dr6=0xFFFF4FF0, dr7=0x400)).event is Event.STEP


def test_decode_instruction_breakpoint() -> None:
    d = x86_64.decode_exit(db(1 << 0, DR7))
    assert (d.event, d.slot) == (Event.HWBREAK, 0)


def test_decode_write_watch_gives_the_slot() -> None:
    d = x86_64.decode_exit(db(1 << 1, DR7))
    assert (d.event, d.slot, d.is_write) == (Event.WATCH, 1, True)
    assert x86_64.watch_point(HB_DR0_W_DR1, d, lambda: None) == GdbPoint(W, 0x402000, 4)


def test_decode_access_watch() -> None:
    d = x86_64.decode_exit(db(1 << 2, DR7))
    assert (d.event, d.slot, d.is_write) == (Event.WATCH, 2, None)
    assert x86_64.watch_point(HB_DR0_W_DR1, d, lambda: None) == GdbPoint(A, 0x403000, 8)


def test_write_only_slot_wins_among_several_data_hits() -> None:
    t = _table(GdbPoint(A, 0x402000, 4), GdbPoint(W, 0x402000, 4))
    d = x86_64.decode_exit(db(0b11, t.debug_regs().debugreg[7]))
    assert d.slot == 1 and d.is_write is True


def test_data_hit_during_a_step_is_a_watch() -> None:
    d = x86_64.decode_exit(db(BS | 1 << 1, DR7))
    assert (d.event, d.slot) == (Event.WATCH, 1)


def test_b_bits_of_disabled_slots_do_not_count() -> None:
    regs = x86_64.step_over_regs(HB_DR0_W_DR1, 0x401000, no_watch=True)
    dr7 = regs.debugreg[7]
    assert x86_64.decode_exit(db(BS | 0b111, dr7)).event is Event.STEP  # stepped off the disabled hbreak
    assert x86_64.decode_exit(db(1 << 3, DR7)).event is Event.OTHER  # DR3 is not in use


def test_decode_other_exits() -> None:
    gd = x86_64.decode_exit(db(1 << 13, 0x400 | 1 << 13))
    assert gd.event is Event.OTHER and "GD" in gd.detail
    assert x86_64.decode_exit(Exit(ExitReason.DEBUG, exception=6)).event is Event.OTHER
    assert x86_64.decode_exit(db(0, 0x400)).event is Event.OTHER


def test_an_exit_without_a_valid_dr7() -> None:
    """PVM hosts leave kvm_debug_exit_arch.dr7 stale (seen: instruction bytes, bit 10 clear)."""
    stale = 0xA405894801C08348
    hb = x86_64.decode_exit(db(1, stale))
    assert (hb.event, hb.slot) == (Event.HWBREAK, 0) and "no DR7" in hb.detail
    assert x86_64.decode_exit(db(BS | 1, stale)).event is Event.STEP
    assert x86_64.decode_exit(db(0, 0)).event is Event.OTHER


def test_watch_point_ignores_slots_that_are_not_watches() -> None:
    assert x86_64.watch_point(HB_DR0_W_DR1, Decoded(Event.WATCH, slot=0), lambda: None) is None
    assert x86_64.watch_point(HB_DR0_W_DR1, Decoded(Event.WATCH, slot=3), lambda: None) is None
    assert x86_64.watch_point(HB_DR0_W_DR1, Decoded(Event.WATCH), lambda: None) is None


def test_step_over_regs() -> None:
    t = _table(GdbPoint(HB, 0x401000, 1), GdbPoint(HB, 0x401010, 1), GdbPoint(W, 0x402000, 4))
    full = t.debug_regs().debugreg
    on_pc = x86_64.step_over_regs(t, 0x401000, no_watch=False).debugreg
    assert on_pc[:4] == full[:4]
    assert on_pc[7] == full[7] & ~0b11  # only DR0's enable bits go
    no_watch = x86_64.step_over_regs(t, 0x401000, no_watch=True).debugreg
    assert no_watch[7] == full[7] & ~0b11 & ~(0b11 << 4)
    elsewhere = x86_64.step_over_regs(t, 0x401005, no_watch=False).debugreg
    assert elsewhere == full
    assert t.debug_regs().debugreg == full  # the table is not touched
