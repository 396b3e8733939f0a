"""Fixtures for the daemon tests: every process a test starts is killed at teardown, even on failure."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.daemon.support import Served, kill_quietly


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    started: list[Served] = []

    def start(*args: str, **kw: object) -> Served:
        s = Served(tmp_path, *args, **kw)  # type: ignore[arg-type]
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


@pytest.fixture
def daemon_pids() -> Iterator[list[int]]:
    """Pids of daemons a test started (read from their pidfiles): killed at teardown if still alive."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        kill_quietly(pid)
