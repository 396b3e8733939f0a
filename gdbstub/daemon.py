"""Running as a service: the pidfile, detaching (``--daemon``) and signals.

Everything that can fail for a user's reason (image, port, pidfile, log file) is checked while the
process still has its terminal, so the error is one line and exit code 2.  ``detach()`` then forks
twice and the original process waits on a pipe until the daemon says it serves (or why it could not),
so it exits 0 only when the pidfile exists and a client can connect.

Signals are handled by trio (``trio.open_signal_receiver``) in the event loop, never in a Python
signal handler: SIGTERM/SIGINT shut the server down cleanly (a running guest is stopped and its
client gets the stop reply), SIGHUP reopens the log file after logrotate moved it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import trio

from gdbstub.logfmt import kv
from gdbstub.server import Server

log = logging.getLogger("gdbstub.daemon")

DAEMON_UMASK = 0o027  # log and pidfile readable by the group at most: the log holds guest output


class PidfileError(Exception):
    """The pidfile cannot be used: another instance runs, or the path holds something else."""


def _alive(pid: int) -> bool:
    """Whether pid is a live process (a zombie, exited but not yet reaped, counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            state = f.read().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def check_pidfile(path: Path) -> None:
    """Refuse to start if ``path`` names a live process; a stale one (dead pid) is replaced later."""
    try:
        text = path.read_text(encoding="ascii", errors="replace")
    except FileNotFoundError:
        return
    except OSError as e:
        raise PidfileError(f"cannot read pidfile {path}: {e.strerror or e}") from None
    try:
        pid = int(text.strip())
    except ValueError:
        # Not ours to overwrite: a typo in --pidfile must not clobber some other file.
        raise PidfileError(f"pidfile {path} exists and does not hold a process id") from None
    if pid > 0 and _alive(pid):
        raise PidfileError(f"pidfile {path} names running process {pid} (is another gdbstub running?)")


def write_pidfile(path: Path) -> None:
    """Write our pid atomically (rename), so a reader never sees a half-written file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(f"{os.getpid()}\n", encoding="ascii")
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def remove_pidfile(path: Path) -> None:
    """Remove the pidfile if it still names us (a later instance may own it by now)."""
    try:
        if int(path.read_text(encoding="ascii").strip()) == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


class Readiness:
    """The daemon's end of the start-up pipe: tells the waiting foreground process how start-up went."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    def ready(self) -> None:
        self._send(b"ok")

    def failed(self, message: str) -> None:
        self._send(b"error " + message.encode(errors="replace"))

    def _send(self, message: bytes) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.write(self._fd, message)
        os.close(self._fd)
        self._fd = None


def detach(keep_fds: Iterable[int]) -> int | Readiness:
    """Become a daemon: fork, setsid, fork again, chdir /, umask, stdio to /dev/null, close other fds.

    In the original process this waits for the daemon's word and returns the exit code (0 once it
    serves; 2 after printing its error).  In the daemon it returns the Readiness to report through.
    ``keep_fds`` (listening sockets, the log file) survive; every other inherited descriptor is closed,
    so the daemon holds no pipe or terminal of whoever started it.  Call before any thread exists.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    rfd, wfd = os.pipe()
    first = os.fork()
    if first > 0:
        os.close(wfd)
        chunks = []
        while chunk := os.read(rfd, 4096):
            chunks.append(chunk)
        os.close(rfd)
        os.waitpid(first, 0)  # the intermediate child exits at once
        message = b"".join(chunks).decode(errors="replace")
        if message == "ok":
            return 0
        reason = message.removeprefix("error ") or "the daemon exited during start-up (see the log file)"
        print(f"gdbstub: error: {reason}", file=sys.stderr)
        return 2
    # intermediate child: a new session without a controlling terminal, then fork again so that the
    # daemon is not a session leader and can never acquire a terminal
    os.close(rfd)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.chdir("/")
    os.umask(DAEMON_UMASK)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    keep = {0, 1, 2, wfd, *keep_fds}
    for name in os.listdir("/proc/self/fd") if os.path.isdir("/proc/self/fd") else []:
        fd = int(name)
        if fd not in keep:
            with contextlib.suppress(OSError):
                os.close(fd)
    return Readiness(wfd)


async def run(server: Server, listeners: list[trio.SocketListener], *, on_ready: Callable[[], str | None],
              reopen_log: Callable[[], None] | None) -> str | None:  # fmt: skip
    """Serve until SIGTERM or SIGINT (or SIGHUP when there is no log file to reopen), then shut down cleanly.

    ``on_ready`` runs once the signals are ours and the server accepts clients: only then may the
    pidfile appear, so whoever reads it can signal us without killing us uncleanly.  It returns an
    error to give up with (returned here), or None.
    """
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve, listeners)
            error = on_ready()
            if error is not None:
                nursery.cancel_scope.cancel()
                return error
            async for signum in signals:
                name = signal.Signals(signum).name
                if signum == signal.SIGHUP and reopen_log is not None:
                    reopen_log()
                    log.info(kv("reopen", signal=name))
                    continue
                log.info(kv("shutdown", signal=name))
                await server.shutdown()
                break
            nursery.cancel_scope.cancel()
    return None
