"""Concrete RSP framing cases, one protocol rule per test (GDB manual, Remote Protocol)."""

from __future__ import annotations

import pytest

from gdbstub.rsp import BadPacket, Connection, Interrupt, Oversized, Packet


def frame(body: bytes, checksum: str | None = None) -> bytes:
    """A packet exactly as written: ``body`` is sent raw (already escaped)."""
    if checksum is None:
        checksum = f"{sum(body) % 256:02x}"
    return b"$" + body + b"#" + checksum.encode()


def test_simple_packet_is_acked() -> None:
    conn = Connection()
    assert conn.feed(b"$m40000000,8#55") == [Packet(b"m40000000,8")]
    assert conn.data_to_send() == b"+"
    assert conn.data_to_send() == b""


def test_checksum_uppercase_accepted() -> None:
    conn = Connection()
    upper = b"$qC#B4"
    assert frame(b"qC") == b"$qC#b4"
    assert conn.feed(upper) == [Packet(b"qC")]
    assert conn.data_to_send() == b"+"


def test_bad_checksum_naks_then_recovers() -> None:
    conn = Connection()
    events = conn.feed(frame(b"g", "00"))
    assert len(events) == 1 and isinstance(events[0], BadPacket)
    assert "checksum" in events[0].reason
    assert conn.data_to_send() == b"-"
    assert conn.feed(frame(b"g")) == [Packet(b"g")]
    assert conn.data_to_send() == b"+"


@pytest.mark.parametrize("digits", [b"zz", b"0g", b"#0", b"\x030", b" 1", b"+1"])
def test_malformed_checksum_digits(digits: bytes) -> None:
    conn = Connection()
    events = conn.feed(b"$g#" + digits)
    assert len(events) == 1 and isinstance(events[0], BadPacket)
    assert conn.data_to_send() == b"-"
    assert conn.feed(frame(b"g")) == [Packet(b"g")]


def test_nak_resends_last_reply() -> None:
    conn = Connection()
    conn.feed(frame(b"g"))
    conn.send(b"first")
    conn.send(b"0123abcd")
    sent = conn.data_to_send()
    assert sent == b"+" + frame(b"first") + frame(b"0123abcd")
    last = sent[sent.rindex(b"$") :]
    assert conn.feed(b"-") == []
    assert conn.data_to_send() == last
    assert conn.feed(b"-") == []
    assert conn.data_to_send() == last
    conn.feed(b"+")  # acked: nothing left to resend
    conn.feed(b"-")
    assert conn.data_to_send() == b""


def test_nak_with_nothing_sent_is_ignored() -> None:
    conn = Connection()
    assert conn.feed(b"---") == []
    assert conn.data_to_send() == b""


def test_nak_flood_before_drain_queues_one_resend() -> None:
    conn = Connection()
    conn.send(b"OK")
    reply = conn.data_to_send()
    conn.feed(b"-" * 10_000)
    assert conn.data_to_send() == reply


def test_no_ack_mode() -> None:
    conn = Connection()
    assert conn.feed(frame(b"QStartNoAckMode")) == [Packet(b"QStartNoAckMode")]
    conn.send(b"OK")
    conn.start_no_ack()
    assert conn.no_ack
    assert conn.data_to_send() == b"+$OK#9a"
    # gdb's '+' for our OK, then a packet: no ack goes back.
    assert conn.feed(b"+" + frame(b"g")) == [Packet(b"g")]
    conn.send(b"reply")
    reply = conn.data_to_send()
    assert conn.feed(b"-+-") == []
    assert conn.data_to_send() == b""
    # A bad checksum is still reported, but not NAKed.
    assert isinstance(conn.feed(frame(b"g", "00"))[0], BadPacket)
    assert conn.data_to_send() == b""
    assert reply == frame(b"reply")


def test_no_ack_is_read_only() -> None:
    conn = Connection()
    with pytest.raises(AttributeError):
        conn.no_ack = True  # type: ignore[misc]


