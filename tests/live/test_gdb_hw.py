"""Hardware breakpoints and watchpoints as a gdb-multiarch user sees them (issue: Z1-Z4 -> slots)."""

from __future__ import annotations

import re

from tests.conftest import ServerProcess, run_gdb
from tests.live.test_gdb_basic import SYM, _values

TOO_MANY = "You may have requested too many hardware breakpoints/watchpoints."


def _stop_lines(out: str, name: str) -> list[str]:
    """The `<function> () at guests/demo.S:N` lines gdb prints at each stop."""
    return re.findall(rf"^{name} \(\) at guests/demo\.S:(\d+)$", out, re.M)


def test_hbreak_up_to_the_brp_count_then_too_many(gdb_multiarch: str, server: ServerProcess) -> None:
    funcs = ["add_one", "update_point", "touch_unaligned", "fill_buffer", "read_counter", "puts", "uart_putc"]
    out = run_gdb(gdb_multiarch, server, [f"hbreak {f}" for f in funcs] + [
        "continue",  # 7 hbreaks for 6 BRPs: refused at resume
        "p/x $pc",
        "delete 7", "continue", "p/x $pc", "continue", "p/x $pc", "monitor slots",
    ])  # fmt: skip
    assert "Could not insert hardware breakpoints:" in out and TOO_MANY in out
    v = _values(out)
    assert v[0] == hex(SYM["_start"]), "nothing ran when the insert failed"
    assert v[1] == hex(SYM["puts"])  # the banner is printed first
    assert v[2] == hex(SYM["add_one"])
    assert "Breakpoint 6, puts ()" in out and "Breakpoint 1, add_one ()" in out
    assert out.count("bcr=0x000001e7") == 6, "all six BRPs were programmed for the run"


def test_too_many_hbreaks_with_one_at_the_pc_steps_over_it_first(gdb_multiarch: str, server: ServerProcess) -> None:
    """gdb steps over a breakpoint at the PC with that one left out (six fit), then inserting all seven is
    refused: the guest moved exactly one instruction, and the six that remain still work."""
    funcs = ["add_one", "update_point", "touch_unaligned", "fill_buffer", "read_counter", "puts", "uart_putc"]
    out = run_gdb(gdb_multiarch, server, [
        "hbreak add_one", "continue", "delete", *(f"hbreak {f}" for f in funcs), "continue", "p/x $pc",
        "delete 8", "continue", "p/x $pc",
    ])  # fmt: skip
    assert "Could not insert hardware breakpoints:" in out and TOO_MANY in out, out
    v = _values(out)
    assert v[0] == hex(SYM["add_one"] + 4), "only gdb's step over the hbreak at the PC ran"
    assert v[1] == hex(SYM["update_point"]), out


def test_hbreak_hits_report_hwbreak_and_stepi_continue_make_progress(gdb_multiarch: str, server: ServerProcess) -> None:
    out = run_gdb(gdb_multiarch, server, [
        "hbreak fill_buffer", "continue", "p counter", "stepi", "p/x $pc", "continue", "p/x $pc", "p counter",
        "monitor slots",
    ])  # fmt: skip
    v = _values(out)
    assert out.count("Breakpoint 1, fill_buffer ()") == 2
    assert v[1] == hex(SYM["fill_buffer"] + 4)
    assert v[2] == hex(SYM["fill_buffer"])
    assert int(v[3]) == int(v[0]) + 1, "continue from the hbreak ran one full loop iteration"
    fb = SYM["fill_buffer"]
    assert re.search(rf"BRP0 hbreak {fb:#x}\s+bcr=0x000001e7 bvr=0x{fb:016x}", out)


def test_watch_reports_old_and_new_value_after_the_store(gdb_multiarch: str, server: ServerProcess) -> None:
    out = run_gdb(gdb_multiarch, server, ["watch counter", "continue", "p/x $pc", "continue", "continue",
                                          "x/i $pc - 4"])  # fmt: skip
    assert "Hardware watchpoint 1: counter" in out
    olds = re.findall(r"Old value = (\d+)\nNew value = (\d+)", out)
    assert olds == [("0", "1"), ("1", "2"), ("2", "3")]
    # the PC is on the instruction after the store, as on real arm64 after gdb's step over it
    pc = int(_values(out)[0], 16)
    assert SYM["add_one"] < pc < SYM["update_point"]
    assert re.search(r"\tstr\tx0, \[x1\]", out)


