"""Real gdb-multiarch against the real Server/Session/Target over an in-memory x86-64 backend.

This checks what gdb 13 makes of our x86-64 target description, g/p/P and stop replies, and the
core's breakpoint and watchpoint handling with x86's debug semantics, without needing /dev/kvm.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time

import pytest

from tests.conftest import ROOT
from tests.x86.fake import FakeX86Backend, Insn
from tests.x86.support import ServerThread, gdb_batch

pytestmark = pytest.mark.gdb

# The toy program: a loop that stores to A, loads B, stores C.
A, B, C = 0x108000, 0x108010, 0x108014
PROGRAM = {
    0x100001: Insn(7, store=(A, 8)),
    0x100008: Insn(6, load=(B, 4)),
    0x10000E: Insn(2, store=(C, 4)),
    0x100010: Insn(2, jump=0x100000),
}


def _values(out: str) -> list[str]:
    return re.findall(r"^\$\d+ = (.*)$", out, re.M)


@pytest.fixture
def fake() -> FakeX86Backend:
    return FakeX86Backend(PROGRAM)


def run(gdb: str, backend: FakeX86Backend, commands: list[str]) -> str:
    with ServerThread(backend) as s:
        return gdb_batch(gdb, s.address, commands)


def test_gdb_accepts_the_description(gdb_multiarch: str, fake: FakeX86Backend) -> None:
    fake.regs.update(rax=0x1122334455667788, rbx=7, r15=0xFFFF_FFFF_FFFF_FFFF, eflags=0x246, fs_base=0x7000)
    fake.regs.update(xmm0=3 << 64 | 1, st0=0x3FFF_8000_0000_0000_0000)
    out = run(gdb_multiarch, fake, ["show architecture", "info registers", "p $xmm0.v2_int64", "p $st0",
                                    "p/x $mxcsr", "p $eax", "p/x $fs_base", "info all-registers"])  # fmt: skip
    assert 'The target architecture is set to "auto" (currently "i386:x86-64")' in out
    assert re.search(r"^rax\s+0x1122334455667788\s+1234605616436508552$", out, re.M)
    assert re.search(r"^rbx\s+0x7\s+7$", out, re.M)
    assert re.search(r"^r15\s+0xffffffffffffffff\s+-1$", out, re.M)
    assert re.search(r"^rip\s+0x100000\s+0x100000$", out, re.M)
    assert re.search(r"^eflags\s+0x246\s+\[ PF ZF IF \]$", out, re.M)
    for seg, value in (("cs", 0x10), ("ss", 0x18), ("ds", 0x18), ("es", 0), ("fs", 0), ("gs", 0)):
        assert re.search(rf"^{seg}\s+{value:#x}\s+{value}$", out, re.M), seg
    assert _values(out) == ["{1, 3}", "1", "0x1f80", "1432778632", "0x7000"]
    assert re.search(r"^st7\s+0\s+\(raw 0x00000000000000000000\)$", out, re.M)
    assert re.search(r"^xmm15\s+\{v8_bfloat16 = ", out, re.M)
    assert re.search(r"^gs_base\s+0x0\s+0$", out, re.M)
    assert "warning" not in out.replace("warning: No executable has been specified", "")
    assert "too long" not in out


def test_set_registers_and_memory(gdb_multiarch: str, fake: FakeX86Backend) -> None:
    fake.write_memory(0x100000, bytes(range(32)))
    out = run(gdb_multiarch, fake, [
        "set $rax = 5", "p $rax", "set $st1 = 2.5", "p $st1", "set $xmm3.v4_int32[2] = 9", "p $xmm3.v4_int32",
        "set $eflags = 0x202", "p $eflags", "set $rip = 0x100008", "p/x $pc", "x/4gx 0x100000",
        "set {long}0x108000 = 0x1234", "p/x *(long*)0x108000", "x/2gx 0x0",
    ])  # fmt: skip
    assert _values(out) == ["5", "2.5", "{0, 0, 9, 0}", "[ IF ]", "0x100008", "0x1234"]
    words = re.findall(r"\t0x([0-9a-f]{16})", out)
    assert [int(w, 16) for w in words] == [int.from_bytes(bytes(range(i, i + 8)), "little") for i in (0, 8, 16, 24)]
    assert "Cannot access memory at address 0x0" in out
    assert fake.regs["rax"] == 5 and fake.regs["st1"] == 0x4000_A000_0000_0000_0000
    assert fake.regs["xmm3"] == 9 << 64 and fake.regs["eflags"] == 0x202  # rip moved on: gdb detached at exit


def test_stepi(gdb_multiarch: str, fake: FakeX86Backend) -> None:
    out = run(gdb_multiarch, fake, ["stepi", "p/x $pc", "stepi", "p/x $pc", "stepi 2", "p/x $pc"])
    assert _values(out) == ["0x100001", "0x100008", "0x100010"]


def test_break_uses_int3_and_continue_steps_over_it(gdb_multiarch: str, fake: FakeX86Backend) -> None:
    out = run(gdb_multiarch, fake, ["break *0x100008", "continue", "p/x $pc", "x/1bx 0x100008", "continue",
                                    "p/x $pc", "p *(long*)0x108000"])  # fmt: skip
    assert out.count("Breakpoint 1, 0x0000000000100008 in ?? ()") == 2
    assert _values(out) == ["0x100008", "0x100008", "2"]  # one more loop iteration between the hits
    assert "0x100008:\t0x00" in out  # our int3 is hidden from memory reads
    assert fake.ram[8] == 0  # and gone after the session


def test_hbreak_and_continue(gdb_multiarch: str, fake: FakeX86Backend) -> None:
    out = run(gdb_multiarch, fake, ["hbreak *0x10000e", "continue", "p/x $pc", "continue", "p/x $pc",
                                    "p *(long*)0x108000", "monitor slots"])  # fmt: skip
    assert out.count("Breakpoint 1, 0x000000000010000e in ?? ()") == 2
    assert _values(out) == ["0x10000e", "0x10000e", "2"]
    assert "DR0 hbreak 0x10000e len 1" in out and "DR7 0x00000401" in out


def test_four_hbreaks_fill_the_pool_shared_with_watchpoints(gdb_multiarch: str, fake: FakeX86Backend) -> None:
    out = run(gdb_multiarch, fake, [
        "hbreak *0x100001", "hbreak *0x100008", "hbreak *0x10000e", "hbreak *0x100010",
        "watch *(long*)0x108000", "continue", "delete 4", "continue", "p/x $pc",
    ])  # fmt: skip
    assert "Could not insert hardware watchpoint 5" in out or "Could not insert hardware breakpoints" in out
    assert re.search(r"Breakpoint 1, 0x0000000000100001", out)
    assert _values(out) == ["0x100001"]


def test_watch_reports_after_the_store(gdb_multiarch: str, fake: FakeX86Backend) -> None:
    out = run(gdb_multiarch, fake, ["watch *(long*)0x108000", "continue", "p/x $pc", "continue", "p/x $pc"])
    assert "Hardware watchpoint 1: *(long*)0x108000\n\nOld value = 0\nNew value = 1" in out
    assert "Old value = 1\nNew value = 2" in out
    assert _values(out) == ["0x100008", "0x100008"]  # the trap comes after the store


def test_unaligned_watch_is_split(gdb_multiarch: str, fake: FakeX86Backend) -> None:
    fake.program[0x100001] = Insn(7, store=(A + 8, 4))  # a store to the second half only
    out = run(gdb_multiarch, fake, ["watch *(long*)0x108006", "continue", "p/x $pc", "monitor slots"])
    assert "Hardware watchpoint 1" in out and "Old value = 0\nNew value = 65536" in out
    assert "DR0 watch 0x108006 len 8 (piece 1/3: 0x108006 len 2)" in out
    assert "DR1 watch 0x108006 len 8 (piece 2/3: 0x108008 len 4)" in out
    assert "DR2 watch 0x108006 len 8 (piece 3/3: 0x10800c len 2)" in out


def test_rwatch_and_awatch(gdb_multiarch: str, fake: FakeX86Backend) -> None:
    out = run(gdb_multiarch, fake, ["rwatch *(int*)0x108010", "continue", "p/x $pc", "delete",
                                    "awatch *(int*)0x108014", "continue", "p/x $pc"])  # fmt: skip
    assert "Hardware read watchpoint 1: *(int*)0x108010\n\nValue = 0" in out
    assert "Hardware access (read/write) watchpoint 2: *(int*)0x108014\n\nOld value = 0\nNew value = 1" in out
    assert _values(out) == ["0x10000e", "0x100010"]


def test_ctrl_c(gdb_multiarch: str, fake: FakeX86Backend) -> None:
    with ServerThread(fake) as s:
        argv = [gdb_multiarch, "-nx", "-batch", "-q", "-ex", f"target remote {s.address}", "-ex", "continue",
                "-ex", "p $pc != 0"]  # fmt: skip
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT)
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    text = out.decode(errors="replace")
    assert "Program received signal SIGINT, Interrupt." in text
    assert fake.executed > 1000