@pytest.mark.parametrize(
    ("raw", "decoded"),
    [
        (b"}\x03", b"#"),
        (b"}\x04", b"$"),
        (b"}]", b"}"),
        (b"}\x0a", b"*"),
        (b"X1000,4:}\x03}\x04}]}\x0a", b"X1000,4:#$}*"),
        (b"}P", b"p"),  # gdb escapes only $#}* but any escaped byte decodes
    ],
)
def test_escapes_in_input(raw: bytes, decoded: bytes) -> None:
    conn = Connection()
    assert conn.feed(frame(raw)) == [Packet(decoded)]


def test_output_escaping() -> None:
    conn = Connection()
    conn.send(b"a$b#c}d*e")
    body = b"a}\x04b}\x03c}]d}\x0ae"
    assert conn.data_to_send() == frame(body)


def test_send_checksum_is_over_escaped_bytes() -> None:
    conn = Connection()
    conn.send(b"}")
    assert conn.data_to_send() == b"$}]#" + f"{(0x7D + 0x5D) % 256:02x}".encode()


def test_send_empty_reply() -> None:
    conn = Connection()
    conn.send(b"")
    assert conn.data_to_send() == b"$#00"


@pytest.mark.parametrize(
    ("raw", "decoded"),
    [
        (b"0* ", b"0000"),  # the manual's example
        (b"0*!", b"00000"),
        (b'0*"', b"000000"),
        (b'0*"0', b"0000000"),
        (b"0*%", b"000000000"),
        (b"ab*~c", b"a" + b"b" * 98 + b"c"),
        (b"x*\x1d", b"x"),  # N = 29: zero extra copies, leniently accepted
        (b"}\x0a* ", b"****"),  # RLE of an escaped byte repeats the decoded byte
        (b"a* * ", b"a" * 7),
    ],
)
def test_rle_decode(raw: bytes, decoded: bytes) -> None:
    conn = Connection()
    assert conn.feed(frame(raw)) == [Packet(decoded)]


@pytest.mark.parametrize("raw", [b"* ", b"0*\x1c", b"0*\x00", b"0*", b"ab}"])
def test_invalid_rle_or_escape(raw: bytes) -> None:
    conn = Connection()
    events = conn.feed(frame(raw))
    assert len(events) == 1 and isinstance(events[0], BadPacket)
    # The bytes arrived intact (good checksum): ack, since a resend repeats them.
    assert conn.data_to_send() == b"+"
    assert conn.feed(frame(b"g")) == [Packet(b"g")]


def test_interrupt_outside_packet() -> None:
    conn = Connection()
    assert conn.feed(b"\x03") == [Interrupt()]
    assert conn.data_to_send() == b""
    assert conn.feed(b"\x03" + frame(b"g") + b"\x03") == [
        Interrupt(),
        Packet(b"g"),
        Interrupt(),
    ]


def test_interrupt_in_no_ack_mode() -> None:
    conn = Connection()
    conn.start_no_ack()
    assert conn.feed(b"+\x03-") == [Interrupt()]


def test_0x03_inside_packet_is_data() -> None:
    conn = Connection()
    assert conn.feed(frame(b"X0,1:\x03")) == [Packet(b"X0,1:\x03")]


def test_garbage_outside_packets_ignored() -> None:
    conn = Connection()
    assert conn.feed(b"#xyz\x00\xff##" + frame(b"g") + b"junk") == [Packet(b"g")]
    assert conn.data_to_send() == b"+"


def test_dollar_mid_packet_restarts() -> None:
    conn = Connection()
    assert conn.feed(b"$m4000,trunc" + frame(b"g")) == [Packet(b"g")]
    assert conn.data_to_send() == b"+"


def test_dollar_in_checksum_restarts() -> None:
    conn = Connection()
    assert conn.feed(b"$g#" + frame(b"s")) == [Packet(b"s")]
    assert conn.feed(b"$g#a" + frame(b"c")) == [Packet(b"c")]
    assert conn.data_to_send() == b"++"


