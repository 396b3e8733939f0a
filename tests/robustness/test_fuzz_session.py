"""Property tests over every packet handler in Session.TABLE, on the real demo guest (SimBackend):
garbage after every known prefix, hostile numbers in every field, and valid writes.

Invariants: handle() never raises; its reply is a Reply kind that fits in PacketSize; guest
registers and memory change only when a write packet is accepted, and then exactly as it says; the
next valid packet gets the right answer."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from gdbstub import aarch64
from gdbstub.session import Reply, Resume, Session
from tests.robustness.support import (
    G_HEX,
    G_REGS,
    MAX_PACKET,
    RAM,
    RAM_END,
    WINDOW,
    Rig,
    Snapshot,
    decode_replies,
    frame,
    fuzz_settings,
    gdb_escape,
    reply_ok,
    write_regs,
)


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    r = Rig()
    yield r
    r.close()


# Packets that may legitimately change registers or memory when accepted (Z0 plants a BRK, but
# reads hide it, so it does not count; vCont resumes without changing anything itself).
_WRITES = (b"G", b"P", b"M", b"X", b"c", b"s", b"C", b"S")
_NUM = re.compile(rb"[0-9a-fA-F]{1,16}")
_HEXBYTES = re.compile(rb"(?:[0-9a-fA-F]{2})*")
_GCHUNK_SKIP = re.compile(rb"xx[0-9a-fA-Fx]*")


def may_write(payload: bytes, reply: Reply) -> bool:
    return payload.startswith(_WRITES) and (reply == b"OK" or isinstance(reply, Resume))


def _num(text: bytes) -> int | None:
    return int(text, 16) if _NUM.fullmatch(text) else None


def expected_write(payload: bytes, before: Snapshot, masks: dict[str, int]) -> Snapshot | None:
    """A reference model of the write packets (``_WRITES``), written from the GDB manual: the guest
    after ``payload`` if it is a well-formed write the stub must carry out, None if it must refuse it."""
    kind = payload[:1]
    regs = aarch64.decode_g(before.g.decode())
    memory = bytearray(before.memory)
    if kind in (b"M", b"X"):
        head, colon, data = payload[1:].partition(b":")
        a, comma, n = head.partition(b",")
        addr, length = _num(a), _num(n)
        if not colon or not comma or addr is None or length is None:
            return None
        if kind == b"M":
            if not _HEXBYTES.fullmatch(data):
                return None
            data = bytes.fromhex(data.decode())
        if len(data) != length:
            return None
        if kind == b"X" and not length:
            return before  # gdb's probe for X support: OK, whatever the address
        if not (RAM <= addr and addr + length <= RAM_END):
            return None
        lo, hi = max(addr, WINDOW[0]), min(addr + length, WINDOW[0] + WINDOW[1])
        if lo < hi:
            memory[lo - WINDOW[0] : hi - WINDOW[0]] = data[lo - addr : hi - addr]
    elif kind == b"P":
        n, eq, value = payload[1:].partition(b"=")
        num = _num(n)
        if not eq or num is None or num >= len(aarch64.REGISTERS):
            return None
        reg = aarch64.REGISTERS[num]
        if len(value) != 2 * reg.size or not _HEXBYTES.fullmatch(value):
            return None
        if not reg.in_g:
            return before  # accepted; check() puts the system registers back before it compares
        write_regs(regs, before.sp_banks, {reg.name: int.from_bytes(bytes.fromhex(value.decode()), "little")}, masks)
    elif kind == b"G":
        body = payload[1:]
        if len(body) != G_HEX:
            return None
        pos = 0
        writes: dict[str, int] = {}
        for reg in G_REGS:
            chunk = body[pos : pos + 2 * reg.size]
            pos += 2 * reg.size
            if _GCHUNK_SKIP.fullmatch(chunk):
                continue
            if not _HEXBYTES.fullmatch(chunk):
                return None
            writes[reg.name] = int.from_bytes(bytes.fromhex(chunk.decode()), "little")
        write_regs(regs, before.sp_banks, writes, masks)
    elif kind in (b"c", b"s", b"C", b"S"):
        addr_text = payload[1:]
        if kind in (b"C", b"S"):
            sig, _, addr_text = addr_text.partition(b";")
            if _num(sig) is None:
                return None
        if addr_text:
            pc = _num(addr_text)
            if pc is None:
                return None
            regs["pc"] = pc
    return Snapshot(aarch64.encode_g(regs).encode(), bytes(memory))


def check(rig: Rig, payload: bytes) -> Reply:
    """Handle one packet on a fresh connection; check every invariant; leave the guest as it was."""
    rig.reconnect()
    before = rig.snapshot()
    system = rig.system_regs()
    reply = rig.handle(payload)
    reply_ok(reply)
    for extra in decode_replies(rig.conn.data_to_send()):  # O packets, early OKs (D, vKill, QStartNoAckMode)
        assert len(extra) <= MAX_PACKET
    rig.put_system_regs(system)  # (their own test: test_system_registers_by_p_and_p)
    after = rig.snapshot()
    if payload.startswith(_WRITES):
        model = expected_write(payload, before, rig.masks)
        accepted = reply == b"OK" or isinstance(reply, Resume)
        assert accepted == (model is not None), f"{payload[:60]!r}: answered {reply!r}, the model says {model}"
        assert after == (model if model is not None else before), f"{payload[:60]!r} changed the wrong things"
    else:
        assert after == before, f"{payload[:60]!r} answered {reply!r} but changed the guest"
    # The next valid packets are answered right (g: the same 1576 hex digits as before, unless a write said OK).
    assert rig.handle(b"m40000000,4") == after.memory[:4].hex().encode()
    assert rig.handle(b"g") == after.g and len(after.g) == G_HEX
    assert rig.handle(b"qC") == b"QC1"
    rig.restore(before)
    return reply


# ---------------------------------------------------------------- every prefix + garbage

_junk_bytes = st.sampled_from(list(b"0123456789abcdefABCDEFxX,:;=.-+ p\x00\xff}*#$") + [0x80])
garbage = st.one_of(
    st.binary(max_size=64),
    st.lists(_junk_bytes, max_size=48).map(bytes),
    st.tuples(st.binary(min_size=1, max_size=8), st.integers(1, MAX_PACKET)).map(lambda t: (t[0] * t[1])[: t[1]]),
)


@pytest.mark.parametrize("name", sorted(Session.TABLE))
@fuzz_settings(25)
@given(tail=garbage)
def test_every_prefix_followed_by_garbage(rig: Rig, name: bytes, tail: bytes) -> None:
    check(rig, name + tail)


# ---------------------------------------------------------------- hostile fields

_nasty_numbers = [
    b"", b"0", b"1", b"4", b"-1", b"-0", b"+1", b"0x10", b"1_0", b" 1", b"1 ", b"zz", b"g", b"\xff",
    b"3ffffffc", b"40000000", b"40003ffc", b"47fffffc", b"48000000", b"7fffffff", b"80000000", b"ffffffff",
    b"100000000", b"fffffffffffffff0", b"ffffffffffffffff", b"10000000000000000", b"f" * 40, b"9" * 5000,
]  # fmt: skip
number = st.one_of(
    st.sampled_from(_nasty_numbers),
    st.integers(0, (1 << 64) - 1).map(lambda n: b"%x" % n),
    st.integers(0, 0x4000).map(lambda n: b"%x" % (0x4000_0000 + n)),
    st.binary(max_size=5),
)
hex_data = st.one_of(st.binary(max_size=40).map(lambda b: b.hex().encode()), st.binary(max_size=40))
tid = st.one_of(st.sampled_from([b"0", b"1", b"-1", b"2", b"p1.1", b"p1.-1", b"p-1.1", b"p", b"p1.", b""]), number)


@st.composite
def hostile_packet(draw: st.DrawFn) -> bytes:
    """A known packet shape with any field replaced by something nasty."""
    n = draw
    shape = n(st.sampled_from(["m", "M", "X", "Z", "z", "p", "P", "G", "H", "T", "vCont", "c", "s", "C", "S",
                               "qXfer", "qRcmd", "qSupported"]))  # fmt: skip
    if shape == "m":
        return b"m%b,%b" % (n(number), n(number))
    if shape == "M":
        return b"M%b,%b:%b" % (n(number), n(number), n(hex_data))
    if shape == "X":
        return b"X%b,%b:%b" % (n(number), n(number), n(st.binary(max_size=40)))
    if shape in ("Z", "z"):
        cond = n(st.sampled_from([b"", b";X2,0", b";cmds:X1,0", b";"]))
        return b"%b%b,%b,%b%b" % (shape.encode(), n(number), n(number), n(number), cond)
    if shape == "p":
        return b"p" + n(number)
    if shape == "P":
        return b"P%b=%b" % (n(number), n(hex_data))
    if shape == "G":
        return b"G" + n(st.one_of(hex_data, st.binary(min_size=G_HEX - 2, max_size=G_HEX + 2)))
    if shape == "H":
        return b"H%b%b" % (n(st.sampled_from([b"g", b"c", b"s", b"x", b""])), n(tid))
    if shape == "T":
        return b"T" + n(tid)
    if shape == "vCont":
        actions = n(st.lists(st.tuples(st.sampled_from([b"c", b"C05", b"s", b"S0b", b"t", b"r0,4", b"q", b""]),
                                       st.one_of(st.just(b""), tid.map(lambda t: b":" + t))), max_size=3))  # fmt: skip
        return b"vCont" + b"".join(b";" + a + t for a, t in actions)
    if shape in ("c", "s"):
        return shape.encode() + n(number)
    if shape in ("C", "S"):
        return b"%b%b;%b" % (shape.encode(), n(number), n(number))
    if shape == "qXfer":
        annex = n(st.sampled_from([b"target.xml", b"other.xml", b"", b"target.xml:x"]))
        obj = n(st.sampled_from([b"features", b"memory-map", b""]))
        return b"qXfer:%b:read:%b:%b,%b" % (obj, annex, n(number), n(number))
    if shape == "qRcmd":
        words = n(st.sampled_from([b"help", b"caps", b"slots", b"nope", b"", b"slots extra"]))
        return b"qRcmd," + n(st.one_of(st.just(words.hex().encode()), hex_data))
    return b"qSupported:" + b";".join(n(st.lists(st.binary(max_size=12), max_size=5)))


@fuzz_settings(400)
@given(payload=hostile_packet())
@example(payload=b"mffffffffffffffff,ffffffff")
@example(payload=b"M0,100000000:00")
@example(payload=b"M40000000,100000000:" + b"00" * 16)
@example(payload=b"Xffffffffffffffff,10:" + b"\x00" * 16)
@example(payload=b"Z2,0,80000000")
@example(payload=b"Z3,ffffffffffffffff,ffffffff")
@example(payload=b"Z1,40000000,4;X2,0")
@example(payload=b"p-1")
@example(payload=b"P-1=00000000")
@example(payload=b"M40000000,2:00 11")
@example(payload=b"Hgp1.5")
@example(payload=b"vCont;c:2")
@example(payload=b"m40000000,ffffffffffffffff")
def test_hostile_fields_are_refused_or_honoured(rig: Rig, payload: bytes) -> None:
    check(rig, payload)


@pytest.mark.parametrize(
    "payload",
    [b"p-1", b"P-1=00000000", b"p+1", b"m0x40000000,4", b"m4000_0000,4", b"m 40000000,4", b"Z+2,40000000,8",
     b"Z 2,40000000,8", b"M40000000,2:00 11", b"P1=00 112233445566 ", b"Hg-5", b"Tp1.-2"],
)  # fmt: skip
def test_numbers_are_plain_hex_only(rig: Rig, payload: bytes) -> None:
    # int(x, 16) takes a sign, 0x, '_' and spaces; bytes.fromhex skips spaces: none of that is RSP.
    assert check(rig, payload) == b"E22"


# ---------------------------------------------------------------- valid writes


@st.composite
def memory_write(draw: st.DrawFn) -> tuple[int, bytes, bool]:
    """(address, data, binary?) inside the window."""
    size = draw(st.integers(0, 96))
    addr = draw(st.integers(WINDOW[0], WINDOW[0] + WINDOW[1] - size))
    return addr, draw(st.binary(min_size=size, max_size=size)), draw(st.booleans())


register_value = st.tuples(st.integers(0, len(G_REGS) - 1), st.integers(0, (1 << 128) - 1))


@fuzz_settings(300)
@given(
    writes=st.lists(st.one_of(memory_write(), register_value), min_size=1, max_size=6),
    full_g=st.one_of(st.none(), st.lists(st.one_of(st.none(), st.integers(0, (1 << 128) - 1)),
                                          min_size=len(G_REGS), max_size=len(G_REGS))),
    breakpoints=st.lists(st.integers(0, WINDOW[1] // 4 - 1).map(lambda i: WINDOW[0] + 4 * i), max_size=3),
    upper=st.booleans(),
)  # fmt: skip
def test_valid_writes_change_exactly_what_they_say(
    rig: Rig, writes: list[tuple[int, bytes, bool] | tuple[int, int]], full_g: list[int | None] | None,
    breakpoints: list[int], upper: bool
) -> None:  # fmt: skip
    rig.reconnect()
    before = rig.snapshot()
    regs = aarch64.decode_g(before.g.decode())
    memory = bytearray(before.memory)
    banks = before.sp_banks

    def send(payload: bytes) -> bytes:
        """Through the framing too (X data needs escaping), as gdb would send it."""
        out = rig.pump(frame(gdb_escape(payload) if payload[:1] == b"X" else payload))
        replies = decode_replies(out.wire)
        assert len(replies) == 1
        return replies[0]

    def hexs(data: bytes) -> bytes:
        text = data.hex().encode()
        return text.upper() if upper else text

    for bp in breakpoints:  # software breakpoints are invisible to reads and keep what is written over them
        assert send(b"Z0,%x,4" % bp) == b"OK"
    for w in writes:
        if len(w) == 3:
            addr, data, binary = w
            packet = b"X%x,%x:%b" % (addr, len(data), data) if binary else b"M%x,%x:%b" % (addr, len(data), hexs(data))
            assert send(packet) == b"OK"
            memory[addr - WINDOW[0] : addr - WINDOW[0] + len(data)] = data
        else:
            num, value = w
            reg = aarch64.REGISTERS[num]
            value &= (1 << reg.bits) - 1
            assert send(b"P%x=%b" % (num, hexs(value.to_bytes(reg.size, "little")))) == b"OK"
            write_regs(regs, banks, {reg.name: value}, rig.masks)
            banks = (rig.target.backend.get_reg("sp_el0"), rig.target.backend.get_reg("sp_el1"))
    if full_g is not None:
        body = b""
        given: dict[str, int] = {}
        for num, (reg, v) in enumerate(zip(G_REGS, full_g, strict=True)):
            if v is None:
                body += b"xx" * reg.size
            else:
                v &= (1 << reg.bits) - 1
                body += aarch64.encode_reg(num, v).encode()
                given[reg.name] = v
        write_regs(regs, banks, given, rig.masks)
        assert send(b"G" + body) == b"OK"
    expected = Snapshot(aarch64.encode_g(regs).encode(), bytes(memory))
    assert rig.snapshot() == expected
    assert send(b"m%x,%x" % (WINDOW[0], 0x100)) == expected.memory[:0x100].hex().encode()
    for bp in breakpoints:
        assert send(b"z0,%x,4" % bp) == b"OK"
    assert rig.target.backend.read_memory(*WINDOW) == expected.memory  # no BRK left behind
    rig.restore(before)


def test_system_registers_by_p_and_p(rig: Rig) -> None:
    """The EL1 system registers are in target.xml after fpcr, outside `g`: p reads what the backend holds,
    P writes exactly that register, and `g` keeps its size."""
    rig.reconnect()
    before = rig.snapshot()
    system = rig.system_regs()
    nums = {r.name: n for n, r in enumerate(aarch64.REGISTERS) if not r.in_g}
    assert min(nums.values()) == len(G_REGS), "after every register of `g`"
    for name, num in nums.items():
        assert rig.handle(b"p%x" % num) == system[name].to_bytes(8, "little").hex().encode(), name
    vbar = 0x4000_0800
    assert rig.handle(b"P%x=%s" % (nums["vbar_el1"], vbar.to_bytes(8, "little").hex().encode())) == b"OK"
    assert rig.target.backend.get_reg("vbar_el1") == vbar
    assert rig.system_regs() == system | {"vbar_el1": vbar}
    assert rig.handle(b"g") == before.g and len(before.g) == G_HEX
    assert rig.handle(b"P%x=00" % nums["tcr_el1"]) == b"E22", "a value of the wrong size changes nothing"
    assert rig.system_regs()["tcr_el1"] == system["tcr_el1"]
    rig.put_system_regs(system)
    assert rig.snapshot() == before
