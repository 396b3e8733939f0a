"""Structured log lines: `<time> <LEVEL> <logger> event=NAME key=value ...`, one per event."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from gdbstub.logfmt import Quoted, kv
from tests.daemon.support import LOG_LINE, RspClient, Served, has_line, log_lines, symbols, wait_for


def test_kv_quotes_whatever_is_not_plain() -> None:
    line = str(kv("x", peer="127.0.0.1:5", n=3, ok=True, none=None, note="two words", text=Quoted("plain"),
                  evil='a "b"\nevent=forged', data=b"m40\x00"))  # fmt: skip
    assert line == (r'event=x peer=127.0.0.1:5 n=3 ok=true note="two words" text="plain" '
                    r'evil="a \"b\"\nevent=forged" data="m40\u0000"')  # fmt: skip
    assert LOG_LINE.match(f"2025-01-01T00:00:00.000Z INFO gdbstub.x {line}")


def test_a_session_is_logged_as_structured_lines(tmp_path: Path, serve: Callable[..., Served]) -> None:
    logfile = tmp_path / "log"
    s = serve("--listen", "127.0.0.1:0", "--log-file", str(logfile))
    counter = symbols()["counter"]
    client = RspClient(s.where)
    client.packet(b"qSupported:swbreak+;hwbreak+")
    assert client.packet(b"Z2,%x,8" % counter) == b"OK"
    assert client.packet(b"c").startswith(b"T05watch:%x;" % counter)
    assert client.packet(b"m3ffffffc,4") == b"E14"
    client.close()
    wait_for(lambda: has_line(logfile, r"event=disconnect "), what="disconnect logged")

    lines = log_lines(logfile)
    assert all(LOG_LINE.match(ln) for ln in lines), lines
    text = "\n".join(lines)
    assert re.search(r" INFO gdbstub\.server event=connect peer=127\.0\.0\.1:(\d+)$", text, re.M)
    assert re.search(r' INFO gdbstub\.guest event=uart text="demo guest started"$', text, re.M)
    assert re.search(rf" INFO gdbstub\.server event=stop reason=watch signal=5 addr={counter:#x} detail=", text)
    assert re.search(r' INFO gdbstub\.session event=refused packet="m3ffffffc,4" error="', text)
    assert re.search(r" INFO gdbstub\.server event=disconnect peer=127\.0\.0\.1:\d+$", text, re.M)


def test_log_level_warning_keeps_only_warnings(tmp_path: Path, serve: Callable[..., Served]) -> None:
    logfile = tmp_path / "log"
    s = serve("--listen", "127.0.0.1:0", "--log-file", str(logfile), "--log-level", "warning")
    first = RspClient(s.where)
    first.packet(b"?")
    RspClient(s.where).read_to_eof()  # refused: another client is attached
    wait_for(lambda: has_line(logfile, r"event=refuse "), what="the refusal")
    assert all(" WARNING " in ln for ln in log_lines(logfile)), log_lines(logfile)


def test_log_level_debug_shows_packets(tmp_path: Path, serve: Callable[..., Served]) -> None:
    logfile = tmp_path / "log"
    s = serve("--listen", "127.0.0.1:0", "--log-file", str(logfile), "--log-level", "debug")
    RspClient(s.where).packet(b"qfThreadInfo")
    wait_for(lambda: has_line(logfile, r' DEBUG gdbstub\.server event=packet data="qfThreadInfo"$'), what="packet")
