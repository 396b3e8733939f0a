"""A register table and its wire encodings, shared by the arch modules: one table drives target.xml,
g/G and p/P, so they can never disagree (the classic "Remote 'g' packet reply is too long")."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Reg:
    name: str
    bits: int
    type: str
    feature: str
    group: str = ""
    in_g: bool = True  # False: read and written with p/P only (gdb learns that from the `g` reply's length)

    @property
    def size(self) -> int:
        return self.bits // 8


class RegisterTable:
    """Little-endian (target byte order) hex encodings of a register table, in gdb's numbering."""

    def __init__(self, registers: tuple[Reg, ...]) -> None:
        self.registers = registers
        in_g = [r for r in registers if r.in_g]
        assert registers[: len(in_g)] == tuple(in_g), "the registers outside `g` come last"
        self._in_g = tuple(in_g)
        self.g_size = sum(r.size for r in in_g)
        self._layout = tuple((r.name, r.size, (1 << r.bits) - 1) for r in in_g)

    def encode_reg(self, num: int, value: int) -> str:
        r = self.registers[num]
        return (value & ((1 << r.bits) - 1)).to_bytes(r.size, "little").hex()

    def decode_reg(self, num: int, text: str) -> int:
        """One register's hex; ValueError if the size or digits are wrong."""
        r = self.registers[num]
        if len(text) != r.size * 2:
            raise ValueError(f"{r.name} needs {r.size * 2} hex digits, got {len(text)}")
        return int.from_bytes(bytes.fromhex(text), "little")

    def encode_g(self, regs: dict[str, int]) -> str:
        """All registers in table order: bytes joined first, hex-encoded once (a `g` per stop is hot)."""
        return b"".join((regs[name] & mask).to_bytes(size, "little") for name, size, mask in self._layout).hex()

    def decode_g(self, text: str) -> dict[str, int]:
        """A full G packet body; ValueError on a wrong length or bad hex ('xx' = leave unchanged)."""
        if len(text) != self.g_size * 2:
            raise ValueError(f"G needs {self.g_size * 2} hex digits, got {len(text)}")
        out: dict[str, int] = {}
        pos = 0
        for i, r in enumerate(self._in_g):
            chunk = text[pos : pos + r.size * 2]
            pos += r.size * 2
            if not chunk.startswith("xx"):
                out[r.name] = self.decode_reg(i, chunk)
        return out

    def xml_regs(self, feature: str) -> list[str]:
        """The <reg> lines of one target.xml feature, with explicit regnums."""
        lines = []
        for num, r in enumerate(self.registers):
            if r.feature == feature:
                group = f' group="{r.group}"' if r.group else ""
                lines.append(f'    <reg name="{r.name}" bitsize="{r.bits}" type="{r.type}" regnum="{num}"{group}/>')
        return lines
