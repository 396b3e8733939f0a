"""The trio server: moves bytes between sockets and the sans-IO session, runs the vCPU on a worker thread.

One client at a time.  The guest and its state belong to the server, not to a
connection: a client that disconnects (cleanly or not, running or stopped)
leaves the guest halted and intact, minus that client's breakpoints.  After
``detach`` the guest runs on freely until the next client attaches and halts it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import struct
import threading
import time
from collections import deque
from typing import Any

import trio

from gdbstub.logfmt import kv
from gdbstub.monitor import run_command
from gdbstub.rsp import BadPacket, Connection, Interrupt, Oversized, Packet
from gdbstub.session import E_INVAL, Detach, HexData, Kill, Resume, Session
from gdbstub.target import StopEvent, StopKind, Target
from gdbstub.transcript import ConnectionRecorder, Recorder

log = logging.getLogger("gdbstub.server")

MAX_PACKET = 0x4000
MAX_QUEUED = 256  # packets kept while the guest runs (a well-behaved gdb sends none)
SHUTDOWN_QUIET = 0.25  # after the owed stop reply, gdb's burst of reads to show where it stopped ends
SHUTDOWN_MAX = 3.0  # ... and a client that keeps talking (or stops reading) cannot hold up the exit
REFUSE_QUIET = 0.2  # a refused client silent this long after our last error packet is closed
REFUSE_LINGER = 2.0  # ... and one that keeps talking is closed after this long anyway
# While the guest is stopped gdb's next packet follows our reply within microseconds (stepping, memory
# dumps, `info registers`): the reader waits up to FAST_WAIT for it in a blocking read on the socket
# instead of through trio's scheduler, which costs more than the packet itself.  (A socket receive
# timeout, not poll(): on virtual machines a poll timeout's high-resolution timer costs ~5 us each time.)
# That blocks trio meanwhile, so the reader goes back to trio after FAST_SLICE seconds at most: new
# clients, signals and shutdown wait no longer.
FAST_WAIT = 0.001
FAST_SLICE = 0.005
# After a Ctrl-C the reader waits up to this long for the vCPU thread to stop and sends the stop reply
# itself, sparing the hand-back through trio's scheduler (else the running task reports it as usual).
INTERRUPT_WAIT = 0.005


class Server:
    def __init__(self, target: Target, max_packet: int = MAX_PACKET, recorder: Recorder | None = None) -> None:
        self.target = target
        self.recorder = recorder
        self.max_packet = max_packet
        self._busy = False
        self._closing = False
        self._client: _Client | None = None
        self._free_run_done: trio.Event | None = None

    async def serve(self, listeners: list[trio.SocketListener], task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.serve_listeners(self._handle, listeners, handler_nursery=nursery)

    async def shutdown(self) -> None:
        """Stop serving (SIGTERM/SIGINT): halt the guest; a client whose guest was running gets the stop
        reply it is owed, so gdb shows where it stopped; then the connection and listeners close."""
        self._closing = True
        if self._client is not None:
            await self._client.close()
        await self._halt_free_run()
        self._nursery.cancel_scope.cancel()

    async def _handle(self, stream: trio.SocketStream) -> None:
        peer = _peer(stream)
        if self._busy and not self._closing:
            # gdb reconnects at once after `detach` or `kill`: give a session that is ending a moment
            # to finish before treating the newcomer as a second client
            with trio.move_on_after(1.0):
                while self._busy:
                    await trio.sleep(0.005)
        if self._busy or self._closing:
            why = b"another gdb client is already connected" if self._busy else b"the gdbstub server is shutting down"
            log.warning(kv("refuse", peer=peer, reason=why.decode()))
            await _refuse(stream, why)
            return
        self._busy = True
        log.info(kv("connect", peer=peer))
        try:
            await self._session(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
            log.info(kv("connection_lost", peer=peer, error=str(e)))
        finally:
            self._busy = False
            with trio.CancelScope(shield=True):
                await stream.aclose()
            log.info(kv("disconnect", peer=peer))

    async def _halt_free_run(self) -> None:
        if self._free_run_done is not None:
            self.target.interrupt()
            await self._free_run_done.wait()
            self._free_run_done = None

    def _start_free_run(self) -> None:
        done = trio.Event()
        self._free_run_done = done
        self.target.begin_resume()

        async def free_run() -> None:
            try:
                stop = await trio.to_thread.run_sync(self.target.resume, False)
                log.info(kv("stop", **_stop_fields(stop), free_run=True))
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
        rec = self.recorder.connection(_peer(stream)) if self.recorder is not None else None
        try:
            self._client = _Client(self.target, session, conn, stream, rec)
            await self._client.serve()
        finally:
            self._client = None
            if rec is not None:
                rec.close()
        self.target.clear_debugger_state()
        if session.detached and not self._closing:
            log.info(kv("detach", guest="running"))
            self._start_free_run()


class _Run:
    """One `continue`: the guest runs on a worker thread until it stops."""

    def __init__(self) -> None:
        self.done = threading.Event()  # set on the worker thread once resume() returned
        self.stop: StopEvent | None = None
        self.reported = False


class _Client:
    """One connection's loop.  Packets are handled as they arrive, in the reader task: a single step
    runs inline (it is bounded to one instruction), a continue runs on a worker thread while the reader
    keeps reading, so that Ctrl-C (0x03) reaches the vCPU.  Packets that arrive while the guest runs
    wait until it stops (all-stop mode: gdb sends none but 0x03).

    Speed: while the guest is stopped, replies are written straight to the socket and the next packet
    is read straight from it (FAST_WAIT, FAST_SLICE); trio's scheduler is the slow path, taken when the
    client pauses, the guest runs, or after FAST_SLICE of direct traffic.  The socket is in blocking mode
    only inside that direct path: whenever trio may touch it, it is non-blocking again."""

    def __init__(
        self,
        target: Target,
        session: Session,
        conn: Connection,
        stream: trio.SocketStream,
        rec: ConnectionRecorder | None = None,
    ) -> None:
        self.rec = rec  # None unless --record: then every byte each way goes to the transcript
        self.target = target
        self.session = session
        self.conn = conn
        self.stream = stream
        self.running = False
        self.finished = False  # D or k: close once the replies are out
        self.queued: deque[Packet | Oversized] = deque()
        self.send_lock = trio.Lock()
        self.stopped = trio.Event()
        self.run: _Run | None = None  # the current or last `continue`
        self.closing = False  # server shutdown: packets are still answered, but nothing resumes the guest
        self.gone = False  # the client hung up: nothing queued may resume the guest any more
        self.last_input = 0.0  # time.monotonic() of the client's last bytes
        sock = getattr(stream, "socket", None)  # the trio socket, for the direct paths below
        self.fd = sock.fileno() if sock is not None else -1  # -1 once serve() is over (the stream closes then)
        self.blocking = False  # the socket is in blocking mode (with timeouts) for the direct path
        if sock is not None:  # the timeouts apply only while blocking: trio never sees them
            timeout = struct.pack("@ll", 0, int(FAST_WAIT * 1e6))  # struct timeval
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeout)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeout)
            except OSError:
                self.fd = -1  # no bounded blocking wait on this socket: everything goes through trio
        self.last_yield = time.monotonic()  # when the reader last went through trio

    async def flush(self) -> None:
        if not self.send_lock.locked():  # nothing in flight: write straight to the socket, no scheduling
            out = self.conn.data_to_send()
            if not out:
                return
            if self.rec is not None:
                self.rec.server_output(out)
            sent = self._send_now(out)
            if sent < len(out):  # the socket buffer is full: the rest the trio way, in order
                async with self.send_lock:
                    await self.stream.send_all(out[sent:])
            return
        async with self.send_lock:
            out = self.conn.data_to_send()
            if out:
                if self.rec is not None:
                    self.rec.server_output(out)
                await self.stream.send_all(out)

    def _send_now(self, out: bytes) -> int:
        """As much of OUT as the socket takes at once (or within FAST_WAIT, in blocking mode); the socket
        is back in non-blocking mode, for trio, if that was not all of it."""
        if self.fd < 0:
            return 0
        try:
            sent = os.write(self.fd, out)
        except BlockingIOError:
            sent = 0
        except OSError as e:
            raise trio.BrokenResourceError(str(e)) from e
        if sent < len(out):
            self._set_blocking(False)
        return sent

    def _receive_now(self) -> bytes | None:
        """The client's next bytes if they come within FAST_WAIT while the guest is stopped (b"" at EOF);
        None to wait through trio (guest running, no socket, idle client, or trio's turn), with the socket
        back in non-blocking mode."""
        if self.fd < 0 or self.running or self.finished or time.monotonic() - self.last_yield > FAST_SLICE:
            self._set_blocking(False)
            return None
        self._set_blocking(True)
        try:
            return os.read(self.fd, 65536)
        except BlockingIOError:  # nothing within FAST_WAIT
            self._set_blocking(False)
            return None

    def _set_blocking(self, blocking: bool) -> None:
        """Blocking (with the FAST_WAIT timeouts) for the direct path; non-blocking whenever trio may use it."""
        if blocking != self.blocking and self.fd >= 0:
            os.set_blocking(self.fd, blocking)
            self.blocking = blocking

    async def serve(self) -> None:
        try:
            await self._serve()
        finally:
            self.fd = -1  # the stream closes after this: its descriptor number may soon belong to another socket

    async def _serve(self) -> None:
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            try:
                while not self.finished:
                    data = self._receive_now()
                    if data is None:
                        data = await self.stream.receive_some(65536)
                        self.last_yield = time.monotonic()
                    if not data:
                        break
                    self.last_input = time.monotonic()
                    if self.rec is not None:
                        self.rec.client_bytes(data)
                    for ev in self.conn.feed(data):
                        self.on_event(ev)
                    await self.flush()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
            self.gone = True
            if self.running:  # the client went away while the guest ran: halt it, keep its state
                self.target.interrupt()
                await self.stopped.wait()
            nursery.cancel_scope.cancel()

    async def close(self) -> None:
        """Server shutdown.  A running guest is halted and the client gets the stop reply it is owed; gdb
        then reads registers and memory to show where the guest stopped, so packets are answered until it
        goes quiet (bounded), but none resumes the guest.  The caller then cancels the connection."""
        self.closing = True
        if not self.running:
            return
        self.target.interrupt()
        await self.stopped.wait()
        self.last_input = time.monotonic()
        with trio.move_on_after(SHUTDOWN_MAX), contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self.flush()
            while (quiet := time.monotonic() - self.last_input) < SHUTDOWN_QUIET and not self.finished:
                await trio.sleep(SHUTDOWN_QUIET - quiet)

    def on_event(self, ev: Packet | Oversized | Interrupt | BadPacket) -> None:
        if isinstance(ev, Interrupt):
            if self.running:
                self.target.interrupt()
                run = self.run
                if run is not None and run.done.wait(INTERRUPT_WAIT):  # the vCPU stops within microseconds
                    self.finish_run(run)
        elif isinstance(ev, BadPacket):
            log.info(kv("bad_packet", reason=ev.reason))
            if not ev.reason.startswith(("checksum", "malformed checksum")) and not self.running:
                self.conn.send(E_INVAL)  # acked but undecodable: answer, or gdb waits for a reply
        elif self.running or self.finished:
            if len(self.queued) < MAX_QUEUED:  # all-stop gdb sends nothing but 0x03 while the guest runs
                self.queued.append(ev)
            elif len(self.queued) == MAX_QUEUED:
                log.warning(kv("error", reason="client floods packets while the guest runs: dropping them"))
                self.queued.append(ev)
        else:
            self.process(ev)

    def process(self, ev: Packet | Oversized) -> None:
        if isinstance(ev, Oversized):
            self.conn.send(E_INVAL)
            return
        if log.isEnabledFor(logging.DEBUG):
            log.debug(kv("packet", data=ev.data[:200]))
        reply = self.session.handle(ev.data)
        if isinstance(reply, Resume) and self.closing:
            self.conn.send(b"E.the gdbstub server is shutting down")
        elif isinstance(reply, Resume):
            if reply.step and self.target.caps.vcpus == 1:
                # one instruction, right here: no 0x03 can arrive meanwhile, no thread to hand over to
                self.report(self.target.resume(True))
            else:  # a continue, or a step while other vCPUs may run: on a worker thread
                self.target.begin_resume()  # from here an interrupt counts, until resume() returns
                self.running = True
                self.stopped = trio.Event()
                self.run = _Run()
                self.nursery.start_soon(self.run_guest, self.run, reply.step)
        elif isinstance(reply, (Detach, Kill)):
            self.finished = True
        elif reply is not None:
            self.conn.send(reply, hex_data=isinstance(reply, HexData))

    def report(self, stop: StopEvent) -> None:
        if log.isEnabledFor(logging.INFO):
            log.info(kv("stop", **_stop_fields(stop)))
        try:
            reply = self.session.stop_reply(stop)
        except Exception as e:  # reading the expedited registers failed: the stop without them
            log.error(kv("error", where="stop_reply", error=f"{type(e).__name__}: {e}"))
            reply = b"S%02x" % stop.signal
        self.conn.send(reply)

    async def run_guest(self, run: _Run, step: bool = False) -> None:
        def work() -> None:
            run.stop = self.target.resume(step)
            run.done.set()

        await trio.to_thread.run_sync(work)
        self.finish_run(run)
        try:
            await self.flush()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass

    def finish_run(self, run: _Run) -> None:
        """The guest stopped: report it (once: the reader may have, after a Ctrl-C) and handle what gdb
        sent meanwhile."""
        if run.reported or run.stop is None:
            return
        run.reported = True
        self.running = False
        self.stopped.set()
        self.report(run.stop)
        while self.queued and not self.running and not self.finished and not self.gone:
            self.process(self.queued.popleft())


async def _refuse(stream: trio.SocketStream, why: bytes) -> None:
    """Tell a client we cannot serve why: an error packet as the reply to each packet it sends until it
    hangs up or goes quiet (a client that says nothing gets one anyway).  gdb then prints the reason
    instead of a bare "connection closed" (while it waits for an ack it would drop a packet sent before
    its first one); and its input is read, so the close sends no TCP reset that could swallow the reply."""
    conn = Connection()
    answered = False
    with trio.move_on_after(REFUSE_LINGER):
        try:
            while True:
                data = b""
                with trio.move_on_after(REFUSE_QUIET):
                    data = await stream.receive_some(4096)
                if not data:  # it hung up, or has nothing (more) to say
                    if not answered:
                        conn.send(b"E." + why)
                        await stream.send_all(conn.data_to_send())
                    break
                for ev in conn.feed(data):
                    if isinstance(ev, (Packet, Oversized)):
                        conn.send(b"E." + why)
                        answered = True
                out = conn.data_to_send()
                if out:
                    await stream.send_all(out)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
    with trio.CancelScope(shield=True):
        await stream.aclose()


def _stop_fields(stop: StopEvent) -> dict[str, object]:
    watch = stop.kind in (StopKind.WATCH, StopKind.RWATCH, StopKind.AWATCH)
    return {"reason": stop.kind.value, "signal": stop.signal, "addr": hex(stop.addr) if watch else None,
            "status": stop.status if stop.kind is StopKind.EXITED else None, "detail": stop.detail or None}  # fmt: skip


def _peer(stream: trio.SocketStream) -> str:
    try:
        name = stream.socket.getpeername()
    except OSError:
        return "?"
    if isinstance(name, tuple):
        return f"{name[0]}:{name[1]}"
    return str(name) or "unix socket"
