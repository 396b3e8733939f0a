"""The trio server: moves bytes between sockets and the sans-IO session, runs the vCPU on a worker thread.

One client at a time.  The guest and its state belong to the server, not to a
connection: a client that disconnects (cleanly or not, running or stopped)
leaves the guest halted and intact, minus that client's breakpoints.  After
``detach`` the guest runs on freely until the next client attaches and halts it.
"""

from __future__ import annotations

import logging
import math
import socket
from collections import deque
from typing import Any

import trio

from gdbstub.monitor import run_command
from gdbstub.rsp import BadPacket, Connection, Interrupt, Oversized, Packet
from gdbstub.session import Detach, Kill, Resume, Session
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
        send, recv = trio.open_memory_channel[tuple[str, Any]](math.inf)

        async def reader() -> None:
            try:
                while True:
                    data = await stream.receive_some(65536)
                    if not data:
                        break
                    await send.send(("data", data))
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
            await send.send(("eof", None))

        async def run(step: bool) -> None:
            stop = await trio.to_thread.run_sync(self.target.resume, step)
            await send.send(("stop", stop))

        running = False
        closing = False
        after: Detach | Kill | None = None
        queued: deque[Packet | Oversized] = deque()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)

            def process(ev: Packet | Oversized) -> bool:
                """Handle one packet; True if the guest now runs."""
                nonlocal after
                if isinstance(ev, Oversized):
                    conn.send(b"E16")
                    return False
                log.debug("<- %r", ev.data[:200])
                reply = session.handle(ev.data)
                if isinstance(reply, Resume):
                    nursery.start_soon(run, reply.step)
                    return True
                if isinstance(reply, (Detach, Kill)):
                    after = reply
                elif reply is not None:
                    conn.send(reply)
                return False

            async for kind, payload in recv:
                if kind == "data":
                    for ev in conn.feed(payload):
                        if isinstance(ev, Interrupt):
                            if running:
                                self.target.interrupt()
                        elif isinstance(ev, BadPacket):
                            log.info("bad packet from client: %s", ev.reason)
                            if not ev.reason.startswith(("checksum", "malformed checksum")) and not running:
                                conn.send(b"E16")  # acked but undecodable: answer, or gdb waits for a reply
                        elif running or after is not None:
                            queued.append(ev)
                        else:
                            running = process(ev)
                elif kind == "stop":
                    running = False
                    stop: StopEvent = payload
                    log.info("stop: %s signal %d %s", stop.kind.value, stop.signal, stop.detail)
                    if closing:
                        break
                    conn.send(session.stop_reply(stop))
                    while queued and not running and after is None:
                        running = process(queued.popleft())
                elif kind == "eof":
                    if not running:
                        break
                    closing = True
                    self.target.interrupt()
                    continue
                out = conn.data_to_send()
                if out:
                    await stream.send_all(out)
                if after is not None and not running:
                    break
            nursery.cancel_scope.cancel()
        self.target.clear_debugger_state()
        if isinstance(after, Detach):
            log.info("client detached: the guest runs on")
            self._start_free_run()


def _peer(stream: trio.SocketStream) -> str:
    try:
        name = stream.socket.getpeername()
    except OSError:
        return "?"
    if isinstance(name, tuple):
        return f"{name[0]}:{name[1]}"
    return str(name) or "unix socket"