def test_dollar_mid_packet_across_feeds() -> None:
    conn = Connection()
    assert conn.feed(b"$abc") == []
    assert conn.feed(b"}") == []  # a pending escape is dropped with the packet
    assert conn.feed(frame(b"g")) == [Packet(b"g")]


@pytest.mark.parametrize("max_packet", [1, 16, 0x4000])
def test_oversized_boundary(max_packet: int) -> None:
    conn = Connection(max_packet)
    fits = b"a" * max_packet
    assert conn.feed(frame(fits)) == [Packet(fits)]
    assert conn.data_to_send() == b"+"
    assert conn.feed(frame(fits + b"b")) == [Oversized(max_packet + 1)]
    assert conn.data_to_send() == b"+"
    assert conn.feed(frame(b"g")) == [Packet(b"g")]


def test_oversized_counts_decoded_bytes() -> None:
    conn = Connection(8)
    # 8 escaped bytes are 16 raw bytes but fit; RLE blows 3 raw bytes past the limit.
    assert conn.feed(frame(b"}]" * 8)) == [Packet(b"}" * 8)]
    assert conn.feed(frame(b"0*%")) == [Oversized(9)]
    assert conn.feed(frame(b"0*%z")) == [Oversized(10)]


def test_oversized_keeps_counting_escapes_and_runs() -> None:
    conn = Connection(2)
    assert conn.feed(frame(b"abc}]*!x")) == [Oversized(9)]
    assert conn.buffered == 0


def test_bad_rle_split_across_feeds() -> None:
    conn = Connection()
    body = b"* more body after the error"
    assert conn.feed(b"$" + body[:4]) == []
    assert conn.feed(body[4:10]) == []
    events = conn.feed(frame(body)[10 + 1 :])
    assert len(events) == 1 and isinstance(events[0], BadPacket)
    assert "RLE" in events[0].reason


def test_oversized_bad_checksum_is_naked() -> None:
    conn = Connection(4)
    events = conn.feed(frame(b"abcdefgh", "00"))
    assert len(events) == 1 and isinstance(events[0], BadPacket)
    assert conn.data_to_send() == b"-"


def test_oversized_does_not_buffer() -> None:
    conn = Connection(64)
    conn.feed(b"$")
    for _ in range(1000):
        conn.feed(b"x" * 100)
        assert conn.buffered <= 64
    assert conn.feed(b"#" + f"{(ord('x') * 100_000) % 256:02x}".encode()) == [Oversized(100_000)]


def test_byte_by_byte() -> None:
    conn = Connection()
    stream = b"+" + frame(b"X1000,4:}\x03}\x04*!") + b"\x03" + frame(b"0* ") + b"-"
    conn.send(b"last")
    reply = conn.data_to_send()
    events = []
    for i in range(len(stream)):
        events += conn.feed(stream[i : i + 1])
    assert events == [Packet(b"X1000,4:#$$$$$"), Interrupt(), Packet(b"0000")]
    # '+' forgot the reply, so the trailing '-' resends nothing.
    assert conn.data_to_send() == b"++"
    assert reply == frame(b"last")


def test_many_packets_in_one_feed() -> None:
    conn = Connection()
    payloads = [b"g", b"m0,4", b"c", b"qSupported:multiprocess+"]
    data = b"".join(b"+" + frame(p) for p in payloads)
    assert conn.feed(data) == [Packet(p) for p in payloads]
    assert conn.data_to_send() == b"+" * len(payloads)


def test_reset() -> None:
    conn = Connection()
    conn.send(b"OK")
    conn.start_no_ack()
    conn.feed(b"$half a packet")
    assert conn.buffered > 0
    conn.reset()
    assert not conn.no_ack
    assert conn.buffered == 0
    assert conn.data_to_send() == b""
    conn.feed(b"-")  # the pre-reset reply is forgotten
    assert conn.data_to_send() == b""
    assert conn.feed(b"ket#00" + frame(b"g")) == [Packet(b"g")]
    assert conn.data_to_send() == b"+"


def test_feed_empty() -> None:
    conn = Connection()
    assert conn.feed(b"") == []


def test_max_packet_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_packet"):
        Connection(0)
