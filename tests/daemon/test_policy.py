"""Connection policy and secure defaults: one client at a time, fresh protocol state per connection,
loopback-only TCP unless --allow-remote, and unix sockets that are private and never clobber a file."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import DEMO_ELF, ROOT
from tests.daemon.support import RspClient, Served, frame, has_line, one_error_line, run_serve, wait_for

BUSY = frame(b"E.another gdb client is already connected")


def test_a_second_client_is_refused_and_the_first_is_undisturbed(tmp_path: Path, serve: Callable[..., Served]) -> None:
    logfile = tmp_path / "log"
    s = serve("--listen", "127.0.0.1:0", "--log-file", str(logfile))
    first = RspClient(s.where)
    assert first.packet(b"?").startswith(b"T05")
    assert first.packet(b"P0=efbeadde00000000") == b"OK"
    assert RspClient(s.where).read_to_eof() == BUSY
    assert first.packet(b"p0") == b"efbeadde00000000"
    assert has_line(logfile, r' WARNING gdbstub\.server event=refuse peer=127\.0\.0\.1:\d+ reason="another gdb client')


@pytest.mark.gdb
def test_a_second_client_is_refused_while_gdb_is_attached(gdb_multiarch: str, serve: Callable[..., Served]) -> None:
    """A raw socket and a second gdb try to attach (from gdb's `shell`, while it sits at a breakpoint)."""
    s = serve("--listen", "127.0.0.1:0")
    probe = (f"import socket; s = socket.create_connection(('127.0.0.1', {s.port})); "
             "print('second client got', s.makefile('rb').read())")  # fmt: skip
    second_gdb = f"{gdb_multiarch} -nx -batch -q -ex 'target remote {s.where}'"
    out = subprocess.run(
        [gdb_multiarch, "-nx", "-batch", "-q", str(DEMO_ELF), "-ex", f"target remote {s.where}",
         "-ex", "break add_one", "-ex", "continue", "-ex", f'shell {sys.executable} -c "{probe}"',
         "-ex", f"shell {second_gdb} 2>&1", "-ex", "stepi", "-ex", "p counter"],
        capture_output=True, text=True, timeout=30, cwd=ROOT,
    ).stdout  # fmt: skip
    assert "second client got b'$E.another gdb client is already connected#21'" in out, out
    assert "warning: Remote failure reply: E.another gdb client is already connected" in out, out
    assert "Breakpoint 1, add_one ()" in out
    assert "$1 = 0\n[Inferior 1 (Remote target) detached]" in out, out  # gdb went on undisturbed


def test_protocol_state_resets_on_reconnect(tmp_path: Path, serve: Callable[..., Served]) -> None:
    logfile = tmp_path / "log"
    s = serve("--listen", "127.0.0.1:0", "--log-file", str(logfile))
    first = RspClient(s.where)
    first.packet(b"qSupported:swbreak+")
    assert first.packet(b"QStartNoAckMode") == b"OK"
    first.no_ack = True
    acks = len(first.acks)
    assert first.packet(b"Hg1") == b"OK"
    assert first.packet(b"?").startswith(b"T05")
    assert len(first.acks) == acks, "no acks in no-ack mode"
    first.close()
    wait_for(lambda: has_line(logfile, r"event=disconnect "), what="the first client's disconnect")

    second = RspClient(s.where)  # a new gdb starts in ack mode: the stub must ack its packets
    assert second.packet(b"?").startswith(b"T05")
    assert second.packet(b"Hc-1") == b"OK"
    assert second.acks == b"++"


# ---------------------------------------------------------------- TCP: loopback unless --allow-remote


@pytest.mark.parametrize("listen", ["0.0.0.0:0", "[::]:0", "10.11.12.13:1234", "192.168.1.1:0"])
def test_non_loopback_listen_is_refused(listen: str) -> None:
    line = one_error_line(run_serve("--listen", listen))
    assert "not a loopback address" in line and "--allow-remote" in line


@pytest.mark.parametrize("listen", ["localhost:0", "127.0.0.2:0", "[::1]:0"])
def test_loopback_forms_are_accepted(serve: Callable[..., Served], listen: str) -> None:
    s = serve("--listen", listen)
    assert RspClient(s.where.replace("[", "").replace("]", "")).packet(b"?").startswith(b"T05")


def test_allow_remote_listens_and_logs_a_warning(tmp_path: Path, serve: Callable[..., Served]) -> None:
    logfile = tmp_path / "log"
    s = serve("--listen", "0.0.0.0:0", "--allow-remote", "--log-file", str(logfile))
    assert s.where.startswith("0.0.0.0:")
    assert has_line(logfile, r" WARNING gdbstub event=remote listen=0\.0\.0\.0:\d+ note=\"not loopback")
    assert RspClient(f"127.0.0.1:{s.port}").packet(b"?").startswith(b"T05")


# ---------------------------------------------------------------- unix sockets


def test_unix_socket_is_private_and_removed_at_exit(tmp_path: Path, serve: Callable[..., Served]) -> None:
    path = tmp_path / "gdb.sock"
    s = serve("--unix", str(path))
    mode = os.stat(path).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    assert RspClient(str(path)).packet(b"?").startswith(b"T05")
    s.signal(signal.SIGTERM)
    assert s.wait() == 0
    assert not path.exists()


def test_unix_refuses_to_replace_a_regular_file(tmp_path: Path) -> None:
    path = tmp_path / "gdb.sock"
    path.write_text("precious\n")
    line = one_error_line(run_serve("--unix", str(path)))
    assert f"cannot listen on {path}:" in line and "not a socket" in line
    assert path.read_text() == "precious\n"


def test_unix_replaces_a_stale_socket(tmp_path: Path, serve: Callable[..., Served]) -> None:
    path = tmp_path / "gdb.sock"
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(str(path))  # bound, never listening, then closed: what a killed server leaves
    assert stat.S_ISSOCK(os.stat(path).st_mode)
    s = serve("--unix", str(path))
    assert RspClient(str(path)).packet(b"?").startswith(b"T05")
    assert s.proc.poll() is None


def test_unix_refuses_a_live_servers_socket(tmp_path: Path, serve: Callable[..., Served]) -> None:
    path = tmp_path / "gdb.sock"
    serve("--unix", str(path))
    line = one_error_line(run_serve("--unix", str(path)))
    assert f"cannot listen on {path}: a server is already listening there" in line
    assert RspClient(str(path)).packet(b"?").startswith(b"T05")  # the first server still owns it


@pytest.mark.gdb
def test_gdb_attaches_over_a_unix_socket(gdb_multiarch: str, tmp_path: Path, serve: Callable[..., Served]) -> None:
    path = tmp_path / "gdb.sock"
    serve("--unix", str(path))
    out = subprocess.run(
        [gdb_multiarch, "-nx", "-batch", "-q", str(DEMO_ELF), "-ex", f"target remote {path}", "-ex", "p/x $pc"],
        capture_output=True, text=True, timeout=30, cwd=ROOT,
    ).stdout  # fmt: skip
    assert "$1 = 0x40000000" in out, out
