"""`gdbstub serve --daemon --pidfile --log-file`: detaching, the pidfile's life cycle, start-up errors."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from tests.daemon.support import (
    LOG_LINE,
    RspClient,
    Served,
    gone,
    has_line,
    log_lines,
    one_error_line,
    pid_from,
    run_serve,
    serve_cmd,
    wait_for,
)


def _proc_status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return dict(line.split(":\t", 1) for line in f.read().splitlines() if ":\t" in line)


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_daemon_detaches_serves_and_stops_cleanly_on_sigterm(tmp_path: Path, daemon_pids: list[int]) -> None:
    pidfile, logfile = tmp_path / "gdbstub.pid", tmp_path / "gdbstub.log"
    t0 = time.monotonic()
    # capture_output: run() returns only once no process holds our pipes, so the daemon let go of them
    result = run_serve("--daemon", "--listen", "127.0.0.1:0", "--pidfile", str(pidfile), "--log-file", str(logfile))
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - t0 < 5
    m = re.search(r"^gdbstub: listening on 127\.0\.0\.1:(\d+)$", result.stdout, re.M)
    assert m, result.stdout
    port = int(m.group(1))
    assert "running as a daemon" in result.stdout and result.stderr == ""

    pid = pid_from(pidfile)  # written before the parent exits
    daemon_pids.append(pid)
    assert not gone(pid)
    status = _proc_status(pid)
    assert status["Umask"] == "0027"
    assert os.readlink(f"/proc/{pid}/cwd") == "/"
    for fd in (0, 1, 2):
        assert os.readlink(f"/proc/{pid}/fd/{fd}") == "/dev/null"
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    session, tty = int(fields[3]), int(fields[4])
    assert session != os.getsid(0), "a new session"
    assert session != pid, "not a session leader: it can never acquire a terminal"
    assert tty == 0, "no controlling terminal"

    client = RspClient(f"127.0.0.1:{port}")
    assert client.packet(b"?").startswith(b"T05")
    client.close()
    wait_for(lambda: has_line(logfile, r"event=disconnect"), what="disconnect logged")

    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: gone(pid) and not pidfile.exists(), what="daemon exit and pidfile removal")
    lines = log_lines(logfile)
    assert lines and all(LOG_LINE.match(ln) for ln in lines), lines
    text = "\n".join(lines)
    assert re.search(rf"INFO gdbstub event=start pid={pid} listen=127\.0\.0\.1:{port} .*daemon=true", text)
    assert re.search(r"INFO gdbstub\.server event=connect peer=127\.0\.0\.1:\d+$", text, re.M)
    assert "INFO gdbstub.daemon event=shutdown signal=SIGTERM" in text
    assert text.endswith("INFO gdbstub event=exit code=0")


def test_live_pidfile_is_refused_and_left_alone(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    pidfile.write_text(f"{os.getpid()}\n")  # this test's own process: certainly alive
    for extra in ([], ["--daemon", "--log-file", str(tmp_path / "log")]):
        line = one_error_line(run_serve("--listen", "127.0.0.1:0", "--pidfile", str(pidfile), *extra))
        assert f"pidfile {pidfile} names running process {os.getpid()}" in line
        assert pidfile.read_text() == f"{os.getpid()}\n"


def test_pidfile_without_a_pid_is_refused_and_left_alone(tmp_path: Path) -> None:
    precious = tmp_path / "notes.txt"
    precious.write_text("not a pid\n")
    line = one_error_line(run_serve("--listen", "127.0.0.1:0", "--pidfile", str(precious)))
    assert "does not hold a process id" in line
    assert precious.read_text() == "not a pid\n"


def test_stale_pidfile_is_replaced_and_removed_at_exit(tmp_path: Path, serve: Callable[..., Served]) -> None:
    pidfile = tmp_path / "pid"
    pidfile.write_text(f"{_dead_pid()}\n")
    s = serve("--listen", "127.0.0.1:0", "--pidfile", str(pidfile))
    assert pid_from(pidfile) == s.proc.pid  # written before the banner
    s.signal(signal.SIGTERM)
    assert s.wait() == 0
    assert not pidfile.exists()


def test_daemon_with_a_busy_port_fails_in_the_foreground(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_serve("--daemon", "--listen", f"127.0.0.1:{port}", "--pidfile", str(pidfile),
                           "--log-file", str(tmp_path / "log"))  # fmt: skip
    assert f"cannot listen on 127.0.0.1:{port}: address already in use" in one_error_line(result)
    assert result.stdout == ""
    assert not pidfile.exists()


def test_daemon_needs_a_log_file(tmp_path: Path) -> None:
    line = one_error_line(run_serve("--daemon", "--listen", "127.0.0.1:0", "--pidfile", str(tmp_path / "pid")))
    assert "--daemon needs --log-file" in line


def test_unwritable_log_file_is_one_error_line(tmp_path: Path) -> None:
    line = one_error_line(run_serve("--listen", "127.0.0.1:0", "--log-file", str(tmp_path / "no" / "such" / "log")))
    assert "cannot open log file" in line and "No such file or directory" in line


def test_daemon_start_up_failure_reaches_the_launching_process(tmp_path: Path) -> None:
    """The pidfile is written by the daemon itself: its failure travels back and the launcher exits 2."""
    logfile = tmp_path / "log"
    result = run_serve("--daemon", "--listen", "127.0.0.1:0", "--pidfile", str(tmp_path / "nodir" / "pid"),
                       "--log-file", str(logfile))  # fmt: skip
    line = one_error_line(result)
    assert f"cannot write pidfile {tmp_path / 'nodir' / 'pid'}" in line
    assert result.stdout == ""
    wait_for(lambda: has_line(logfile, r"event=exit code=2$"), what="the daemon's exit")


def test_daemon_keeps_relative_paths_meaning_what_they_did(tmp_path: Path, daemon_pids: list[int]) -> None:
    """The daemon works from /, so relative --pidfile, --log-file, --unix and --record are resolved first."""
    result = subprocess.run(serve_cmd("--daemon", "--unix", "gdb.sock", "--pidfile", "pid", "--log-file", "log",
                                      "--record", "rec"),
                            capture_output=True, text=True, timeout=20, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    pid = pid_from(tmp_path / "pid")
    daemon_pids.append(pid)
    client = RspClient(str(tmp_path / "gdb.sock"))
    assert client.packet(b"?").startswith(b"T05")
    client.close()
    wait_for(lambda: has_line(tmp_path / "log", r"event=disconnect "), what="disconnect logged")
    assert list((tmp_path / "rec").glob("*.rsp")), "a transcript was recorded"
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: gone(pid), what="daemon exit")
    assert not (tmp_path / "pid").exists() and not (tmp_path / "gdb.sock").exists()
