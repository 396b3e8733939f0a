"""Packets mid-run, against a real `gdbstub serve` and a raw RSP client: while the guest runs, gdb
may only send 0x03, but anything can arrive.  The server must stop the guest on 0x03 with a T02
stop reply, then answer what queued up meanwhile, in order, and never crash."""

from __future__ import annotations

import time

import pytest

from tests.conftest import ServerProcess
from tests.robustness.support import G_HEX, RawClient, connect, frame


def running(client: RawClient, seconds: float = 0.2) -> bool:
    """True if no stop reply arrives within ``seconds`` (the guest is still running)."""
    try:
        reply = client.reply(timeout=seconds)
    except TimeoutError:
        return True
    client.pending.insert(0, reply)
    return False


def is_stop(reply: bytes, signal: int) -> bool:
    return reply.startswith(b"T%02x" % signal) and b"thread:1;" in reply


def test_queued_packets_are_answered_in_order_after_the_interrupt_stop(server: ServerProcess) -> None:
    c = connect(server.port)
    at_entry = c.packet(b"g")
    code = c.packet(b"m40000000,4")
    c.send(frame(b"vCont;c"))
    assert running(c)
    bad_sum = frame(b"m40000000,8")[:-2] + b"00"
    c.send(frame(b"g") + frame(b"m40000000,4") + b"garbage }*#zz \xff" + bad_sum + frame(b"qC") + frame(b"?")
           + b"\x03" * 5000)  # fmt: skip
    stop = c.reply()
    assert is_stop(stop, 2), stop
    g = c.reply()
    assert len(g) == G_HEX and g != at_entry  # the guest ran: its registers moved
    assert c.reply() == code
    assert c.reply() == b"QC1"
    assert c.reply() == stop  # `?` repeats the last stop
    assert c.packet(b"g") == g  # stopped: nothing moves any more
    assert c.packet(b"m40000000,4") == code
    c.close()


def test_interrupts_spread_over_many_reads_stop_the_guest_once(server: ServerProcess) -> None:
    c = connect(server.port)
    c.send(frame(b"vCont;c"))
    assert running(c, 0.05)
    for _ in range(50):
        c.send(b"\x03" + frame(b"qC"))
        time.sleep(0.001)
    assert is_stop(c.reply(), 2)
    assert [c.reply() for _ in range(50)] == [b"QC1"] * 50
    with pytest.raises(TimeoutError):
        c.reply(timeout=0.1)  # exactly one stop reply for the continue
    assert len(c.packet(b"g")) == G_HEX
    c.close()


def test_garbage_while_running_does_not_stop_or_kill_the_guest(server: ServerProcess) -> None:
    c = connect(server.port)
    c.send(frame(b"vCont;c"))
    assert running(c, 0.1)
    c.send(bytes(range(256)).replace(b"\x03", b"") + b"$$$###}}}***" + b"-" * 1000 + b"+" * 1000)
    assert running(c, 0.3)
    c.send(b"\x03")
    assert is_stop(c.reply(), 2)
    assert c.packet(b"qC") == b"QC1"
    c.close()


def test_interrupt_when_stopped_is_ignored(server: ServerProcess) -> None:
    c = connect(server.port)
    c.send(b"\x03" * 1000)
    assert c.packet(b"qC") == b"QC1"
    reply = c.packet(b"s")
    assert is_stop(reply, 5), reply
    c.close()


def test_the_next_resume_after_an_interrupt_flood_really_runs(server: ServerProcess) -> None:
    c = connect(server.port)
    for _ in range(3):
        c.send(frame(b"vCont;c"))
        assert running(c, 0.05)
        c.send(b"\x03" * 5000)
        assert is_stop(c.reply(), 2)
        reply = c.packet(b"s")
        assert is_stop(reply, 5), reply
    c.close()
