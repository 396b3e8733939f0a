"""The trio server: moves bytes between sockets and the sans-IO session, runs the vCPU on a worker thread.

One client at a time.  The guest and its state belong to the server, not to a
connection: a client that disconnects (cleanly or not, running or stopped)
leaves the guest halted and intact, minus that client's breakpoints.  After
``detach`` the guest runs on freely until the next client attaches and halts it.
"""

from __future__ import annotations

import logging
import socket
from collections import deque
from typing import Any

import trio

from gdbstub.monitor import run_command
from gdbstub.rsp import BadPacket, Connection, Interrupt, Oversized, Packet
from gdbstub.session import E_INVAL, Detach, Kill, Resume, Session
from gdbstub.target import StopEvent, Target

log = logging.getLogger("gdbstub.server")

MAX_PACKET = 0x4000


class Server:
    def __init__(self, target: Target, max_packet: int = MAX_PACKET) -> None:
        self.target = target
        self.max_packet = max_packet
        self._busy = False
        self._free_run_done: trio.Event | None = None

    async def serve(self, listeners: list[trio.SocketListener], task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.serve_listeners(self._handle, listeners, handler_nursery=nursery)

    async def _handle(self, stream: trio.SocketStream) -> None:
        peer = _peer(stream)
        if self._busy:
            log.warning("refused %s: another client is connected", peer)
            try:
                await stream.send_all(
                    b"$E.another gdb client is already connected#"
                    + b"%02x" % (sum(b"E.another gdb client is already connected") & 0xFF)
                )
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            await stream.aclose()
            return
        self._busy = True
        log.info("client %s connected", peer)
        try:
            await self._session(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
            log.info("client %s: connection lost: %s", peer, e)
        finally:
            self._busy = False
            with trio.CancelScope(shield=True):
                await stream.aclose()
            log.info("client %s disconnected", peer)

    async def _halt_free_run(self) -> None:
        if self._free_run_done is not None:
            self.target.interrupt()
            await self._free_run_done.wait()
            self._free_run_done = None

    def _start_free_run(self) -> None:
        done = trio.Event()
        self._free_run_done = done

        async def free_run() -> None:
            try:
                stop = await trio.to_thread.run_sync(self.target.resume, False)
                log.info("free-running guest stopped: %s %s", stop.kind.value, stop.detail)
            finally:
                done.set()

        self._nursery.start_soon(free_run)

    async def _session(self, stream: trio.SocketStream) -> None:
        try:
            stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
        except OSError:
            pass  # a unix socket has no Nagle to switch off
        await self._halt_free_run()
        self.target.clear_debugger_state()
        conn = Connection(max_packet=self.max_packet)
        session = Session(self.target, conn, monitor=lambda cmd: run_command(self.target, cmd))
        await _Client(self.target, session, conn, stream).serve()
        self.target.clear_debugger_state()
        if session.detached:
            log.info("client detached: the guest runs on")
            self._start_free_run()


class _Client:
    """One connection's loop.  Packets are handled as they arrive, in the reader task: a single step
    runs inline (it is bounded to one instruction), a continue runs on a worker thread while the reader
    keeps reading, so that Ctrl-C (0x03) reaches the vCPU.  Packets that arrive while the guest runs
    wait until it stops (all-stop mode: gdb sends none but 0x03)."""

    def __init__(self, target: Target, session: Session, conn: Connection, stream: trio.SocketStream) -> None:
        self.target = target
        self.session = session
        self.conn = conn
        self.stream = stream
        self.running = False
        self.finished = False  # D or k: close once the replies are out
        self.queued: deque[Packet | Oversized] = deque()
        self.send_lock = trio.Lock()
        self.stopped = trio.Event()

    async def flush(self) -> None:
        async with self.send_lock:
            out = self.conn.data_to_send()
            if out:
                await self.stream.send_all(out)

    async def serve(self) -> None:
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            try:
                while not self.finished:
                    data = await self.stream.receive_some(65536)
                    if not data:
                        break
                    for ev in self.conn.feed(data):
                        self.on_event(ev)
                    await self.flush()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
            if self.running:  # the client went away while the guest ran: halt it, keep its state
                self.target.interrupt()
                await self.stopped.wait()
            nursery.cancel_scope.cancel()

    def on_event(self, ev: Packet | Oversized | Interrupt | BadPacket) -> None:
        if isinstance(ev, Interrupt):
            if self.running:
                self.target.interrupt()
        elif isinstance(ev, BadPacket):
            log.info("bad packet from client: %s", ev.reason)
            if not ev.reason.startswith(("checksum", "malformed checksum")) and not self.running:
                self.conn.send(E_INVAL)  # acked but undecodable: answer, or gdb waits for a reply
        elif self.running or self.finished:
            self.queued.append(ev)
        else:
            self.process(ev)

    def process(self, ev: Packet | Oversized) -> None:
        if isinstance(ev, Oversized):
            self.conn.send(E_INVAL)
            return
        log.debug("<- %r", ev.data[:200])
        reply = self.session.handle(ev.data)
        if isinstance(reply, Resume):
            if reply.step:
                self.report(self.target.resume(True))
            else:
                self.running = True
                self.stopped = trio.Event()
                self.nursery.start_soon(self.run_guest)
        elif isinstance(reply, (Detach, Kill)):
            self.finished = True
        elif reply is not None:
            self.conn.send(reply)

    def report(self, stop: StopEvent) -> None:
        log.info("stop: %s signal %d %s", stop.kind.value, stop.signal, stop.detail)
        self.conn.send(self.session.stop_reply(stop))

    async def run_guest(self) -> None:
        stop = await trio.to_thread.run_sync(self.target.resume, False)
        self.running = False
        self.stopped.set()
        self.report(stop)
        while self.queued and not self.running and not self.finished:
            self.process(self.queued.popleft())
        try:
            await self.flush()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass


def _peer(stream: trio.SocketStream) -> str:
    try:
        name = stream.socket.getpeername()
    except OSError:
        return "?"
    if isinstance(name, tuple):
        return f"{name[0]}:{name[1]}"
    return str(name) or "unix socket"
