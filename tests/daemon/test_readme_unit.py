"""The README's systemd unit works as written: its ExecStart line serves in the foreground, ExecReload
(SIGHUP) reopens the log, and a stop (SIGTERM, systemd's default) exits 0.  Only the installed script's
path, the guest image, the port (0) and the log path are swapped for this machine's."""

from __future__ import annotations

import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

from tests.conftest import DEMO_ELF, ROOT
from tests.daemon.support import RspClient, has_line, wait_for


def _unit() -> str:
    readme = (ROOT / "README.md").read_text()
    m = re.search(r"```ini\n(.*?\[Service\].*?)```", readme, re.S)
    assert m, "the README has a systemd unit"
    return m.group(1)


def test_readme_systemd_unit_runs_as_written(tmp_path: Path) -> None:
    unit = _unit()
    settings = dict(re.findall(r"^(\w+)=(.*)$", unit, re.M))
    assert settings["Type"] == "simple"
    assert settings["ExecReload"] == "/bin/kill -HUP $MAINPID"
    argv = shlex.split(settings["ExecStart"])
    assert argv[0] == "/usr/local/bin/gdbstub" and "--daemon" not in argv
    logfile = tmp_path / "gdbstub.log"
    swap = {"/srv/gdbstub/guest.elf": str(DEMO_ELF), "127.0.0.1:1234": "127.0.0.1:0",
            "/var/log/gdbstub.log": str(logfile)}  # fmt: skip
    assert set(swap) <= set(argv), argv
    cmd = [sys.executable, "-m", "gdbstub", *(swap.get(a, a) for a in argv[1:])]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/")  # systemd's default cwd
    try:
        assert proc.stdout is not None
        m = re.search(r"listening on (127\.0\.0\.1:\d+)", proc.stdout.readline().decode())
        assert m
        assert RspClient(m.group(1)).packet(b"?").startswith(b"T05")
        logfile.rename(tmp_path / "gdbstub.log.1")
        proc.send_signal(signal.SIGHUP)  # systemctl reload
        wait_for(lambda: has_line(logfile, r"event=reopen signal=SIGHUP$"), what="the log reopened")
        proc.send_signal(signal.SIGTERM)  # systemctl stop
        assert proc.wait(5) == 0
        assert proc.stderr is not None and proc.stderr.read() == b""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
