"""Real gdb-multiarch, in batch mode, against `gdbstub serve` with the demo guest (issue: the foundation)."""

from __future__ import annotations

import re
import signal
import subprocess
import time

from elftools.elf.elffile import ELFFile

from tests.conftest import DEMO_ELF, ROOT, ServerProcess, run_gdb


def _symbols() -> dict[str, int]:
    with open(DEMO_ELF, "rb") as f:
        symtab = ELFFile(f).get_section_by_name(".symtab")
        return {s.name: s["st_value"] for s in symtab.iter_symbols() if s.name}


SYM = _symbols()


def _values(out: str) -> list[str]:
    """The values of gdb's `$N = value` lines, in order."""
    return re.findall(r"^\$\d+ = (.*)$", out, re.M)


def test_connect_recognises_aarch64_and_stops_at_entry(gdb_multiarch: str, server: ServerProcess) -> None:
    out = run_gdb(gdb_multiarch, server, ["show architecture", "p/x $pc"])
    assert "_start () at guests/demo.S" in out
    assert 'The target architecture is set to "auto" (currently "aarch64")' in out
    assert _values(out) == [hex(SYM["_start"])]


def test_info_registers(gdb_multiarch: str, server: ServerProcess) -> None:
    out = run_gdb(gdb_multiarch, server, ["info registers"])
    for i in range(31):
        assert re.search(rf"^x{i}\s+0x0\s+0$", out, re.M), f"x{i} missing or not 0"
    assert re.search(r"^pc\s+0x40000000\s+0x40000000 <_start>$", out, re.M)
    assert re.search(r"^cpsr\s+0x3c5\s+\[ SP EL=1 F I A D", out, re.M)  # KVM's reset PSTATE: EL1h, DAIF masked
    assert re.search(r"^sp\s+0x0\s+0x0$", out, re.M)


def test_info_all_registers_has_fpu(gdb_multiarch: str, server: ServerProcess) -> None:
    out = run_gdb(gdb_multiarch, server, ["info all-registers"])
    assert re.search(r"^v31\s+\{d = \{f = \{0x0, 0x0\}", out, re.M)
    assert re.search(r"^fpsr\s+0x0\s+0$", out, re.M)
    assert re.search(r"^fpcr\s+0x0\s+0$", out, re.M)
    assert "Remote 'g' packet reply is too long" not in out


def test_print_and_set_registers(gdb_multiarch: str, server: ServerProcess) -> None:
    out = run_gdb(gdb_multiarch, server, [
        "p $x0", "set $x1 = 5", "p $x1", "set $v3.d.u[1] = 0x1122334455667788", "p/x $v3.d.u",
        "set $cpsr = 0x600003c5", "p/x $cpsr", "set $pc = 0x40000008", "p/x $pc",
    ])  # fmt: skip
    assert _values(out) == ["0", "5", "{0x0, 0x1122334455667788}", "0x600003c5", "0x40000008"]


def test_examine_memory_matches_the_image(gdb_multiarch: str, server: ServerProcess) -> None:
    out = run_gdb(gdb_multiarch, server, ["x/16gx 0x40000000", "x/2gx 0x3ffffff8"])
    with open(DEMO_ELF, "rb") as f:
        text = ELFFile(f).get_section_by_name(".text").data()[:128]
    words = re.findall(r"\t0x([0-9a-f]{16})", out)
    assert len(words) == 16
    assert [int(w, 16) for w in words] == [int.from_bytes(text[i : i + 8], "little") for i in range(0, 128, 8)]
    assert "Cannot access memory at address 0x3ffffff8" in out


def test_stepi_and_nexti(gdb_multiarch: str, server: ServerProcess) -> None:
    out = run_gdb(gdb_multiarch, server, [
        "stepi", "p/x $pc", "stepi 3", "p/x $pc",
        "break add_one", "continue", "finish",  # back in main_loop, just after `bl add_one`
        "p/x $pc", "p counter", "nexti", "p/x $pc", "p point.x == counter", "stepi", "p/x $pc",
    ])  # fmt: skip
    v = _values(out)
    ret = SYM["main_loop"] + 12  # prologue (2 insns) + `bl add_one`
    assert v[0] == hex(SYM["_start"] + 4)
    assert v[1] == hex(SYM["_start"] + 16)
    assert "Value returned is $" in out
    assert v[2] == hex(ret)
    assert v[4] == hex(ret + 4), "nexti must step over `bl update_point`"
    assert v[5] == "1", "update_point ran during nexti"
    assert v[6] == hex(SYM["touch_unaligned"]), "stepi enters the called function"


def test_break_continue_and_set_var(gdb_multiarch: str, server: ServerProcess) -> None:
    out = run_gdb(gdb_multiarch, server, [
        "break add_one", "continue", "p counter", "set var counter = 3", "p counter", "x/gx &counter",
        "continue", "p counter", "bt", "info breakpoints",
    ])  # fmt: skip
    assert out.count("Breakpoint 1, add_one () at guests/demo.S") == 2
    v = _values(out)
    assert v[:3] == ["0", "3", "4"]
    assert re.search(r"<counter>:\s+0x0000000000000003", out)
    assert "#1  0x" in out and "in main_loop () at guests/demo.S" in out
    assert re.search(r"breakpoint already hit 2 times", out)


def test_ctrl_c_interrupts_a_running_guest(gdb_multiarch: str, server: ServerProcess) -> None:
    argv = [gdb_multiarch, "-nx", "-batch", "-q", str(DEMO_ELF), "-ex", f"target remote {server.address}",
            "-ex", "continue", "-ex", "p counter > 1000", "-ex", "info symbol $pc"]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT)
    time.sleep(2.0)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    text = out.decode(errors="replace")
    assert time.monotonic() - t0 < 10
    assert "Program received signal SIGINT, Interrupt." in text
    assert _values(text) == ["1"], text
    assert re.search(r"in section \.text", text)


def test_disconnect_keeps_the_guest_intact_for_the_next_client(gdb_multiarch: str, server: ServerProcess) -> None:
    first = run_gdb(gdb_multiarch, server, [
        "break fill_buffer", "continue", "continue", "set $x5 = 0x1234", "set var counter = 77", "p/x $pc",
        "hbreak read_counter", "disconnect",
    ])  # fmt: skip
    pc = _values(first)[-1]
    assert pc == hex(SYM["fill_buffer"])
    second = run_gdb(gdb_multiarch, server, ["p/x $pc", "p/x $x5", "p counter", "stepi", "p/x $pc"])
    assert _values(second) == [pc, "0x1234", "77", hex(SYM["fill_buffer"] + 4)]
    assert "Breakpoint" not in second  # the first client's breakpoints died with it
    assert server.proc.poll() is None


def test_detach_lets_the_guest_run_and_the_next_client_halts_it(gdb_multiarch: str, server: ServerProcess) -> None:
    first = run_gdb(gdb_multiarch, server, ["break add_one", "continue", "p counter", "detach"])
    assert "[Inferior 1 (Remote target) detached]" in first
    time.sleep(0.5)
    second = run_gdb(gdb_multiarch, server, ["p counter > 1000", "info breakpoints"])
    assert _values(second) == ["1"]
    assert "No breakpoints or watchpoints." in second


def test_kill_leaves_the_server_running(gdb_multiarch: str, server: ServerProcess) -> None:
    out = run_gdb(gdb_multiarch, server, ["stepi", "kill"])
    assert "[Inferior 1 (Remote target) killed]" in out
    again = run_gdb(gdb_multiarch, server, ["p/x $pc"])
    assert _values(again) == [hex(SYM["_start"] + 4)]
    assert server.proc.poll() is None
