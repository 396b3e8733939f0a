"""Signals: SIGTERM/SIGINT shut down cleanly (a running guest is stopped and its client told where),
SIGHUP reopens the log file the way logrotate needs."""

from __future__ import annotations

import re
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import DEMO_ELF, ROOT
from tests.daemon.support import RspClient, Served, has_line, log_lines, wait_for


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_the_foreground_server_cleanly(tmp_path: Path, serve: Callable[..., Served], sig: int) -> None:
    pidfile, logfile = tmp_path / "pid", tmp_path / "log"
    s = serve("--listen", "127.0.0.1:0", "--pidfile", str(pidfile), "--log-file", str(logfile))
    assert pidfile.read_text().strip() == str(s.proc.pid)
    s.signal(sig)
    assert s.wait() == 0
    assert not pidfile.exists()
    assert has_line(logfile, rf"INFO gdbstub\.daemon event=shutdown signal={signal.Signals(sig).name}$")
    assert log_lines(logfile)[-1].endswith("event=exit code=0")
    assert s.stderr() == ""  # everything went to the log file


def test_sigterm_while_the_guest_runs_sends_the_owed_stop_reply(tmp_path: Path, serve: Callable[..., Served]) -> None:
    logfile = tmp_path / "log"
    s = serve("--listen", "127.0.0.1:0", "--log-file", str(logfile))
    client = RspClient(s.where)
    assert client.packet(b"?").startswith(b"T05")
    client.send(b"$c#63")  # continue: no reply until the guest stops
    wait_for(lambda: has_line(logfile, r'event=uart text="demo guest started"'), what="the guest running")
    s.signal(signal.SIGTERM)
    reply = client.reply()
    assert reply.startswith(b"T02") and b"thread:1;" in reply, reply  # stopped like a Ctrl-C: gdb shows where
    assert re.search(rb";20:[0-9a-f]{16};", reply), "the pc is expedited"
    client.read_to_eof()  # then the connection closes
    assert s.wait() == 0
    text = "\n".join(log_lines(logfile))
    assert re.search(r"event=stop reason=signal signal=2\n.*event=disconnect peer=127\.0\.0\.1:\d+\n", text, re.S)
    assert text.endswith("event=exit code=0")


@pytest.mark.gdb
def test_gdb_sees_where_the_guest_stopped_when_the_server_stops(
    gdb_multiarch: str, tmp_path: Path, serve: Callable[..., Served]
) -> None:
    logfile = tmp_path / "log"
    s = serve("--listen", "127.0.0.1:0", "--log-file", str(logfile))
    argv = [gdb_multiarch, "-nx", "-batch", "-q", str(DEMO_ELF), "-ex", f"target remote {s.where}", "-ex", "continue"]
    gdb = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        wait_for(lambda: has_line(logfile, r"event=uart "), timeout=10, what="the guest running")
        s.signal(signal.SIGTERM)
        out = gdb.communicate(timeout=10)[0].decode(errors="replace")
    finally:
        if gdb.poll() is None:
            gdb.kill()
            gdb.wait()
    assert "Program received signal SIGINT, Interrupt." in out, out
    assert re.search(r"(0x[0-9a-f]+ in )?\w+ \(\) at guests/demo\.S:\d+", out), out
    assert s.wait() == 0


def test_sighup_reopens_the_log_file(tmp_path: Path, serve: Callable[..., Served]) -> None:
    logfile, rotated = tmp_path / "gdbstub.log", tmp_path / "gdbstub.log.1"
    s = serve("--listen", "127.0.0.1:0", "--log-file", str(logfile))
    assert has_line(logfile, r"event=start ")
    logfile.rename(rotated)  # what logrotate does before it signals
    s.signal(signal.SIGHUP)
    wait_for(lambda: has_line(logfile, r"INFO gdbstub\.daemon event=reopen signal=SIGHUP$"), what="a new log file")
    RspClient(s.where).packet(b"?")
    wait_for(lambda: has_line(logfile, r"event=connect "), what="connect logged in the new file")
    assert not has_line(rotated, r"event=(reopen|connect) ")
    assert has_line(rotated, r"event=start ")
    s.signal(signal.SIGTERM)
    assert s.wait() == 0
    assert log_lines(logfile)[-1].endswith("event=exit code=0")


def test_sighup_without_a_log_file_means_hangup(serve: Callable[..., Served]) -> None:
    """Logging to a terminal, SIGHUP is the terminal going away: shut down cleanly."""
    s = serve("--listen", "127.0.0.1:0")
    s.signal(signal.SIGHUP)
    assert s.wait() == 0
    assert re.search(r"event=shutdown signal=SIGHUP\n.*event=exit code=0\n$", s.stderr(), re.S)
