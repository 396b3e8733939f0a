"""Structured log lines: a fixed prefix (UTC time, level, logger) then ``event=NAME key=value ...``.

One line per event, ``key=value`` pairs that a script can split without knowing every message:
``2025-01-02T03:04:05.678Z INFO gdbstub.server event=connect peer=127.0.0.1:5555``.  A value with
anything but plain characters is JSON-quoted, so text from the guest or a peer can never break a
line or forge a field.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any, TextIO

__all__ = ["Quoted", "ReopenableFileHandler", "kv", "setup_logging"]

_PLAIN = re.compile(r"[A-Za-z0-9_.:/@+,\[\]-]+")
LEVELS = ("debug", "info", "warning", "error")


class Quoted(str):
    """A value that is always quoted (free text such as UART output), even when it looks plain."""


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, bytes | bytearray):
        value = Quoted(bytes(value).decode("latin-1"))
    text = str(value)
    if isinstance(value, Quoted) or not _PLAIN.fullmatch(text):
        return json.dumps(text, ensure_ascii=False)
    return text


class kv:  # noqa: N801 - used like a function: log.info(kv("connect", peer=...))
    """The message of one structured line; formatted only if a handler takes the record."""

    __slots__ = ("event", "fields")

    def __init__(self, event: str, **fields: Any) -> None:
        self.event = event
        self.fields = fields

    def __str__(self) -> str:
        parts = [f"event={self.event}"]
        parts += [f"{k}={_value(v)}" for k, v in self.fields.items() if v is not None]
        return " ".join(parts)


class _Formatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


class ReopenableFileHandler(logging.FileHandler):
    """A log file that ``reopen()`` (SIGHUP) closes and opens again by name, as logrotate expects:
    after the old file is renamed, new lines go to a fresh file at the configured path."""

    def __init__(self, path: str) -> None:
        super().__init__(path, mode="a", encoding="utf-8")

    def reopen(self) -> None:
        self.acquire()
        try:
            old = self.stream
            self.stream = self._open()
            if old is not None:
                old.close()
        finally:
            self.release()


def setup_logging(level: str, log_file: str | None, stream: TextIO | None = None) -> logging.Handler:
    """Route the ``gdbstub`` loggers to one handler (the log file, else stderr); opens the file now, so
    that a bad path is reported before the server starts (and before a daemon loses its stderr)."""
    handler: logging.Handler = (
        ReopenableFileHandler(log_file) if log_file else logging.StreamHandler(stream or sys.stderr)
    )
    handler.setFormatter(_Formatter())
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
    return handler
