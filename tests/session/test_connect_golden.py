"""gdb-multiarch 13's connect sequence (captured with `set debug remote 1`), replayed through the
framing and the session with no sockets: every reply must be exactly what gdb got from us."""

from __future__ import annotations

import pytest

from backends.elf import load_image
from backends.sim import SimBackend
from gdbstub import aarch64
from gdbstub.rsp import Connection, Packet
from gdbstub.session import Resume, Session
from gdbstub.target import Target
from tests.conftest import DEMO_ELF


def _frame(payload: bytes) -> bytes:
    return b"$" + payload + b"#%02x" % (sum(payload) & 0xFF)


ENTRY_STOP = (b"T05thread:1;core:0;20:0000004000000000;1f:0000000000000000;1d:0000000000000000;"
              b"1e:0000000000000000;")  # fmt: skip

# (packet gdb sent, reply it received), in order, ack mode first.
CONNECT = [
    (b"qSupported:multiprocess+;swbreak+;hwbreak+;qRelocInsn+;fork-events+;vfork-events+;exec-events+;"
     b"vContSupported+;QThreadEvents+;no-resumed+;memory-tagging+;xmlRegisters=i386",
     b"PacketSize=4000;QStartNoAckMode+;qXfer:features:read+;vContSupported+;swbreak+;hwbreak+"),
    (b"vMustReplyEmpty", b""),
    (b"QStartNoAckMode", b"OK"),
    (b"Hg0", b"OK"),
    (b"qTStatus", b""),
    (b"?", ENTRY_STOP),
    (b"qfThreadInfo", b"m1"),
    (b"qsThreadInfo", b"l"),
    (b"qAttached", b"1"),
    (b"Hc-1", b"OK"),
    (b"qOffsets", b"Text=0;Data=0;Bss=0"),
    (b"m40000000,4", b"200000b0"),
    (b"m3ffffffc,4", b"E14"),
    (b"qSymbol::", b""),
]  # fmt: skip


@pytest.fixture
def session() -> tuple[Session, Connection]:
    conn = Connection(max_packet=0x4000)
    return Session(Target(SimBackend(load_image(DEMO_ELF))), conn), conn


def _exchange(session: Session, conn: Connection, payload: bytes) -> bytes:
    events = conn.feed(_frame(payload))
    assert events == [Packet(payload)]
    reply = session.handle(payload)
    if isinstance(reply, bytes):
        conn.send(reply)
    return conn.data_to_send()


def test_connect_sequence(session: tuple[Session, Connection]) -> None:
    s, conn = session
    for sent, expected in CONNECT:
        out = _exchange(s, conn, sent)
        if conn.no_ack and sent != b"QStartNoAckMode":
            assert out == _frame(expected), sent
        else:
            assert out == b"+" + _frame(expected), sent
        if not conn.no_ack:
            assert conn.feed(b"+") == []


def test_target_xml_is_served_in_chunks_and_parses(session: tuple[Session, Connection]) -> None:
    import xml.etree.ElementTree as ET

    s, _ = session
    doc = b""
    offset = 0
    while True:
        reply = s.handle(b"qXfer:features:read:target.xml:%x,1000" % offset)
        assert isinstance(reply, bytes) and reply[:1] in (b"m", b"l")
        doc += reply[1:]
        offset += len(reply) - 1
        if reply[:1] == b"l":
            break
    root = ET.fromstring(doc.decode().split("\n", 2)[2])
    assert root.findtext("architecture") == "aarch64"
    regs = [r.attrib for f in root.iter("feature") for r in f.iter("reg")]
    names = [r["name"] for r in regs]
    system = ["sctlr_el1", "tcr_el1", "ttbr0_el1", "ttbr1_el1", "mair_el1", "vbar_el1", "esr_el1", "far_el1",
              "elr_el1", "spsr_el1", "sp_el0", "sp_el1", "cpacr_el1", "contextidr_el1", "mdscr_el1"]  # fmt: skip
    assert names == [f"x{i}" for i in range(31)] + ["sp", "pc", "cpsr"] + [f"v{i}" for i in range(32)] + [
        "fpsr", "fpcr"] + system  # fmt: skip
    assert [int(r["regnum"]) for r in regs] == list(range(len(regs)))
    assert {r["name"]: r["bitsize"] for r in regs}["cpsr"] == "32"
    assert {r["group"] for r in regs if r["name"] in system} == {"system"}
    assert [f.attrib["name"] for f in root.iter("feature")] == [
        "org.gnu.gdb.aarch64.core", "org.gnu.gdb.aarch64.fpu", "org.gdbstub.aarch64.system"]  # fmt: skip
    assert s.handle(b"qXfer:features:read:other.xml:0,100") == b"E00"
    assert s.handle(b"qXfer:features:read:target.xml:ffff,100") == b"E00"


def test_g_reply_is_788_bytes_and_round_trips(session: tuple[Session, Connection]) -> None:
    s, _ = session
    g = s.handle(b"g")
    assert isinstance(g, bytes) and len(g) == 788 * 2 == aarch64.G_SIZE * 2
    changed = g[:16] + b"efbeadde00000000" + g[32:]  # x1 = 0xdeadbeef
    assert s.handle(b"G" + changed) == b"OK"
    assert s.handle(b"p1") == b"efbeadde00000000"
    assert s.handle(b"G" + changed[:-2]) == b"E22"  # wrong length: refused, nothing changed
    assert s.handle(b"p1") == b"efbeadde00000000"


@pytest.mark.parametrize(
    "packet",
    [b"m", b"m40000000", b"mzz,4", b"m40000000,zz", b"Mffffffffffffffff,10:00", b"M40000000,2:00",
     b"X40000000,4:ab", b"Z9,0,0", b"Z1,40000000", b"p999", b"Pzz=00", b"P0=00", b"Hx1", b"Hg5", b"T7",
     b"vCont;q", b"c zz", b"qRcmd,zz", b"m" + b"f" * 40 + b",4"],
)  # fmt: skip
def test_bad_packets_get_an_error_or_empty_reply_and_change_nothing(
    session: tuple[Session, Connection], packet: bytes
) -> None:
    s, _ = session
    before_regs = s.handle(b"g")
    before_mem = s.handle(b"m40000000,40")
    reply = s.handle(packet)
    assert reply == b"" or (isinstance(reply, bytes) and reply.startswith(b"E"))
    assert s.handle(b"g") == before_regs
    assert s.handle(b"m40000000,40") == before_mem


def test_step_returns_a_resume_and_stop_reply_expedites_registers(session: tuple[Session, Connection]) -> None:
    s, _ = session
    assert s.handle(b"vCont?") == b"vCont;c;C;s;S"
    assert s.handle(b"vCont;s:1;c") == Resume(step=True)
    stop = s.target.resume(step=True)
    reply = s.stop_reply(stop)
    assert reply.startswith(b"T05thread:1;core:0;20:0400004000000000;")