def test_rwatch_and_awatch(gdb_multiarch: str, server: ServerProcess) -> None:
    out = run_gdb(gdb_multiarch, server, ["rwatch point.y", "continue", "continue", "delete",
                                          "awatch point.y", "continue", "continue", "continue"])  # fmt: skip
    assert "Hardware read watchpoint 1: point.y" in out
    assert re.findall(r"Value = (\d+)\n(\w+) \(\)", out)[:2] == [("2", "read_counter"), ("4", "read_counter")]
    assert "Hardware access (read/write) watchpoint 2: point.y" in out
    tail = out.split("Hardware access (read/write) watchpoint 2: point.y", 1)[1]
    assert "Old value = 4\nNew value = 6" in tail  # update_point writes y = 2 * counter
    assert "Value = 6" in tail  # then read_counter reads it


def test_watch_unaligned_straddling_word_uses_two_wrps(gdb_multiarch: str, server: ServerProcess) -> None:
    assert SYM["unaligned_word"] % 8 == 6
    out = run_gdb(gdb_multiarch, server, ["watch unaligned_word", "continue", "continue", "continue",
                                          "monitor slots"])  # fmt: skip
    assert re.findall(r"Old value = (\d+)\nNew value = (\d+)", out) == [("0", "1"), ("1", "2"), ("2", "3")]
    assert len(_stop_lines(out, "touch_unaligned")) == 3
    assert "(chunk 1/2, exact)" in out and "(chunk 2/2, exact)" in out


def test_watch_whole_struct_and_aligned_buffer(gdb_multiarch: str, server: ServerProcess) -> None:
    out = run_gdb(gdb_multiarch, server, [
        "watch point", "continue", "continue", "delete", "watch buffer", "continue", "continue", "monitor slots",
    ])  # fmt: skip
    assert "Old value = {x = 0, y = 0}\nNew value = {x = 1, y = 0}" in out
    assert "Old value = {x = 1, y = 0}\nNew value = {x = 1, y = 2}" in out
    assert "New value = {1, 0, 0, 0, 0, 0, 0, 0}" in out
    assert "New value = {1, 1, 0, 0, 0, 0, 0, 0}" in out  # continue makes progress: the next store, not the same
    assert re.search(rf"WRP0 watch {SYM['buffer']:#x} len 64 \(chunk 1/1, exact\)\s+wcr=0x06001ff7", out)


def test_too_many_watchpoints_is_refused_at_continue(gdb_multiarch: str, make_server: type[ServerProcess]) -> None:
    server = make_server("--wrps", "2")
    # three watches that take one WRP each, for two WRPs (a straddling word would still fit: it gets an
    # approximate 16-byte cover whose padding hits are stepped over invisibly)
    out = run_gdb(gdb_multiarch, server, ["watch counter", "watch point.y", "watch buffer", "continue", "p/x $pc",
                                          "delete 3", "continue"])  # fmt: skip
    assert "Could not insert hardware watchpoint" in out or TOO_MANY in out
    assert _values(out)[0] == hex(SYM["_start"])
    assert "Old value = 0\nNew value = 1" in out


def test_monitor_caps_reports_the_configured_counts(gdb_multiarch: str, make_server: type[ServerProcess]) -> None:
    server = make_server("--brps", "3", "--wrps", "5")
    out = run_gdb(gdb_multiarch, server, ["monitor caps", "monitor slots"])
    assert "hardware breakpoints (BRPs): 3" in out
    assert "hardware watchpoints (WRPs): 5" in out
    assert re.findall(r"^(BRP\d|WRP\d) free$", out, re.M) == ["BRP0", "BRP1", "BRP2"] + [f"WRP{i}" for i in range(5)]


def test_approximate_cover_padding_hits_are_invisible(gdb_multiarch: str, make_server: type[ServerProcess]) -> None:
    """9 bytes at point.y need 2 WRPs exactly; with one free the stub covers them with one 32-byte MASK
    region whose padding includes point.x: update_point's store to x must not reach gdb."""
    server = make_server("--wrps", "2", "--log-level", "info")
    out = run_gdb(gdb_multiarch, server, [
        "watch counter", "watch *(unsigned char(*)[9])((char*)&point + 8)", "continue", "continue", "continue",
        "monitor slots",
    ])  # fmt: skip
    assert "approximate, 23 padding bytes" in out
    hits = re.findall(r"Hardware watchpoint (\d): ", out.split("monitor slots")[0])
    assert hits[2:5] == ["1", "2", "1"], out
    assert 'New value = "\\002\\000\\000\\000\\000\\000\\000\\000"' in out
    stops = re.findall(r"stop: watch signal 5 far=(0x[0-9a-f]+)", server.log())
    assert hex(SYM["point"]) not in stops, "the padding hit on point.x was reported to gdb"
