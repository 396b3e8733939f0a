"""aarch64.access_size: how far one A64 load/store reaches (encodings assembled with binutils)."""

import pytest

from gdbstub.aarch64 import access_size

CASES = [
    (0xF9000020, 8, "str x0, [x1]"),
    (0x39000020, 1, "strb w0, [x1]"),
    (0x79000420, 2, "strh w0, [x1, #2]"),
    (0xB8004420, 4, "str w0, [x1], #4"),
    (0xA9810420, 16, "stp x0, x1, [x1, #16]!"),
    (0x29000420, 8, "stp w0, w1, [x1]"),
    (0xAD400420, 32, "ldp q0, q1, [x1]"),
    (0x6D000420, 16, "stp d0, d1, [x1]"),
    (0x3D800020, 16, "str q0, [x1]"),
    (0xBD400020, 4, "ldr s0, [x1]"),
    (0xF8627820, 8, "ldr x0, [x1, x2, lsl #3]"),
    (0xC85F7C20, 8, "ldxr x0, [x1]"),
    (0xC87F0820, 16, "ldxp x0, x2, [x1]"),
    (0x88DFFC20, 4, "ldar w0, [x1]"),
    (0x58000000, 8, "ldr x0, 38"),
    (0x98000000, 4, "ldrsw x0, 3c"),
    (0xF8200022, 8, "ldadd x0, x2, [x1]"),
    (0x38208022, 1, "swpb w0, w2, [x1]"),
    (0x4C002020, 64, "st1 {v0.16b-v3.16b}, [x1]"),
    (0xD50B7421, 64, "dc zva, x1"),
    (0x69400820, 8, "ldpsw x0, x2, [x1]"),
    (0xF85F8020, 8, "ldur x0, [x1, #-8]"),
]


@pytest.mark.parametrize(("insn", "size", "text"), CASES)
def test_access_size(insn: int, size: int, text: str) -> None:
    assert access_size(insn) == size, text
