"""`gdbstub serve` refuses bad input with one clear line and exit code 2."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, ServerProcess


def _serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gdbstub", "serve", *args], capture_output=True, text=True,
                          timeout=30, cwd=ROOT)  # fmt: skip


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("gdbstub: error: ")
    return lines[0]


def test_missing_image(tmp_path: Path) -> None:
    line = _one_error_line(_serve(str(tmp_path / "nope.elf"), "--listen", "127.0.0.1:0"))
    assert "cannot read guest image" in line and "nope.elf" in line


def test_not_an_elf(tmp_path: Path) -> None:
    bad = tmp_path / "bad.elf"
    bad.write_bytes(b"\x7fELF" + b"\x00" * 12)
    line = _one_error_line(_serve(str(bad), "--listen", "127.0.0.1:0"))
    assert "not a valid ELF" in line


def test_wrong_architecture() -> None:
    line = _one_error_line(_serve(sys.executable, "--listen", "127.0.0.1:0"))
    assert "not aarch64" in line


def test_busy_port() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        line = _one_error_line(_serve("--listen", f"127.0.0.1:{port}"))
    assert f"cannot listen on 127.0.0.1:{port}: address already in use" in line


def test_image_outside_ram(tmp_path: Path) -> None:
    line = _one_error_line(_serve("--ram-size", "4K", "--listen", "127.0.0.1:0"))
    assert "outside guest RAM" in line


def test_startup_banner_names_address_and_image() -> None:
    s = ServerProcess()
    try:
        assert s.port > 0
        assert s.proc.stdout is not None
        rest = s.proc.stdout.readline().decode() + s.proc.stdout.readline().decode()
        assert "demo.elf (aarch64, entry 0x40000000), halted at entry" in rest
        assert f"gdb-multiarch {ROOT / 'gdbstub' / 'data' / 'demo.elf'} -ex 'target remote {s.address}'" in rest
    finally:
        s.stop()
