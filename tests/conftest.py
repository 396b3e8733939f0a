"""Shared fixtures: the demo guest, real tools (gdb-multiarch), a running `gdbstub serve`."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEMO_ELF = ROOT / "gdbstub" / "data" / "demo.elf"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_tool(name: str, package: str) -> str:
    """A tool CI installs: missing in CI is a failure, missing locally a skip with the reason."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} not found (Debian package {package}; .ci/run installs it)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def gdb_multiarch() -> str:
    return require_tool("gdb-multiarch", "gdb-multiarch")


class ServerProcess:
    """`python -m gdbstub serve ...` on a free port, with its output captured."""

    def __init__(self, *args: str) -> None:
        self.log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"gdbstub-test-{os.getpid()}-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "w+b")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gdbstub", "serve", *args, "--listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE,
            stderr=self._log,
            cwd=ROOT,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
        if not m:
            self.stop()
            raise RuntimeError(f"server did not start: {line!r}\n{self.log()}")
        self.port = int(m.group(1))
        self.address = f"127.0.0.1:{self.port}"

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        self.log_path.unlink(missing_ok=True)


@pytest.fixture
def server() -> Iterator[ServerProcess]:
    s = ServerProcess()
    yield s
    alive = s.proc.poll() is None
    s.stop()
    assert alive, "the server died during the test"


@contextmanager
def serving(*args: str) -> Iterator[ServerProcess]:
    """A server for one test, which must still be alive at its end: nothing gdb sends may kill it."""
    s = ServerProcess(*args)
    try:
        yield s
        alive = s.proc.poll() is None
    finally:
        s.stop()
    assert alive, "the server died during the test"


@pytest.fixture
def make_server() -> Iterator[type[ServerProcess]]:
    started: list[ServerProcess] = []

    def factory(*args: str) -> ServerProcess:
        s = ServerProcess(*args)
        started.append(s)
        return s

    yield factory  # type: ignore[misc]
    for s in started:
        s.stop()


def run_gdb(gdb: str, server: ServerProcess, commands: list[str], *, elf: Path = DEMO_ELF, timeout: float = 60) -> str:
    """Run gdb-multiarch in batch mode against the server; returns everything gdb printed."""
    argv = [
        gdb,
        "-nx",
        "-batch",
        "-q",
        str(elf),
        "-ex",
        "set pagination off",
        "-ex",
        "set confirm off",
        "-ex",
        f"target remote {server.address}",
    ]
    for c in commands:
        argv += ["-ex", c]
    out = subprocess.run(argv, capture_output=True, timeout=timeout, cwd=ROOT)
    return out.stdout.decode(errors="replace") + out.stderr.decode(errors="replace")


GUESTS = ROOT / "guests"


def _stale(elf: Path, sources: list[Path]) -> bool:
    if not elf.exists():
        return True
    built = elf.stat().st_mtime_ns
    return any(src.stat().st_mtime_ns > built for src in sources)


@pytest.fixture(scope="session")
def guest_elf() -> Callable[[str], Path]:
    """guest_elf(name) -> guests/build/NAME.elf, running scripts/build-guests when it is missing or
    older than guests/NAME.S (or the linker script).  Without the cross assembler: a failure in CI,
    a skip locally."""

    def build(name: str) -> Path:
        source = GUESTS / f"{name}.S"
        if not source.exists():
            raise FileNotFoundError(f"no guest source {source}")
        elf = GUESTS / "build" / f"{name}.elf"
        if _stale(elf, [source, GUESTS / "link.ld", *GUESTS.glob(f"{name}.ld")]):
            require_tool("aarch64-linux-gnu-as", "binutils-aarch64-linux-gnu")
            require_tool("aarch64-linux-gnu-ld", "binutils-aarch64-linux-gnu")
            out = subprocess.run(
                ["bash", str(ROOT / "scripts" / "build-guests")], cwd=ROOT, capture_output=True, text=True
            )
            if out.returncode != 0:
                pytest.fail(f"scripts/build-guests failed ({out.returncode}):\n{out.stdout}{out.stderr}")
            if not elf.exists():
                pytest.fail(f"scripts/build-guests did not produce {elf}")
        return elf

    return build
