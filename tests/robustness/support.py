"""Shared pieces of the robustness tests: hypothesis settings, a socket-free rig (framing + session +
a real SimBackend on the demo guest) that handles packets as the server does, and a raw RSP client
for the tests against a real `gdbstub serve`."""

from __future__ import annotations

import logging
import re
import socket
import time
from dataclasses import dataclass, field

from hypothesis import HealthCheck, settings

from backends.elf import load_image
from backends.sim import SimBackend
from gdbstub import aarch64
from gdbstub.monitor import run_command
from gdbstub.rsp import BadPacket, Connection, Interrupt, Oversized, Packet
from gdbstub.session import E_INVAL, Detach, Kill, Reply, Resume, Session
from gdbstub.target import Target
from tests.conftest import DEMO_ELF

MAX_PACKET = 0x4000  # what the server advertises (server.MAX_PACKET)
RAM = 0x4000_0000
RAM_END = RAM + (128 << 20)  # `gdbstub serve`'s default RAM size, as the Rig's SimBackend has
WINDOW = (RAM, 0x4000)  # the demo's code, data and the start of its stack: where valid writes land
G_HEX = aarch64.G_SIZE * 2  # 1576 hex digits
G_REGS = [r for r in aarch64.REGISTERS if r.in_g]  # the system registers after them go by p/P only


def fuzz_settings(max_examples: int) -> settings:
    """Deterministic and database-less: CI runs the same examples every time, in bounded time."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


def gdb_escape(payload: bytes) -> bytes:
    """Escape binary data as gdb does: ``$ # } *`` become ``}`` + (byte ^ 0x20)."""
    out = bytearray()
    for byte in payload:
        out += bytes((0x7D, byte ^ 0x20)) if byte in b"$#}*" else bytes((byte,))
    return bytes(out)


def frame(payload: bytes) -> bytes:
    """A packet as gdb sends it (payload already escaped if it needs to be)."""
    return b"$%b#%02x" % (payload, sum(payload) & 0xFF)


@dataclass(frozen=True)
class Snapshot:
    g: bytes
    memory: bytes
    sp_banks: tuple[int, int] = field(default=(0, 0), compare=False)  # SP_EL0, SP_EL1 (one is "sp")


def write_regs(regs: dict[str, int], banks: tuple[int, int], writes: dict[str, int], masks: dict[str, int]) -> None:
    """The register model: ``sp`` is the live stack pointer of the mode cpsr selects (KVM's ONE_REG view),
    the other one stays banked; a write takes cpsr first and sp last, as the backends do."""
    bank = list(banks)

    def live(cpsr: int) -> int:
        return 1 if (cpsr >> 2) & 3 == 1 and cpsr & 1 else 0

    for name in sorted(writes, key=lambda n: (n != "cpsr", n == "sp")):
        regs[name] = writes[name] & masks[name]
        if name == "sp":
            bank[live(regs["cpsr"])] = regs["sp"]
        elif name == "cpsr":
            regs["sp"] = bank[live(regs["cpsr"])]


@dataclass
class Outcome:
    """What one stretch of wire bytes did: the events it completed and each packet's reply."""

    events: list[Packet | Interrupt | Oversized | BadPacket] = field(default_factory=list)
    replies: list[tuple[bytes, Reply]] = field(default_factory=list)  # (packet, what handle() returned)
    wire: bytes = b""  # everything the stub queued for gdb

    @property
    def interrupts(self) -> int:
        return sum(isinstance(e, Interrupt) for e in self.events)


