"""scripts/diff-qemu: the same gdb sessions against QEMU's gdbstub and ours, on the repo's guests."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import ROOT, require_tool

SCRIPT = ROOT / "scripts" / "diff-qemu"

# A representative subset (the whole corpus takes ~25 s here): every guest, every kind of stop, and one
# session for most entries of the known-differences table.  Each with the verdict it has today.
SUBSET = {
    "connect": "same",
    "registers": "differs (expected: cpsr, qemu-sysregs)",
    "swbreak": "same",
    "hbreak": "same",
    "stepping": "same",
    "step_source": "same",
    "memory": "same",
    "watch_write": "same",
    "watch_struct": "same",
    "watch_unaligned": "differs (expected: monitor)",
    "rwatch": "same",
    "awatch": "differs (expected: qemu-unaligned-watch)",
    "mixed": "same",
    "hbreak_exhaust": "differs (expected: slot-limit)",
    "kill": "differs (expected: kill)",
    "disconnect_reattach": "same",
    "ctrl_c": "same",  # spin
    "detach_reattach": "same",  # spin
    "exit": "same",  # bench_loop
    "du_poweroff": "same",  # debug_unit from here on
    "du_watch_straddle": "same",
    "du_watch_wide": "same",
    "du_loop": "same",
    "du_unaligned_page": "differs (expected: qemu-unaligned-watch)",
}


def _load() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("diff_qemu", str(SCRIPT))
    spec = importlib.util.spec_from_loader("diff_qemu", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["diff_qemu"] = module  # dataclasses look their module up
    loader.exec_module(module)
    return module


dq = _load()


def _side(*chunks: tuple[str, list[str]]) -> object:
    return dq.Side(list(chunks))


def _tools(guest_elf: Callable[[str], Path]) -> None:
    require_tool("qemu-system-aarch64", "qemu-system-arm")
    require_tool("gdb-multiarch", "gdb-multiarch")
    for guest in ("spin", "bench_loop", "debug_unit"):
        guest_elf(guest)


@pytest.mark.gdb
def test_the_repo_guests_behave_as_under_qemu(guest_elf: Callable[[str], Path]) -> None:
    _tools(guest_elf)
    out = subprocess.run([sys.executable, str(SCRIPT), *SUBSET], capture_output=True, text=True, timeout=240, cwd=ROOT)
    verdicts = dict(re.findall(r"^(\w+): (same|differs \(expected: [^)]*\)|DIFFERS)", out.stdout, re.M))
    assert out.returncode == 0, out.stdout + out.stderr
    assert verdicts == SUBSET, out.stdout
    assert re.search(rf"^{len(SUBSET)} sessions in .* 0 DIFFER$", out.stdout, re.M), out.stdout


@pytest.mark.gdb
def test_an_unexplained_difference_fails_the_run(guest_elf: Callable[[str], Path], tmp_path: Path) -> None:
    _tools(guest_elf)
    probe = tmp_path / "probe.gdb"
    probe.write_text("# Each stub announces its own features.\nmaint packet qSupported\np/x $pc\n")
    out = subprocess.run(
        [sys.executable, str(SCRIPT), str(probe)], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert out.returncode == 1, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "probe: DIFFERS"
    assert lines[1] == "  maint packet qSupported:"
    assert any(line.startswith('    -received: "PacketSize=') for line in lines), out.stdout
    assert lines[-1].endswith("1 DIFFER: probe")


def test_identical_output_is_the_same() -> None:
    side = _side(("(connect)", ["_start () at guests/demo.S:29"]), ("continue", ["Breakpoint 1, add_one ()"]))
    assert dq.compare("swbreak", side, side).verdict == "same"


def test_a_different_stop_differs_with_the_command_and_both_sides() -> None:
    ours = _side(("continue", ["", "Breakpoint 1, add_one () at guests/demo.S:76", "pc = 0x4000005c"]))
    qemu = _side(("continue", ["", "Breakpoint 2, update_point () at guests/demo.S:91", "pc = 0x40000074"]))
    o = dq.compare("swbreak", ours, qemu)
    assert o.verdict == "DIFFERS"
    assert "  continue:" in o.details
    assert "    -pc = 0x4000005c" in o.details and "    +pc = 0x40000074" in o.details


def test_cosmetic_differences_keep_a_session_the_same() -> None:
    ours = _side(("p 1", ["$1 = 1", "[Inferior 1 (Remote target) detached]"]))
    qemu = _side(("p 1", ["$1 = 1", "[Inferior 1 (process 1) detached]"]))
    o = dq.compare("connect", ours, qemu)
    assert (o.verdict, o.reasons) == ("same", ["inferior-name"])
    assert dq.report(o) == "connect: same"


def test_a_known_difference_is_expected_only_where_the_table_says() -> None:
    ours = _side(("continue", ["Could not insert hardware breakpoints:"]), ("continue", ["Breakpoint 6, puts ()"]))
    qemu = _side(("continue", ["Breakpoint 6, puts ()"]), ("continue", ["Breakpoint 1, add_one ()"]))
    o = dq.compare("hbreak_exhaust", ours, qemu)
    assert (o.verdict, o.reasons) == ("expected", ["slot-limit"])  # and everything after it (onwards)
    assert dq.report(o) == "hbreak_exhaust: differs (expected: slot-limit)"
    assert dq.compare("hbreak", ours, qemu).verdict == "DIFFERS"
    ours = _side(("monitor caps", ["hardware breakpoints (BRPs): 6"]), ("p 1", ["$1 = 1"]))
    qemu = _side(("monitor caps", ["unknown command: 'caps'"]), ("p 1", ["$1 = 2"]))
    o = dq.compare("monitor", ours, qemu)
    assert o.verdict == "DIFFERS" and o.details[0] == "  p 1:"  # `monitor` does not reach past its own output


def test_a_process_that_failed_is_a_difference() -> None:
    o = dq.compare("connect", dq.Side(problems=["gdbstub serve exited during the session (status 1)"]), _side())
    assert o.verdict == "DIFFERS" and "ours: gdbstub serve exited" in o.details[0]


def test_every_known_difference_has_a_reason_and_real_sessions() -> None:
    names = {p.stem for p in dq.SESSIONS.glob("*.gdb")} | {p.stem for p in dq.EXTRA.glob("*.gdb")}
    keys = [k.key for k in dq.KNOWN]
    assert len(keys) == len(set(keys))
    for k in dq.KNOWN:
        assert len(k.reason) > 40, k.key
        assert set(k.sessions) <= names, k.key
        assert k.line or k.command, k.key
    for guest in dq.QEMU_MACHINE:
        assert (ROOT / "guests" / f"{guest}.S").is_file()
    for path in sorted(dq.EXTRA.glob("*.gdb")):
        assert dq.load_session(path).elf.startswith("guests/build/"), path.name
    assert set(SUBSET) <= names
