"""Session transcripts: a human-readable record of one connection, and what replays it.

Format (one line per event, in order; ``#`` lines are metadata or comments)::

    # gdbstub transcript 1
    # server: ["--wrps", "2"]           the `serve` options (JSON), without --listen/--record
    # image: gdbstub/data/demo.elf sha256=...
    connect
    > +                                 an ack from the client ('+' or '-')
    > $qSupported:multiprocess+;...     a packet from the client (payload, decoded)
    > ^C                                a raw 0x03 interrupt from the client
    < +                                 an ack from the server
    < $PacketSize=4000;...              a reply from the server
    ~ $T05thread:1;20:{*};              a reply that may legitimately differ between runs: every
                                        ``{*}`` matches any run of characters (and only that part)
    disconnect

Payloads are shown decoded (escapes and run-length encoding undone, checksums dropped); bytes that
are not printable ASCII, and the backslash, are written as ``\\xNN``.  A transcript file may hold
several connections (several connect..disconnect blocks), replayed in order against one server.
"""

from __future__ import annotations

import json
import re
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

HEADER = "# gdbstub transcript 1"
WILDCARD = "{*}"


def show(payload: bytes) -> str:
    """Bytes as one printable line: printable ASCII as is, everything else (and '\\') as \\xNN."""
    out = []
    for b in payload:
        if 0x20 <= b < 0x7F and b != 0x5C:
            out.append(chr(b))
        else:
            out.append(f"\\x{b:02x}")
    return "".join(out)


def unshow(text: str) -> bytes:
    """The inverse of show()."""
    out = bytearray()
    i = 0
    while i < len(text):
        if text[i] == "\\" and text[i + 1 : i + 2] == "x":
            out.append(int(text[i + 2 : i + 4], 16))
            i += 4
        else:
            out.append(ord(text[i]))
            i += 1
    return bytes(out)


def split_output(data: bytes) -> list[bytes]:
    """Cut a stream of framed server output into acks and packets (payloads, decoded)."""
    items: list[bytes] = []
    i = 0
    while i < len(data):
        c = data[i : i + 1]
        if c in (b"+", b"-"):
            items.append(c)
            i += 1
        elif c == b"$":
            end = data.index(b"#", i)
            items.append(b"$" + _unescape(data[i + 1 : end]))
            i = end + 3
        else:
            i += 1  # nothing else is ever sent
    return items


def _unescape(raw: bytes) -> bytes:
    if b"*" in raw:  # run-length encoding (long memory reads use it), expanded first, as gdb does
        runs = bytearray()
        i = 0
        while i < len(raw):
            if raw[i] == 0x2A and runs and i + 1 < len(raw):  # '*': N-29 more copies of the byte before
                runs += runs[-1:] * (raw[i + 1] - 29)
                i += 2
            else:
                runs.append(raw[i])
                i += 1
        raw = bytes(runs)
    out = bytearray()
    it = iter(raw)
    for b in it:
        out.append(next(it) ^ 0x20 if b == 0x7D else b)
    return bytes(out)


class ConnectionRecorder:
    """Writes one connection's transcript; the server calls it only when recording is on."""

    def __init__(self, path: Path, options: list[str], image: str, image_sha256: str, peer: str) -> None:
        self._f: TextIO = open(path, "w", encoding="ascii", buffering=1 << 16)
        self._f.write(f"{HEADER}\n# server: {json.dumps(options)}\n# image: {image} sha256={image_sha256}\n")
        self._f.write(f"# peer: {peer}\nconnect\n")

        self._partial = b""

    def client_bytes(self, data: bytes) -> None:
        """Raw bytes from the client, as they arrived: acks, interrupts and packets (kept whole across reads)."""
        data = self._partial + data
        i = 0
        while i < len(data):
            c = data[i : i + 1]
            if c == b"$":
                end = data.find(b"#", i)
                if end < 0 or end + 3 > len(data):
                    break  # the rest of this packet comes in a later read
                self._f.write(f"> ${show(_unescape(data[i + 1 : end]))}\n")
                i = end + 3
            elif c in (b"+", b"-"):
                self._f.write(f"> {c.decode()}\n")
                i += 1
            elif c == b"\x03":
                self._f.write("> ^C\n")
                i += 1
            else:
                self._f.write(f"# junk from client: {show(c)}\n")
                i += 1
        self._partial = data[i:][:65536]

    def server_output(self, data: bytes) -> None:
        for item in split_output(data):
            self._f.write(f"< {show(item)}\n")

    def close(self) -> None:
        self._f.write("disconnect\n")
        self._f.close()


