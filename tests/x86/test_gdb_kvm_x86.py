"""Real gdb-multiarch against `gdbstub serve --backend kvm guests/build/x86/demo.elf` on this host's /dev/kvm.

Skipped only where /dev/kvm does not exist.  Where the host's KVM does not deliver an event at all
(data breakpoints on PVM), the test checks what the backend's probe found and skips with that finding.
"""

from __future__ import annotations

import re
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, ServerProcess, run_gdb
from tests.kvm.conftest import HAVE_KVM, NO_KVM, build_x86_guest, elf_symbols

pytestmark = [pytest.mark.skipif(not HAVE_KVM, reason=NO_KVM), pytest.mark.gdb]

RAM_SIZE = 128 << 20
STACK_TOP = RAM_SIZE - 32 * 1024  # the backend's initial rsp: below the boot structures


@pytest.fixture(scope="module")
def demo() -> tuple[Path, dict[str, int]]:
    elf = build_x86_guest("demo")
    return elf, elf_symbols(elf)


@pytest.fixture
def kvm_server(make_server: type[ServerProcess], demo: tuple[Path, dict[str, int]]) -> ServerProcess:
    return make_server("--backend", "kvm", str(demo[0].relative_to(ROOT)))


def gdb(gdb_multiarch: str, server: ServerProcess, elf: Path, commands: list[str]) -> str:
    return run_gdb(gdb_multiarch, server, commands, elf=elf)


def _values(out: str) -> list[str]:
    return re.findall(r"^\$\d+ = (.*)$", out, re.M)


def _data_breakpoints() -> tuple[bool, str]:
    from backends.kvm.x86 import probe_host

    host = probe_host()
    return host.data_breakpoints, host.finding("data breakpoint")


def test_connect_and_info_registers(gdb_multiarch: str, kvm_server: ServerProcess, demo: tuple[Path, dict]) -> None:
    elf, sym = demo
    out = gdb(gdb_multiarch, kvm_server, elf, ["show architecture", "info registers", "p/x $pc", "p $sp"])
    assert 'The target architecture is set to "auto" (currently "i386:x86-64")' in out
    assert "_start () at guests/x86/demo.S:" in out
    assert re.search(rf"^rip\s+{sym['_start']:#x}\s+{sym['_start']:#x} <_start>$", out, re.M)
    assert re.search(rf"^rsp\s+{STACK_TOP:#x}\s+{STACK_TOP:#x}$", out, re.M)
    assert re.search(r"^eflags\s+0x2\s+\[ \]$", out, re.M)
    assert re.search(r"^cs\s+0x8\s+8$", out, re.M) and re.search(r"^ss\s+0x10\s+16$", out, re.M)
    assert re.search(r"^fs_base\s+0x0\s+0$", out, re.M)
    assert _values(out) == [hex(sym["_start"]), f"(void *) {STACK_TOP:#x}"]


def test_stepi_and_nexti(gdb_multiarch: str, kvm_server: ServerProcess, demo: tuple[Path, dict]) -> None:
    elf, sym = demo
    out = gdb(gdb_multiarch, kvm_server, elf, [
        "stepi", "p/x $pc", "stepi", "p/x $pc", "p/x $rsp", "stepi 2", "p/x $pc", "nexti", "p/x $pc",
    ])  # fmt: skip
    start = sym["_start"]
    # lea stack_top(%rip),%rsp (7 bytes); xor %ebp,%ebp (2); lea banner(%rip),%rdi (7); call puts (5)
    assert _values(out) == [hex(start + 7), hex(start + 9), hex(sym["stack_top"]), hex(sym["puts"]),
                            hex(sym["puts"] + 3)]  # fmt: skip


def test_break_is_int3_and_continue_steps_over_it(
    gdb_multiarch: str, kvm_server: ServerProcess, demo: tuple[Path, dict]
) -> None:
    elf, sym = demo
    out = gdb(gdb_multiarch, kvm_server, elf, [
        "break add_one", "continue", "p counter", "p/x $pc", "x/1bx $pc", "continue", "p counter", "bt",
    ])  # fmt: skip
    assert out.count("Breakpoint 1, add_one () at guests/x86/demo.S:") == 2
    assert _values(out) == ["0", hex(sym["add_one"]), "1"]
    assert re.search(rf"{sym['add_one']:#x} <add_one>:\t0x48", out)  # the int3 is hidden from gdb
    assert re.search(r"#1  0x[0-9a-f]+ in main_loop \(\) at guests/x86/demo.S", out)
    log = kvm_server.log()
    assert log.count("event=stop reason=swbreak") == 2


def test_hbreak_and_continue(gdb_multiarch: str, kvm_server: ServerProcess, demo: tuple[Path, dict]) -> None:
    elf, sym = demo
    out = gdb(gdb_multiarch, kvm_server, elf, [
        "hbreak update_point", "continue", "p/x $pc", "continue", "p counter", "monitor slots", "stepi", "p/x $pc",
        "monitor irq on",
    ])  # fmt: skip
    assert out.count("Breakpoint 1, update_point () at guests/x86/demo.S:") == 2
    assert "this backend has no IRQ line" in out, out
    assert _values(out) == [hex(sym["update_point"]), "2", hex(sym["update_point"] + 7)]
    assert f"DR0 hbreak {sym['update_point']:#x} len 1" in out and "DR7 0x00000401" in out
    assert kvm_server.log().count("event=stop reason=hwbreak") == 2