class _ErrorLog(logging.Handler):
    """Collects ERROR records: handle() turns a handler's own bug into an E05 reply and an error log
    line, so a fuzzer that only looked at replies would never see it."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class Rig:
    """One target (the demo guest on a SimBackend) shared by many examples; each example gets a fresh
    connection and session via :meth:`reconnect`, as a new gdb client would."""

    def __init__(self) -> None:
        self.target = Target(SimBackend(load_image(DEMO_ELF)))
        self.errors = _ErrorLog()
        logging.getLogger("gdbstub").addHandler(self.errors)
        self.reconnect()
        self.masks = self._register_masks()

    def close(self) -> None:
        logging.getLogger("gdbstub").removeHandler(self.errors)
        self.target.backend.close()

    def assert_no_internal_errors(self) -> None:
        records, self.errors.records = self.errors.records, []
        assert not records, [r.getMessage() for r in records]

    def reconnect(self) -> None:
        self.target.clear_debugger_state()
        self.conn = Connection(max_packet=MAX_PACKET)
        self.session = Session(self.target, self.conn, monitor=lambda cmd: run_command(self.target, cmd))

    def _register_masks(self) -> dict[str, int]:
        """Bits the core keeps when written (fpsr/fpcr have RES0 bits that always read 0)."""
        masks = {}
        regs = self.target.read_registers()
        for r in aarch64.REGISTERS:  # each put back at once: all-ones in SCTLR_EL1 would turn the MMU on
            old = self.target.read_register(r.name)
            self.target.write_registers({r.name: (1 << r.bits) - 1})
            masks[r.name] = self.target.read_register(r.name)
            self.target.write_registers({r.name: old})
        self.target.write_registers(regs)
        return masks

    def handle(self, payload: bytes) -> Reply:
        reply = self.session.handle(payload)
        self.assert_no_internal_errors()
        return reply

    def system_regs(self) -> dict[str, int]:
        """The registers outside `g` (p/P only: SCTLR_EL1, VBAR_EL1, ...)."""
        return {r.name: self.target.read_register(r.name) for r in aarch64.REGISTERS if not r.in_g}

    def put_system_regs(self, values: dict[str, int]) -> None:
        """Back as they were: a P to one of them is outside the register model (SCTLR_EL1 turns the MMU on,
        which changes what every later read means), so the checks undo it before comparing."""
        rest = {n: v for n, v in values.items() if n not in ("sp_el0", "sp_el1")}
        self.target.write_registers(rest)
        self.target.write_registers({"sp_el0": values["sp_el0"], "sp_el1": values["sp_el1"]})

    def snapshot(self) -> Snapshot:
        g = self.session.handle(b"g")
        assert isinstance(g, bytes) and len(g) == G_HEX, g
        banks = (self.target.backend.get_reg("sp_el0"), self.target.backend.get_reg("sp_el1"))
        return Snapshot(g, self.target.read_memory(*WINDOW), banks)

    def restore(self, snap: Snapshot) -> None:
        """Undo whatever an example did (valid writes included) so the next one starts from the same guest."""
        self.target.clear_debugger_state()
        self.target.write_registers(aarch64.decode_g(snap.g.decode()))
        self.target.write_memory(WINDOW[0], snap.memory)
        assert self.snapshot() == snap

    def pump(self, data: bytes) -> Outcome:
        """Feed wire bytes and act on every event as the server does when the guest is stopped."""
        out = Outcome()
        for ev in self.conn.feed(data):
            out.events.append(ev)
            if isinstance(ev, BadPacket):
                if not ev.reason.startswith(("checksum", "malformed checksum")):
                    self.conn.send(E_INVAL)
            elif isinstance(ev, Oversized):
                self.conn.send(E_INVAL)
            elif isinstance(ev, Packet):
                reply = self.handle(ev.data)
                out.replies.append((ev.data, reply))
                if isinstance(reply, bytes):
                    self.conn.send(reply)
            assert self.conn.buffered <= MAX_PACKET + 2
        assert self.conn.buffered <= MAX_PACKET + 2
        out.wire = self.conn.data_to_send()
        return out


def decode_replies(wire: bytes) -> list[bytes]:
    """The stub's output as gdb's side of the framing sees it (acks dropped, checksums verified)."""
    gdb_side = Connection(max_packet=1 << 24)
    packets = []
    for ev in gdb_side.feed(wire):
        assert isinstance(ev, Packet), f"the stub sent a broken frame: {ev}"
        packets.append(ev.data)
    return packets


def reply_ok(reply: Reply) -> None:
    """A handler's answer is one of the Reply kinds, and a bytes reply fits in PacketSize."""
    assert reply is None or isinstance(reply, (bytes, Resume, Detach, Kill)), reply
    if isinstance(reply, bytes):
        assert len(reply) <= MAX_PACKET


# ---------------------------------------------------------------- raw client for a real server

LISTENING = re.compile(rb"listening on 127\.0\.0\.1:(\d+)")
BUSY = b"E.another gdb client is already connected"


class RawClient:
    """A bare RSP client on a socket: no gdb, full control over every byte.  It acks the stub's
    replies while the connection is in ack mode, as gdb does."""

    def __init__(self, port: int, *, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.decoder = Connection(max_packet=1 << 24)
        self.pending: list[bytes] = []

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def packet(self, payload: bytes) -> bytes:
        """Send one packet and return its reply."""
        self.send(frame(payload))
        return self.reply()

    def reply(self, timeout: float | None = None) -> bytes:
        """The next packet from the stub (acks skipped); TimeoutError if none comes in time."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self.pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no reply from the stub")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                raise TimeoutError("no reply from the stub") from None
            if not data:
                raise ConnectionError("the stub closed the connection")
            for ev in self.decoder.feed(data):
                assert isinstance(ev, Packet), f"the stub sent a broken frame: {ev}"
                self.pending.append(ev.data)
            acks = self.decoder.data_to_send()
            if acks:
                self.send(acks)
        return self.pending.pop(0)

    def start_no_ack(self) -> None:
        assert self.packet(b"QStartNoAckMode") == b"OK"
        self.decoder.start_no_ack()

    def close(self) -> None:
        self.sock.close()


def connect(port: int, *, no_ack: bool = True, deadline: float = 10.0) -> RawClient:
    """A client on a server that may still be tearing down the previous connection (until then it
    refuses a new one with an E. message): retry until ``deadline`` seconds pass."""
    end = time.monotonic() + deadline
    while True:
        client = RawClient(port)
        first = client.packet(b"QStartNoAckMode" if no_ack else b"qSupported")
        if first != BUSY:
            if no_ack:
                assert first == b"OK", first
                client.decoder.start_no_ack()
            return client
        client.close()
        if time.monotonic() > end:
            raise TimeoutError("the server kept refusing new clients")
        time.sleep(0.02)
