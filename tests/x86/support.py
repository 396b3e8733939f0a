"""The real gdbstub Server over a fake x86-64 backend, on 127.0.0.1:0 in a thread, and gdb against it."""

from __future__ import annotations

import socket
import subprocess
import threading
from types import TracebackType

import trio

from gdbstub.server import Server
from gdbstub.target import Target
from tests.conftest import ROOT
from tests.x86.fake import FakeX86Backend


class ServerThread:
    """`with ServerThread(backend) as s:` serves until the block ends; ``s.address`` is HOST:PORT."""

    def __init__(self, backend: FakeX86Backend) -> None:
        self.backend = backend
        self.target = Target(backend)
        self.server = Server(self.target)
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.bind(("127.0.0.1", 0))
        raw.listen(4)
        self._raw = raw
        self.address = f"127.0.0.1:{raw.getsockname()[1]}"
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        async def amain() -> None:
            self._token = trio.lowlevel.current_trio_token()
            self._stop = trio.Event()
            listener = trio.SocketListener(trio.socket.from_stdlib_socket(self._raw))
            async with trio.open_nursery() as nursery:
                await nursery.start(self.server.serve, [listener])
                self._ready.set()
                await self._stop.wait()
                await self.server.shutdown()
                nursery.cancel_scope.cancel()

        try:
            trio.run(amain)
        except BaseException as e:  # surfaced by __exit__
            self._error = e
            self._ready.set()

    def __enter__(self) -> ServerThread:
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        if self._token is not None and self._stop is not None:
            trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join(10)
        if self._error is not None:
            raise self._error


def gdb_batch(gdb: str, address: str, commands: list[str], *, timeout: float = 60) -> str:
    """gdb-multiarch -batch with no program file: the architecture comes from target.xml alone."""
    argv = [gdb, "-nx", "-batch", "-q", "-ex", "set pagination off", "-ex", "set confirm off",
            "-ex", f"target remote {address}"]  # fmt: skip
    for c in commands:
        argv += ["-ex", c]
    out = subprocess.run(argv, capture_output=True, timeout=timeout, cwd=ROOT)
    return out.stdout.decode(errors="replace") + out.stderr.decode(errors="replace")
