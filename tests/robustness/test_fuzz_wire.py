"""Property tests of the whole socket-free pipeline, wire bytes -> framing -> session -> reply frames,
on the real demo guest: random bytes, bad checksums, truncated and oversized packets, NAK storms,
0x03 floods, in any split and in ack and no-ack mode.

Invariants: feed() and handle() never raise; the framing never buffers more than PacketSize + 2
bytes; every frame the stub sends is well formed and fits in PacketSize; nothing reaches the guest
unless a write packet is accepted; the next valid packet gets the right reply."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gdbstub.rsp import BadPacket, Oversized, Packet
from gdbstub.session import Resume
from tests.robustness.support import MAX_PACKET, Rig, decode_replies, frame, fuzz_settings
from tests.robustness.test_fuzz_session import may_write


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    r = Rig()
    yield r
    r.close()


# Read-only packets and the replies the demo guest at entry gives them (filled in by `expected`).
READS = [b"g", b"m40000000,4", b"m40001000,40", b"?", b"qC", b"p20", b"p1f", b"qfThreadInfo", b"vCont?",
         b"qXfer:features:read:target.xml:0,40", b"qAttached", b"m3ffffffc,4", b"Hg0", b"T1"]  # fmt: skip


@pytest.fixture(scope="module")
def expected(rig: Rig) -> dict[bytes, bytes]:
    rig.reconnect()
    answers = {}
    for p in READS:
        reply = rig.handle(p)
        assert isinstance(reply, bytes)
        answers[p] = reply
    return answers


def splits(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def start(rig: Rig, no_ack: bool) -> None:
    rig.reconnect()
    if no_ack:
        out = rig.pump(frame(b"QStartNoAckMode"))
        assert decode_replies(out.wire) == [b"OK"]
        assert rig.conn.no_ack


def settle(rig: Rig) -> None:
    """End any packet the garbage left open, so the next check starts from idle."""
    rig.pump(b"#00")
    assert rig.conn.buffered == 0


cuts = st.lists(st.integers(0, 1 << 20), max_size=10)
interesting = st.sampled_from(list(b"$#}*+-\x03 0aF~:,gmMXZ") + [0x00, 0xFF, 0x7D])
noise = st.lists(st.one_of(interesting, st.integers(0, 255)), max_size=600).map(bytes)


# ---------------------------------------------------------------- random bytes


@fuzz_settings(300)
@given(garbage=noise, cut=cuts, no_ack=st.booleans(), probe=st.sampled_from(READS))
def test_random_bytes_then_a_valid_packet(
    rig: Rig, expected: dict[bytes, bytes], garbage: bytes, cut: list[int], no_ack: bool, probe: bytes
) -> None:
    start(rig, no_ack)
    before = rig.snapshot()
    wrote = False
    for chunk in splits(garbage, cut):
        out = rig.pump(chunk)
        for reply in decode_replies(out.wire):
            assert len(reply) <= MAX_PACKET
        wrote |= any(may_write(p, r) for p, r in out.replies)
    if not wrote:
        assert rig.snapshot() == before
    out = rig.pump(frame(probe))  # a '$' resynchronises whatever state the garbage left
    assert out.replies[-1][0] == probe
    if not wrote:
        assert decode_replies(out.wire)[-1] == expected[probe]
    rig.restore(before)


# ---------------------------------------------------------------- a stream of every kind of trouble


@st.composite
def trouble(draw: st.DrawFn) -> tuple[bytes, list[bytes], int]:
    """A stream of segments: (wire bytes, replies the stub must send in order, interrupts expected)."""
    wire = b""
    replies: list[bytes] = []
    interrupts = 0
    for _ in range(draw(st.integers(1, 12))):
        kind = draw(st.sampled_from(["read", "noise", "flood", "badsum", "truncated", "oversized", "rle",
                                     "badescape", "unknown"]))  # fmt: skip
        probe = draw(st.sampled_from(READS))
        if kind == "read":
            wire += frame(probe)
            replies.append(probe)
        elif kind == "noise":  # between packets: anything but '$' (a packet), '-' (a resend) and 0x03
            wire += bytes(draw(st.lists(st.integers(0, 255).filter(lambda b: b not in b"$-\x03"), max_size=80)))
        elif kind == "flood":
            n = draw(st.integers(1, 2000))
            wire += b"\x03" * n
            interrupts += n
        elif kind == "badsum":
            good = frame(probe)
            wrong = (int(good[-2:], 16) + draw(st.integers(1, 255))) & 0xFF
            digits = draw(st.sampled_from([b"%02x" % wrong, b"zz", b"g0", b"0 "]))
            wire += good[:-2] + digits
        elif kind == "truncated":  # any prefix of a packet, cut off by the next one
            good = frame(draw(st.sampled_from([b"M40000000,4:00000000", b"G" + b"00" * 788, b"P20=0000000000000000"])))
            wire += good[: draw(st.integers(1, len(good) - 1))] + frame(probe)
            replies.append(probe)
        elif kind == "oversized":
            size = draw(st.integers(MAX_PACKET + 1, MAX_PACKET + 300))
            wire += frame(b"M40000000,1:" + b"0" * (size - 12))
            replies.append(b"E22")
        elif kind == "rle":  # a small packet that decodes past PacketSize
            wire += frame(b"X40000000,1:" + b"\x00*~" * draw(st.integers(170, 400)))
            replies.append(b"E22")
        elif kind == "badescape":
            wire += frame(draw(st.sampled_from([b"m40000000,4}", b"*", b"X40000000,2:a*"])))
            replies.append(b"E22")
        else:
            wire += frame(draw(st.sampled_from([b"qUnknown", b"vUnknown", b"!", b"Q", b"j", b"qTStatus"])))
            replies.append(b"")
    return wire, replies, interrupts


@fuzz_settings(300)
@given(stream=trouble(), cut=cuts, no_ack=st.booleans())
def test_every_valid_packet_is_answered_in_order(
    rig: Rig, expected: dict[bytes, bytes], stream: tuple[bytes, list[bytes], int], cut: list[int], no_ack: bool
) -> None:
    wire, want, interrupts = stream
    start(rig, no_ack)
    before = rig.snapshot()
    sent = b""
    seen = 0
    for chunk in splits(wire, cut):
        out = rig.pump(chunk)
        sent += out.wire
        seen += out.interrupts
        for packet, reply in out.replies:
            assert not isinstance(reply, Resume) and not may_write(packet, reply)
    assert decode_replies(sent) == [expected.get(w, w) for w in want]
    assert seen == interrupts
    assert rig.snapshot() == before


# ---------------------------------------------------------------- single failure modes


@fuzz_settings(200)
@given(probe=st.sampled_from(READS), wrong=st.integers(1, 255), cut=cuts)
def test_bad_checksum_is_naked_and_the_resend_answered(
    rig: Rig, expected: dict[bytes, bytes], probe: bytes, wrong: int, cut: list[int]
) -> None:
    start(rig, no_ack=False)
    good = frame(probe)
    bad = good[:-2] + b"%02x" % ((int(good[-2:], 16) + wrong) & 0xFF)
    events = []
    wire = b""
    for chunk in splits(bad, cut):
        out = rig.pump(chunk)
        events += out.events
        wire += out.wire
    assert len(events) == 1 and isinstance(events[0], BadPacket) and wire == b"-"
    out = rig.pump(good)
    assert out.wire == b"+" + frame(expected[probe])


@fuzz_settings(200)
@given(extra=st.integers(1, 5000), cut=cuts, no_ack=st.booleans())
def test_oversized_packet_is_bounded_and_refused(rig: Rig, extra: int, cut: list[int], no_ack: bool) -> None:
    start(rig, no_ack)
    before = rig.snapshot()
    body = b"M40000000,4:" + b"ab" * ((MAX_PACKET + extra) // 2)
    events = []
    for chunk in splits(frame(body), cut):
        out = rig.pump(chunk)  # pump() asserts buffered <= PacketSize + 2 after every event
        events += out.events
        if out.wire.strip(b"+"):
            assert decode_replies(out.wire) == [b"E22"]
    assert [type(e) for e in events] == [Oversized]
    assert rig.snapshot() == before
    assert decode_replies(rig.pump(frame(b"g")).wire) == [before.g]


def test_largest_packet_is_accepted(rig: Rig) -> None:
    start(rig, no_ack=True)
    before = rig.snapshot()
    head = b"M40002000,%x:" % 0x1FF8
    body = head + b"5a" * 0x1FF8
    assert len(body) <= MAX_PACKET
    out = rig.pump(frame(body))
    assert [type(e) for e in out.events] == [Packet] and decode_replies(out.wire) == [b"OK"]
    assert rig.target.read_memory(0x40002000, 0x1FF8) == b"\x5a" * 0x1FF8
    assert decode_replies(rig.pump(frame(b"m40002000,1ff8")).wire) == [b"5a" * 0x1FF8]
    reply = decode_replies(rig.pump(frame(b"m40000000,ffffffff")).wire)[0]  # a short read that fits in PacketSize
    assert 0 < len(reply) <= MAX_PACKET and reply == rig.target.read_memory(0x40000000, len(reply) // 2).hex().encode()
    rig.restore(before)


@fuzz_settings(200)
@given(naks=st.lists(st.integers(1, 3000), min_size=1, max_size=8), probe=st.sampled_from(READS))
def test_nak_storm_resends_the_last_reply_once_per_drain(
    rig: Rig, expected: dict[bytes, bytes], naks: list[int], probe: bytes
) -> None:
    start(rig, no_ack=False)
    assert rig.pump(frame(probe)).wire == b"+" + frame(expected[probe])
    for n in naks:
        out = rig.pump(b"-" * n)
        assert out.wire == frame(expected[probe])  # one resend, however many NAKs
        assert out.events == []
    assert rig.pump(b"+").wire == b""
    assert rig.pump(b"-" * naks[0]).wire == b""  # acked: nothing left to resend
    assert rig.pump(frame(b"qC")).wire == b"+" + frame(b"QC1")


@fuzz_settings(200)
@given(
    floods=st.lists(st.integers(0, 5000), min_size=2, max_size=6),
    probes=st.lists(st.sampled_from(READS), min_size=1, max_size=5),
    cut=cuts,
    no_ack=st.booleans(),
)
def test_interrupt_floods_between_packets(
    rig: Rig, expected: dict[bytes, bytes], floods: list[int], probes: list[bytes], cut: list[int], no_ack: bool
) -> None:
    start(rig, no_ack)
    wire = b"\x03" * floods[0] + b"".join(frame(p) + b"\x03" * n for p, n in zip(probes, itertools.cycle(floods[1:])))
    seen = 0
    sent = b""
    for chunk in splits(wire, cut):
        out = rig.pump(chunk)
        seen += out.interrupts
        sent += out.wire
    assert seen == wire.count(b"\x03")
    assert decode_replies(sent) == [expected[p] for p in probes]


def test_0x03_inside_a_packet_is_data_not_an_interrupt(rig: Rig) -> None:
    start(rig, no_ack=True)
    out = rig.pump(frame(b"m4000\x030000,4"))
    assert out.interrupts == 0 and decode_replies(out.wire) == [b"E22"]
    settle(rig)
