"""Offsets, sizes and a fast flat codec derived from the construct definitions in uapi.py.

construct describes each uAPI struct once; the hot paths of a vCPU (KVM_RUN exits, GET/SET_REGS) cannot
afford construct's generic parser (~25-170 us a struct), so this module walks a definition once and
turns it into offsets (for the mmapped kvm_run) and one struct.Struct per flat struct (~2 us).  The
uAPI layout test walks the same tree to ask the C compiler about every field, so what the backend uses
is exactly what the test checks.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from construct import Array, Bytes, BytesInteger, Construct, FormatField, Padded, Pass, Renamed, Struct, Union


@dataclass(frozen=True)
class Node:
    """A named part of a layout: a struct member, an array element or a union member."""

    path: str  # "debug.arch.pc", "fpr[3]", "exit.io.port"
    offset: int
    size: int
    leaf: bool  # an integer or byte string (not a struct, array or union)
    fmt: str = ""  # leaves: the struct module code ("B", "H", "I", "Q", "QQ" for 16-byte integers, "6s")


def _static_size(con: Construct) -> int:
    if isinstance(con, Padded):
        return int(con.length)
    if isinstance(con, Union):
        raise TypeError("a Union has no size of its own: wrap it in Padded(size, Union(...)) as C's union is")
    return int(con.sizeof())


def _leaf_fmt(con: Construct) -> str | None:
    if isinstance(con, FormatField):
        return str(con.fmtstr)[-1]
    if isinstance(con, BytesInteger):
        if con.length != 16 or not con.swapped or con.signed:
            raise TypeError("only unsigned little-endian 16-byte BytesInteger leaves are supported")
        return "QQ"
    if isinstance(con, Bytes):
        return f"{int(con.length)}s"
    return None


def _walk(con: Construct, path: str, offset: int) -> Iterator[Node]:
    if isinstance(con, Renamed):
        yield from _walk(con.subcon, f"{path}.{con.name}" if path else str(con.name), offset)
        return
    if isinstance(con, Padded) and con.subcon is Pass:  # Padding(n): anonymous filler
        return
    fmt = _leaf_fmt(con)
    if fmt is not None:
        yield Node(path, offset, _static_size(con), True, fmt)
        return
    if path:
        yield Node(path, offset, _static_size(con), False)
    yield from _members(con.subcon if isinstance(con, Padded) else con, path, offset)


def _members(con: Construct, path: str, offset: int) -> Iterator[Node]:
    """The members of a struct, union or array (a Padded union's size is the Padded's)."""
    if isinstance(con, Struct):
        here = offset
        for sub in con.subcons:
            yield from _walk(sub, path, here)
            here += _static_size(sub)
    elif isinstance(con, Union):
        for sub in con.subcons:
            yield from _walk(sub, path, offset)
    elif isinstance(con, Array):
        elem = _static_size(con.subcon)
        for i in range(int(con.count)):
            yield from _walk(con.subcon, f"{path}[{i}]", offset + i * elem)
    else:
        raise TypeError(f"{path or 'layout'}: unsupported construct {type(con).__name__}")


def nodes(con: Construct) -> list[Node]:
    """Every named member of a layout, depth first, with its offset from the start."""
    return list(_walk(con, "", 0))


def offsetof(con: Construct, path: str) -> int:
    for node in _walk(con, "", 0):
        if node.path == path:
            return node.offset
    raise KeyError(path)


def sizeof(con: Construct) -> int:
    return _static_size(con)


class Codec:
    """One struct.Struct over a flat layout (no union): unpack to / pack from {path: int}.

    16-byte integer leaves (u128, vector registers) come back as one int; byte-string leaves are not
    allowed, so that every value is an int."""

    def __init__(self, con: Construct) -> None:
        leaves = [n for n in nodes(con) if n.leaf]
        fmt = "<"
        here = 0
        self.names: tuple[str, ...] = tuple(n.path for n in leaves)
        self._wide: tuple[bool, ...] = tuple(n.fmt == "QQ" for n in leaves)
        for n in leaves:
            if n.offset < here:
                raise TypeError(f"{n.path} overlaps the field before it: a Codec needs a flat layout")
            if n.fmt.endswith("s"):
                raise TypeError(f"{n.path} is a byte string: a Codec yields only integers")
            if n.offset > here:
                fmt += f"{n.offset - here}x"
            fmt += n.fmt
            here = n.offset + n.size
        self.size = sizeof(con)
        fmt += f"{self.size - here}x" if self.size > here else ""
        self._struct = struct.Struct(fmt)
        if self._struct.size != self.size:
            raise TypeError("layout and struct format disagree on the size")

    def unpack(self, buf: bytes | bytearray | memoryview | mmap.mmap, offset: int = 0) -> dict[str, int]:
        raw = self._struct.unpack_from(buf, offset)
        out: dict[str, int] = {}
        i = 0
        for name, wide in zip(self.names, self._wide, strict=True):
            if wide:
                out[name] = raw[i] | raw[i + 1] << 64
                i += 2
            else:
                out[name] = raw[i]
                i += 1
        return out

    def pack(self, values: Mapping[str, int]) -> bytes:
        """Fields missing from ``values`` are zero; unknown names raise KeyError."""
        unknown = set(values) - set(self.names)
        if unknown:
            raise KeyError(f"unknown fields {sorted(unknown)}")
        flat: list[int] = []
        for name, wide in zip(self.names, self._wide, strict=True):
            v = values.get(name, 0)
            if wide:
                flat += [v & 0xFFFF_FFFF_FFFF_FFFF, v >> 64]
            else:
                flat.append(v)
        return self._struct.pack(*flat)
