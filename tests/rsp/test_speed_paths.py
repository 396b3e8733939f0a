"""The fast paths of issue 9 behave exactly like the general ones: run-length encoded memory replies,
whole-packet decoding, the register cache of the Target and the session's cached `g` reply."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from backends.elf import load_image
from backends.sim import SimBackend
from gdbstub.rsp import Connection, Packet
from gdbstub.session import RLE_MIN_BYTES, HexData, Session
from gdbstub.target import Target
from tests.conftest import ROOT

DEMO = ROOT / "gdbstub" / "data" / "demo.elf"


@given(data=st.lists(st.sampled_from([b"\0" * 8, b"\0", b"\x12", b"\xff" * 3]), max_size=600))
def test_hex_replies_run_length_encoded_decode_to_the_same(data: list[bytes]) -> None:
    payload = b"".join(data).hex().encode()
    sender = Connection()
    sender.send(payload, hex_data=True)
    wire = sender.data_to_send()
    body = wire[1:-3]
    assert wire[-2:] == b"%02x" % (sum(body) & 0xFF)
    assert b"#" not in body and b"$" not in body  # no count byte may be one of them
    assert Connection().feed(wire) == [Packet(payload)]
    if b"0" * 98 in payload:
        assert len(body) < len(payload)


def test_one_plain_packet_and_the_general_parser_agree() -> None:
    for wire in (b"$m40000000,4#51", b"$#00", b"$g#67", b"$g#68", b"$g#zz", b"$g}#00", b"$g*#00", b"$g$g#67"):
        fast, slow = Connection(), Connection()
        got = fast.feed(wire)
        want = [ev for i in range(len(wire)) for ev in slow.feed(wire[i : i + 1])]  # byte by byte: no fast path
        assert got == want, wire
        assert fast.data_to_send() == slow.data_to_send(), wire


def test_registers_are_read_again_after_a_write_or_a_step() -> None:
    target = Target(SimBackend(load_image(DEMO)))
    session = Session(target, Connection())
    g0 = session.handle(b"g")
    assert session.handle(b"g") == g0  # cached: the same reply
    assert target.read_register("x0") == target.backend.get_reg("x0")
    target.write_registers({"x0": 0x1234})
    assert target.read_register("x0") == 0x1234
    assert session.handle(b"g") != g0
    pc = target.read_register("pc")
    target.resume(True)
    assert target.read_register("pc") == target.backend.get_reg("pc") == pc + 4
    assert session.handle(b"p20") == (pc + 4).to_bytes(8, "little").hex().encode()


def test_large_memory_reads_are_marked_for_run_length_encoding() -> None:
    session = Session(Target(SimBackend(load_image(DEMO))), Connection())
    small = session.handle(b"m40000000,%x" % (RLE_MIN_BYTES - 1))
    large = session.handle(b"m40000000,%x" % RLE_MIN_BYTES)
    assert type(small) is bytes and isinstance(large, HexData)
    assert large[: len(small)] == small
