"""`gdbstub serve --backend kvm`: what it refuses, with one line and exit code 2, before serving."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import DEMO_ELF, ROOT
from tests.kvm.conftest import HAVE_KVM, NO_KVM, build_x86_guest


def serve(*args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "gdbstub", "serve", "--backend", "kvm", *args, "--listen", "127.0.0.1:0"]
    return subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=30)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "--backend kvm needs an IMAGE for this host's architecture"),
        ((str(DEMO_ELF),), "is an ELF for EM_AARCH64, not x86-64 (EM_X86_64)"),
        (("/nonexistent.elf",), "cannot read guest image /nonexistent.elf"),
        (("x.elf", "--brps", "3"), "--brps, --wrps, --far-policy and --guestdbg-mask configure the simulated core"),
        (("x.elf", "--far-policy", "lowest"), "do not apply to --backend kvm"),
        (("x.elf", "--daemon", "--log-file", "/nonexistent-dir/x.log"), "--daemon is not supported with --backend kvm"),
    ],
)
def test_refusals(args: tuple[str, ...], message: str) -> None:
    out = serve(*args)
    assert out.returncode == 2
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert lines[-1].startswith("gdbstub: error: ") and message in lines[-1], out.stderr
    assert not any("Traceback" in line for line in lines)


@pytest.mark.skipif(not HAVE_KVM, reason=NO_KVM)
def test_backend_error_is_one_line() -> None:
    elf = build_x86_guest("demo")
    out = serve(str(elf), "--ram-size", "1M")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1] == (
        "gdbstub: error: RAM size must be a multiple of 4 KiB between 4 MiB and 3 GiB"
    )
