"""Helpers for the daemon tests: start `python -m gdbstub serve ...` as a real process, a bare RSP client,
polling with timeouts (never fixed sleeps), and the structured log-line grammar."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from elftools.elf.elffile import ELFFile

from tests.conftest import DEMO_ELF, ROOT

# `<UTC time> <LEVEL> <logger> event=NAME key=value ...`: values plain or JSON-quoted.
_VALUE = r'(?:"(?:[^"\\]|\\.)*"|[A-Za-z0-9_.:/@+,\[\]-]+)'
LOG_LINE = re.compile(
    rf"^\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{{3}}Z (DEBUG|INFO|WARNING|ERROR) gdbstub(?:\.\w+)* "
    rf"event=\w+(?: \w+={_VALUE})*$"
)


def symbols() -> dict[str, int]:
    with open(DEMO_ELF, "rb") as f:
        symtab = ELFFile(f).get_section_by_name(".symtab")
        return {s.name: s["st_value"] for s in symtab.iter_symbols() if s.name}


def wait_for(check: Callable[[], object], timeout: float = 5.0, what: str = "condition") -> object:
    """Poll ``check`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def gone(pid: int) -> bool:
    """The process has exited (a zombie nobody reaped yet counts: a daemon's parent is not us)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        return True


def serve_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "gdbstub", "serve", *args]


def run_serve(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    """`gdbstub serve ...` to completion (a refusal, or a daemon's launching parent)."""
    return subprocess.run(serve_cmd(*args), capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("gdbstub: error: ")
    return lines[0]


class Served:
    """A foreground `gdbstub serve` started with the given arguments (which must choose where it listens);
    stdout is read up to the banner's first line, stderr goes to a file."""

    def __init__(self, tmp: Path, *args: str, cwd: Path = ROOT) -> None:
        self.stderr_path = tmp / f"stderr-{time.monotonic_ns()}"
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(serve_cmd(*args), stdout=subprocess.PIPE, stderr=self._stderr, cwd=cwd)
        assert self.proc.stdout is not None
        self.first_line = self.proc.stdout.readline().decode()
        m = re.search(r"listening on (\S+)", self.first_line)
        if not m:
            self.stop()
            raise AssertionError(f"server did not start: {self.first_line!r} {self.stderr()}")
        self.where = m.group(1)
        self.port = int(self.where.rpartition(":")[2]) if ":" in self.where else 0

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 5.0) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()


def frame(payload: bytes) -> bytes:
    return b"$%b#%02x" % (payload, sum(payload) & 0xFF)


class RspClient:
    """A bare RSP client: sends packets, collects the stub's packets, acks them while in ack mode and
    remembers every ack the stub sent (to check ack-mode behaviour)."""

    def __init__(self, address: str, timeout: float = 5.0) -> None:
        if address.startswith("/"):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(address)
        else:
            host, _, port = address.rpartition(":")
            self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.buf = b""
        self.acks = b""
        self.no_ack = False
        self.closed = False

    def close(self) -> None:
        self.sock.close()

    def send(self, raw: bytes) -> None:
        self.sock.sendall(raw)

    def packet(self, payload: bytes) -> bytes:
        self.send(frame(payload))
        return self.reply()

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            self.closed = True
            raise EOFError("the stub closed the connection")
        self.buf += data

    def reply(self) -> bytes:
        """The next packet's payload (checksum verified); acks before it are recorded."""
        while True:
            while self.buf[:1] in (b"+", b"-"):
                self.acks += self.buf[:1]
                self.buf = self.buf[1:]
            m = re.match(rb"\$([^#]*)#([0-9a-f]{2})", self.buf)
            if m:
                payload = m.group(1)
                assert int(m.group(2), 16) == sum(payload) & 0xFF, self.buf
                self.buf = self.buf[m.end() :]
                if not self.no_ack:
                    self.send(b"+")
                return payload
            self._fill()

    def read_to_eof(self) -> bytes:
        """Everything until the stub closes the connection."""
        try:
            while True:
                self._fill()
        except EOFError:
            pass
        rest, self.buf = self.buf, b""
        return rest


def log_lines(path: Path) -> list[str]:
    return path.read_text(errors="replace").splitlines() if path.exists() else []


def has_line(path: Path, pattern: str) -> bool:
    return any(re.search(pattern, ln) for ln in log_lines(path))


def pid_from(pidfile: Path) -> int:
    return int(pidfile.read_text().strip())


def kill_quietly(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