def test_debug_registers_are_one_pool(gdb_multiarch: str, kvm_server: ServerProcess, demo: tuple[Path, dict]) -> None:
    elf, _ = demo
    out = gdb(gdb_multiarch, kvm_server, elf, [
        "hbreak add_one", "hbreak update_point", "hbreak fill_buffer", "hbreak read_counter", "watch counter",
        "continue", "delete 5", "continue", "info symbol $pc",
    ])  # fmt: skip
    assert "Could not insert hardware breakpoints" in out or "Could not insert hardware watchpoint 5" in out
    assert "Breakpoint 1, add_one ()" in out


def test_ctrl_c_interrupts_a_running_guest(
    gdb_multiarch: str, kvm_server: ServerProcess, demo: tuple[Path, dict]
) -> None:
    elf, _ = demo
    argv = [gdb_multiarch, "-nx", "-batch", "-q", str(elf), "-ex", f"target remote {kvm_server.address}",
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


def test_examine_and_set_var(gdb_multiarch: str, kvm_server: ServerProcess, demo: tuple[Path, dict]) -> None:
    elf, sym = demo
    out = gdb(gdb_multiarch, kvm_server, elf, [
        "break update_point", "continue", "x/2gx &point", "set var counter = 100", "p counter",
        "set $rbx = 0x1234", "p/x $rbx", "finish", "x/2gx &point", "p point",
    ])  # fmt: skip
    assert re.search(rf"{sym['point']:#x} <point>:\t0x0000000000000000\t0x0000000000000000", out)
    assert re.search(rf"{sym['point']:#x} <point>:\t0x0000000000000064\t0x00000000000000c8", out)
    assert _values(out)[:2] == ["100", "0x1234"]
    assert _values(out)[-1] == "{x = 100, y = 200}"


def test_watchpoints(gdb_multiarch: str, kvm_server: ServerProcess, demo: tuple[Path, dict]) -> None:
    elf, sym = demo
    delivers, finding = _data_breakpoints()
    if not delivers:
        # the backend reports no hardware watchpoints: Z2 is refused at continue (never a watch that cannot
        # fire), and with `set can-use-hw-watchpoints 0` gdb watches in software (single-stepping), slowly
        commands = ["watch counter", "continue", "delete", "monitor caps", "set can-use-hw-watchpoints 0",
                    "watch counter", "continue"]  # fmt: skip
        out = gdb(gdb_multiarch, kvm_server, elf, commands)
        assert "Could not insert hardware" in out, finding
        assert "hardware watchpoints: 0 reported" in out
        assert "Watchpoint 2: counter" in out and "Old value = 0\nNew value = 1" in out
        return
    commands = ["watch counter", "stepi", "monitor slots", "continue", "p/x $pc", "continue", "delete",
                "awatch point.y", "continue", "p/x $pc", "delete", "rwatch point.y", "continue", "p/x $pc"]  # fmt: skip
    out = gdb(gdb_multiarch, kvm_server, elf, commands)
    assert "Hardware watchpoint 1: counter" in out
    assert f"DR0 watch {sym['counter']:#x} len 8" in out and "DR7 0x00090401" in out  # write, 8 bytes
    assert "Old value = 0\nNew value = 1" in out and "Old value = 1\nNew value = 2" in out
    assert "Hardware access (read/write) watchpoint 2: point.y" in out
    assert "Hardware read watchpoint 3: point.y" in out
    # data breakpoints trap after the access: the pc is past the store (or load)
    after_store = sym["add_one"] + 18  # mov counter(%rip),%rax; add $1,%rax; mov %rax,counter(%rip)
    after_y = sym["update_point"] + 21  # ... mov %rax,point+8(%rip)
    after_load = sym["read_counter"] + 7  # mov point+8(%rip),%rdx
    assert _values(out) == [hex(after_store), hex(after_y), hex(after_load)]


def test_detach_lets_the_guest_run_and_the_next_client_halts_it(
    gdb_multiarch: str, kvm_server: ServerProcess, demo: tuple[Path, dict]
) -> None:
    elf, _ = demo
    first = gdb(gdb_multiarch, kvm_server, elf, ["break add_one", "continue", "p counter", "detach"])
    assert "[Inferior 1 (Remote target) detached]" in first and _values(first) == ["0"]
    time.sleep(0.5)
    second = gdb(gdb_multiarch, kvm_server, elf, ["p counter > 1000", "info breakpoints", "x/1bx add_one"])
    assert _values(second) == ["1"]
    assert "No breakpoints or watchpoints." in second
    assert re.search(r"<add_one>:\t0x48", second)  # our int3 left with the first client


def test_hbreak_round_trip_time(gdb_multiarch: str, kvm_server: ServerProcess, demo: tuple[Path, dict]) -> None:
    """200 `continue`s between two hbreaks: gdb's whole round trip per stop (Z1/z1 traffic, the step off
    the breakpoint, the run, the stop reply, the registers gdb reads)."""
    elf, _ = demo
    n = 200
    script = f"""\
hbreak add_one
hbreak update_point
continue
python import time; t0 = time.monotonic()
set $i = 0
while $i < {n}
  continue
  set $i = $i + 1
end
python print("PER_CONTINUE_MS %.3f" % ((time.monotonic() - t0) * 1000 / {n}))
p counter
"""
    with tempfile.NamedTemporaryFile("w", suffix=".gdb") as f:
        f.write(script)
        f.flush()
        out = gdb(gdb_multiarch, kvm_server, elf, [f"source {f.name}"])
    m = re.search(r"PER_CONTINUE_MS ([0-9.]+)", out)
    assert m, out
    assert _values(out) == [str(n // 2)]  # the first continue and then 100 rounds of two stops
    per = float(m.group(1))
    print(f"\nhbreak round trip: {per:.2f} ms per continue over {n}")
    assert per < 100
