"""Property tests for RSP framing: any split, any payload, any garbage."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from gdbstub.rsp import Connection, Event, Interrupt, Packet


def gdb_escape(payload: bytes) -> bytes:
    """Escape as gdb does for binary data: ``$ # } *`` become ``}`` + (byte ^ 0x20)."""
    out = bytearray()
    for byte in payload:
        if byte in b"$#}*":
            out += bytes((0x7D, byte ^ 0x20))
        else:
            out.append(byte)
    return bytes(out)


def rle_encode(escaped: bytes) -> bytes:
    """Run-length encode already-escaped data with the counts the manual allows."""
    out = bytearray()
    i = 0
    while i < len(escaped):
        byte = escaped[i]
        if byte == 0x7D:  # never split an escape pair
            out += escaped[i : i + 2]
            i += 2
            continue
        run = 1
        while i + run < len(escaped) and escaped[i + run] == byte and run < 98:
            run += 1
        extra = run - 1
        if extra in (6, 7):  # counts '#' and '$' are forbidden: send one less
            extra = 5
        if extra >= 3:
            out += bytes((byte, 0x2A, extra + 29))
            i += extra + 1
        else:
            out.append(byte)
            i += 1
    return bytes(out)


def framed(body: bytes) -> bytes:
    return b"$" + body + b"#" + f"{sum(body) % 256:02x}".encode()


def splits(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def feed_all(conn: Connection, chunks: list[bytes]) -> list[Event]:
    events: list[Event] = []
    for chunk in chunks:
        events += conn.feed(chunk)
    return events


cuts = st.lists(st.integers(min_value=0, max_value=1 << 16), max_size=12)
# Bytes that drive the parser through every state, mixed with random ones.
interesting = st.sampled_from(list(b"$#}*+-\x03 0aF~\x1c\x1d") + [0x00, 0xFF])
noisy = st.lists(st.one_of(interesting, st.integers(0, 255)), max_size=400).map(bytes)


@given(payload=st.binary(max_size=3000), cut=cuts)
def test_gdb_encoded_payload_round_trips(payload: bytes, cut: list[int]) -> None:
    conn = Connection()
    assert feed_all(conn, splits(framed(gdb_escape(payload)), cut)) == [Packet(payload)]
    assert conn.data_to_send() == b"+"
    assert conn.buffered == 0


@given(payload=st.binary(max_size=2000), cut=cuts)
def test_rle_encoded_payload_round_trips(payload: bytes, cut: list[int]) -> None:
    conn = Connection()
    assert feed_all(conn, splits(framed(rle_encode(gdb_escape(payload))), cut)) == [Packet(payload)]


@given(payloads=st.lists(st.binary(max_size=200), max_size=8), cut=cuts)
def test_packet_stream_in_order(payloads: list[bytes], cut: list[int]) -> None:
    conn = Connection()
    stream = b"".join(b"+" + framed(gdb_escape(p)) for p in payloads)
    assert feed_all(conn, splits(stream, cut)) == [Packet(p) for p in payloads]
    assert conn.data_to_send() == b"+" * len(payloads)


@given(payload=st.binary(min_size=0, max_size=64), cut=cuts)
def test_max_packet_is_truthful(payload: bytes, cut: list[int]) -> None:
    conn = Connection(max(1, len(payload)))
    stream = framed(rle_encode(gdb_escape(payload)))
    assert feed_all(conn, splits(stream, cut)) == [Packet(payload)]


@given(
    garbage=noisy,
    cut=cuts,
    payload=st.binary(max_size=100),
    max_packet=st.integers(1, 40),
)
def test_garbage_is_bounded_and_resyncs(garbage: bytes, cut: list[int], payload: bytes, max_packet: int) -> None:
    # '$' can never appear raw inside a well-formed packet and always starts a
    # new one, so after *any* garbage a complete valid packet decodes exactly.
    conn = Connection(max_packet)
    for chunk in splits(garbage, cut):
        conn.feed(chunk)
        assert conn.buffered <= max_packet + 2
    assert len(conn.data_to_send()) <= len(garbage)  # at most one ack per packet
    small = payload[:max_packet]
    assert conn.feed(framed(gdb_escape(small))) == [Packet(small)]
    assert conn.data_to_send() == b"+"


@given(garbage=noisy, payload=st.binary(max_size=40))
def test_garbage_then_hash_sync_leaves_parser_idle(garbage: bytes, payload: bytes) -> None:
    # The weaker guarantee needs no '$': "#00" ends any packet in progress, so
    # what follows is parsed from idle (a Ctrl-C right after is an interrupt).
    conn = Connection()
    conn.feed(garbage + b"#00")
    assert conn.buffered == 0
    assert conn.feed(b"\x03" + framed(gdb_escape(payload))) == [
        Interrupt(),
        Packet(payload),
    ]


@given(payload=st.binary(max_size=3000), cut=cuts)
def test_send_round_trips_through_decoder(payload: bytes, cut: list[int]) -> None:
    sender = Connection()
    sender.send(payload)
    wire = sender.data_to_send()
    body, checksum = wire[1:-3], wire[-2:]
    assert wire[:1] == b"$" and wire[-3:-2] == b"#"
    assert not any(c in body for c in b"$#*")
    assert checksum == f"{sum(body) % 256:02x}".encode()
    receiver = Connection()
    assert feed_all(receiver, splits(wire, cut)) == [Packet(payload)]


ops = st.lists(
    st.one_of(
        st.tuples(st.just("send"), st.binary(max_size=30)),
        st.tuples(st.just("nak"), st.integers(1, 50)),
        st.tuples(st.just("ack"), st.just(0)),
        st.tuples(st.just("drain"), st.just(0)),
    ),
    max_size=40,
)


@given(script=ops)
def test_nak_storms_only_resend_last_reply(script: list[tuple[str, object]]) -> None:
    conn = Connection()
    sent: list[bytes] = []  # every frame send() produced, in order
    last: bytes | None = None  # the unacked reply a '-' may resend
    expected = b""
    resent_since_drain = False
    for op, arg in script:
        if op == "send":
            assert isinstance(arg, bytes)
            conn.send(arg)
            last = framed(gdb_escape(arg))
            sent.append(last)
            expected += last
            resent_since_drain = False
        elif op == "nak":
            assert isinstance(arg, int)
            assert conn.feed(b"-" * arg) == []
            # Exactly the last reply, once per drain however many NAKs arrive.
            if last is not None and not resent_since_drain:
                expected += last
                resent_since_drain = True
        elif op == "ack":
            assert conn.feed(b"+") == []
            last = None
        else:
            assert conn.data_to_send() == expected
            expected = b""
            resent_since_drain = False
    assert conn.data_to_send() == expected


@given(payload=st.binary(max_size=100), naks=st.integers(1, 30))
def test_each_drained_nak_resends_exactly_once(payload: bytes, naks: int) -> None:
    conn = Connection()
    conn.send(payload)
    reply = conn.data_to_send()
    for _ in range(naks):
        conn.feed(b"-")
        assert conn.data_to_send() == reply