class Recorder:
    """One per server: hands out a numbered transcript file per connection."""

    def __init__(self, directory: Path, options: list[str], image: str, image_sha256: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.options = options
        self.image = image
        self.image_sha256 = image_sha256
        self._n = 0
        self._lock = threading.Lock()

    def connection(self, peer: str) -> ConnectionRecorder:
        with self._lock:
            self._n += 1
            n = self._n
        path = self.directory / f"conn-{n:04d}.rsp"
        return ConnectionRecorder(path, self.options, self.image, self.image_sha256, peer)


# ---- reading transcripts ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One transcript line: who ('>' client, '<' server, '~' server with wildcards) and what."""

    who: str
    text: str  # as written (show() form); for '>' and '<' lines unshow() gives the bytes
    line: int

    def matches(self, got: bytes) -> bool:
        if self.who == "<":
            return unshow(self.text) == got
        pattern = "".join(".*" if part == WILDCARD else re.escape(part) for part in re.split(r"(\{\*\})", self.text))
        return re.fullmatch(pattern, show(got), re.S) is not None


@dataclass
class Transcript:
    path: Path
    options: list[str]
    image: str
    image_sha256: str
    connections: list[list[Step]] = field(default_factory=list)


def load(path: Path) -> Transcript:
    """Parse a transcript file; ValueError with the line number on anything unexpected."""
    lines = path.read_text(encoding="ascii").splitlines()
    if not lines or lines[0] != HEADER:
        raise ValueError(f"{path}: not a gdbstub transcript (first line must be {HEADER!r})")
    t = Transcript(path, [], "", "")
    current: list[Step] | None = None
    for n, line in enumerate(lines[1:], start=2):
        if line.startswith("# server: "):
            t.options = json.loads(line[len("# server: ") :])
        elif line.startswith("# image: "):
            image, _, sha = line[len("# image: ") :].rpartition(" sha256=")
            t.image, t.image_sha256 = image, sha
        elif line.startswith("#") or not line.strip():
            continue
        elif line == "connect":
            current = []
        elif line == "disconnect":
            if current is None:
                raise ValueError(f"{path}:{n}: disconnect without connect")
            t.connections.append(current)
            current = None
        elif line[:2] in ("> ", "< ", "~ ") and current is not None:
            current.append(Step(line[0], line[2:], n))
        else:
            raise ValueError(f"{path}:{n}: cannot parse {line!r}")
    if current is not None:  # a connection the recording server never saw end
        t.connections.append(current)
    return t


# ---- replaying the client side -----------------------------------------------------------------------


class ReplayMismatch(AssertionError):
    """The server's reply differs from the recorded one; the message shows both and where."""


def frame(payload: bytes) -> bytes:
    """A packet as gdb frames it: `$ # } *` escaped, two-digit checksum."""
    body = bytearray()
    for b in payload:
        if b in b"$#}*":
            body += bytes((0x7D, b ^ 0x20))
        else:
            body.append(b)
    return b"$" + bytes(body) + b"#%02x" % (sum(body) & 0xFF)


class _Reader:
    """Pulls whole acks and packets (decoded) from a blocking socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def next(self) -> bytes:
        while True:
            if self.buf[:1] in (b"+", b"-"):
                item, self.buf = self.buf[:1], self.buf[1:]
                return item
            if self.buf[:1] == b"$":
                end = self.buf.find(b"#")
                if end >= 0 and len(self.buf) >= end + 3:
                    item = b"$" + _unescape(self.buf[1:end])
                    self.buf = self.buf[end + 3 :]
                    return item
            elif self.buf:
                self.buf = self.buf[1:]  # nothing else is ever sent; skip it
                continue
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("the server closed the connection")
            self.buf += data


def replay_connection(steps: list[Step], address: tuple[str, int], name: str, timeout: float = 20) -> int:
    """Play one connection's client side; raise ReplayMismatch at the first differing reply.
    Returns the number of server items checked."""
    import time

    deadline = time.monotonic() + timeout
    while True:  # the server may still be closing the previous connection: it refuses a second client
        sock = socket.create_connection(address, timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(0.05)
        try:
            early = sock.recv(256)
        except TimeoutError:
            early = b""
        if not early.startswith(b"$E.another"):
            break
        sock.close()
        if time.monotonic() > deadline:
            raise ReplayMismatch(f"{name}: the server kept refusing the connection: {early!r}")
        time.sleep(0.05)
    sock.settimeout(timeout)
    reader = _Reader(sock)
    checked = 0
    try:
        for index, step in enumerate(steps):
            if step.who == ">":
                if step.text == "^C":
                    sock.sendall(b"\x03")
                elif step.text in ("+", "-"):
                    sock.sendall(step.text.encode())
                else:
                    sock.sendall(frame(unshow(step.text[1:])))
                continue
            try:
                got = reader.next()
            except (EOFError, OSError) as e:
                raise ReplayMismatch(
                    f"{name}: item {index} (line {step.line}): expected\n  {step.who} {step.text}\nbut {e}"
                ) from None
            if not step.matches(got):
                raise ReplayMismatch(
                    f"{name}: item {index} (line {step.line}) differs\n  recorded: {step.who} {step.text}\n"
                    f"  replayed: < {show(got)}"
                )
            checked += 1
    finally:
        sock.close()
    return checked


def replay(t: Transcript, address: tuple[str, int]) -> int:
    """Replay every connection of a transcript in order; the number of server items that matched."""
    return sum(
        replay_connection(steps, address, f"{t.path.name} connection {n + 1}") for n, steps in enumerate(t.connections)
    )
