"""Faults: clients vanishing at the worst moment, the guest faulting, the backend failing.  The server
must stay up, keep the guest halted and intact, and answer the next client."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest
import trio

from backends.api import BackendError, Exit
from backends.elf import load_image
from backends.sim import SimBackend
from gdbstub.rsp import Connection, Packet
from gdbstub.server import Server
from gdbstub.session import Session
from gdbstub.target import GDB_SIGBUS, Target
from tests.conftest import DEMO_ELF, ServerProcess
from tests.robustness.support import BUSY, G_HEX, RawClient, connect, frame

ZEROS = 0x4010_0000  # guest RAM past the demo image: 0x00000000 there is UDF #0


def le64(value: int) -> bytes:
    return value.to_bytes(8, "little").hex().encode()


def is_stop(reply: bytes, signal: int) -> bool:
    return reply.startswith(b"T%02x" % signal) and b"thread:1;" in reply


def alive(server: ServerProcess) -> None:
    assert server.proc.poll() is None, server.log()


# ---------------------------------------------------------------- clients vanishing


@pytest.mark.parametrize("cut", [1, 5, 11])
def test_disconnect_mid_packet(server: ServerProcess, cut: int) -> None:
    c = connect(server.port)
    regs = c.packet(b"g")
    c.send(frame(b"M40000000,4:00000000")[:cut])  # half a write: must never land
    c.close()
    c = connect(server.port)
    assert c.packet(b"g") == regs
    assert c.packet(b"m40000000,4") == b"200000b0"
    c.close()
    alive(server)


def test_disconnect_mid_continue_leaves_the_guest_halted(server: ServerProcess) -> None:
    c = connect(server.port)
    c.send(frame(b"Z0,40000024,4") + frame(b"vCont;c"))  # a breakpoint the guest never reaches (_start's hang)
    assert c.reply() == b"OK"
    time.sleep(0.2)
    c.close()
    c = connect(server.port)
    stop = c.packet(b"?")
    assert is_stop(stop, 2), stop  # the server halted it when the client left
    regs = c.packet(b"g")
    assert len(regs) == G_HEX
    time.sleep(0.1)
    assert c.packet(b"g") == regs  # and it stays halted
    assert is_stop(c.packet(b"s"), 5)
    c.close()
    alive(server)


def test_disconnect_mid_step(server: ServerProcess) -> None:
    c = connect(server.port)
    c.send(frame(b"s"))
    c.close()
    c = connect(server.port)
    stop = c.packet(b"?")
    assert is_stop(stop, 5) and b"20:0400004000000000;" in stop  # one instruction, then halted
    assert c.packet(b"p20") == le64(0x4000_0004)
    c.close()
    alive(server)


def test_many_abrupt_disconnects(server: ServerProcess) -> None:
    for i in range(30):
        c = connect(server.port)
        c.send([frame(b"vCont;c"), frame(b"g")[:3], b"\x03" * 10, frame(b"s")][i % 4])
        c.close()
    c = connect(server.port)
    assert len(c.packet(b"g")) == G_HEX
    c.close()
    alive(server)


def test_disconnect_with_a_continue_queued_behind_a_running_one(server: ServerProcess) -> None:
    c = connect(server.port)
    c.send(frame(b"vCont;c") + frame(b"c"))
    time.sleep(0.1)
    c.close()
    c = connect(server.port, deadline=3)
    assert c.packet(b"qC") == b"QC1"
    c.close()


def test_second_client_is_refused_while_the_first_is_attached(server: ServerProcess) -> None:
    first = connect(server.port)
    other = RawClient(server.port)
    assert other.packet(b"qSupported") == BUSY
    with pytest.raises(ConnectionError):
        other.reply(timeout=2)  # refused, then closed
    other.close()
    assert first.packet(b"qC") == b"QC1"
    first.close()


# ---------------------------------------------------------------- the guest faulting


@pytest.mark.parametrize("how", ["P", "G", "c"])
def test_undefined_instruction_stops_with_sigill(server: ServerProcess, how: str) -> None:
    c = connect(server.port)
    assert c.packet(b"m%x,4" % ZEROS) == b"00000000"
    regs = c.packet(b"g")
    pc_at = 32 * 16  # x0..x30 and sp come first, 8 bytes (16 hex digits) each
    if how == "P":
        assert c.packet(b"P20=" + le64(ZEROS)) == b"OK"
        c.send(frame(b"vCont;c"))
    elif how == "G":
        assert c.packet(b"G" + regs[:pc_at] + le64(ZEROS) + regs[pc_at + 16 :]) == b"OK"
        c.send(frame(b"c"))
    else:
        c.send(frame(b"c%x" % ZEROS))
    stop = c.reply()
    assert is_stop(stop, 4) and b"20:" + le64(ZEROS) + b";" in stop, stop
    after = c.packet(b"g")
    assert after == regs[:pc_at] + le64(ZEROS) + regs[pc_at + 16 :]  # nothing else moved
    assert c.packet(b"?") == stop
    assert is_stop(c.packet(b"s"), 4)  # it faults again, in place
    assert c.packet(b"P20=" + le64(0x4000_0000)) == b"OK"  # gdb can move it on
    assert is_stop(c.packet(b"s"), 5)
    c.close()
    alive(server)


@pytest.mark.parametrize("pc", [0x10, 0x3FFF_FFFC, 0x4800_0000, 0xFFFF_FFFF_FFFF_FFFC])
def test_pc_outside_ram_stops_with_sigsegv(server: ServerProcess, pc: int) -> None:
    c = connect(server.port)
    assert c.packet(b"P20=" + le64(pc)) == b"OK"
    stop = c.packet(b"vCont;c")
    assert is_stop(stop, 11), stop
    assert c.packet(b"p20") == le64(pc)
    assert c.packet(b"qC") == b"QC1"
    c.close()
    alive(server)


def test_load_from_unmapped_memory_stops_with_sigsegv(server: ServerProcess) -> None:
    c = connect(server.port)
    ldr_x0_x1 = (0xF9400020).to_bytes(4, "little").hex().encode()  # ldr x0, [x1]
    assert c.packet(b"M%x,4:%b" % (ZEROS, ldr_x0_x1)) == b"OK"
    assert c.packet(b"P1=" + le64(0x1000)) == b"OK"
    assert c.packet(b"P0=" + le64(0x1234)) == b"OK"
    stop = c.packet(b"c%x" % ZEROS)
    assert is_stop(stop, 11), stop
    assert c.packet(b"p0") == le64(0x1234)  # the load never happened
    assert c.packet(b"p20") == le64(ZEROS)
    c.close()
    alive(server)


def test_faults_are_logged(server: ServerProcess) -> None:
    c = connect(server.port)
    assert is_stop(c.packet(b"c%x" % ZEROS), 4)
    c.close()
    deadline = time.monotonic() + 5
    while "undefined instruction at 0x40100000" not in server.log():
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("insert", "stop_kind"),
    [(b"Z2,0,80000000", b"watch:0;"), (b"Z3,0,80000000", b"rwatch:0;"), (b"Z4,40000000,8000000", b"awatch:40000000;")],
)
def test_a_watch_over_all_of_ram_stops_at_once(server: ServerProcess, insert: bytes, stop_kind: bytes) -> None:
    # The simulated core used to write-protect a watched range page by page: 2 GiB took hours of vCPU
    # thread time, out of reach of Ctrl-C, and a disconnect then wedged the server.
    c = connect(server.port)
    assert c.packet(insert) == b"OK"
    t = time.monotonic()
    stop = c.packet(b"vCont;c")
    assert is_stop(stop, 5) and stop_kind in stop, stop
    assert time.monotonic() - t < 3
    assert c.packet(b"z" + insert[1:]) == b"OK"
    c.send(frame(b"vCont;c"))
    time.sleep(0.1)
    c.send(b"\x03")
    assert is_stop(c.reply(), 2)
    c.close()
    alive(server)


# ---------------------------------------------------------------- the backend failing


class FailingBackend(SimBackend):
    """The demo guest, with a vCPU whose run() or register reads fail as an ioctl might."""

    fail_run = True
    fail_regs = False

    def run(self, vcpu: int = 0) -> Exit:
        if self.fail_run:
            raise BackendError("KVM_RUN: Bad address (EFAULT)")
        return super().run(vcpu)

    def get_regs(self, vcpu: int = 0) -> dict[str, int]:
        if self.fail_regs:
            raise BackendError("KVM_GET_ONE_REG: Input/output error")
        return super().get_regs(vcpu)


@pytest.fixture
def failing() -> Iterator[FailingBackend]:
    backend = FailingBackend(load_image(DEMO_ELF))
    yield backend
    backend.close()


@pytest.mark.parametrize("step", [False, True])
def test_backend_error_in_run_becomes_a_sigbus_stop(
    failing: FailingBackend, step: bool, caplog: pytest.LogCaptureFixture
) -> None:
    target = Target(failing)
    session = Session(target, Connection())
    with caplog.at_level(logging.ERROR, logger="gdbstub.target"):
        stop = target.resume(step)
    assert stop.signal == GDB_SIGBUS and "EFAULT" in stop.detail
    assert any(r.levelno == logging.ERROR and "EFAULT" in r.getMessage() for r in caplog.records)  # a log line
    assert session.stop_reply(stop).startswith(b"T0athread:1;core:0;20:0000004000000000;")
    assert session.handle(b"?") == session.stop_reply(stop)
    failing.fail_run = False  # the backend recovers: the next run works, debug state pushed again
    assert target.resume(True).signal == 5
    assert session.handle(b"p20") == le64(0x4000_0004)


def test_backend_error_in_a_packet_is_an_error_reply(failing: FailingBackend) -> None:
    session = Session(Target(failing), Connection())
    failing.fail_regs = True
    assert session.handle(b"g") == b"E05"
    failing.fail_regs = False
    assert len(session.handle(b"g") or b"") == G_HEX


async def _exchange(stream: trio.SocketStream, payload: bytes, conn: Connection) -> bytes:
    await stream.send_all(frame(payload))
    while True:
        for ev in conn.feed(await stream.receive_some(65536)):
            assert isinstance(ev, Packet)
            return ev.data


async def test_server_survives_a_failing_backend(failing: FailingBackend) -> None:
    server = Server(Target(failing))
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve, listeners)
        for _ in range(2):  # and the next client is served too
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            conn = Connection()
            assert await _exchange(stream, b"QStartNoAckMode", conn) == b"OK"
            conn.start_no_ack()
            await stream.send_all(b"+")
            assert (await _exchange(stream, b"vCont;c", conn)).startswith(b"T0a")
            assert (await _exchange(stream, b"s", conn)).startswith(b"T0a")
            failing.fail_regs = True
            assert await _exchange(stream, b"g", conn) == b"E05"
            failing.fail_regs = False
            assert len(await _exchange(stream, b"g", conn)) == G_HEX
            await stream.aclose()
            await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
