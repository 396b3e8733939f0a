"""backends/kvm/uapi.py against the real kernel headers: every struct size, every member's offset and
size, every ioctl request number and constant must be what the C compiler says.

The C program is generated from the construct definitions themselves (backends.kvm.layout.nodes), so a
member added to uapi.py is checked without touching this file.  x86-64: Debian's linux-libc-dev headers
with the host gcc; the program runs and prints the values.  arm64: linux-libc-dev-arm64-cross with
aarch64-linux-gnu-gcc; the program cannot run here, so the values are read back from the compiled
object's data (the `probe_values` array, found through the symbol table with pyelftools).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from construct import Construct
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from backends.kvm import uapi
from backends.kvm.layout import nodes, sizeof
from tests.conftest import IN_CI, require_tool

X86_INCLUDES = ("asm/sigcontext.h",)


def _c_member(struct_name: str, path: str) -> str:
    """Our member path in C: kvm_run's exit union is anonymous there."""
    if struct_name == "kvm_run" and path.startswith(uapi.RUN_ANONYMOUS + "."):
        return path[len(uapi.RUN_ANONYMOUS) + 1 :]
    return path


def _expectations(
    structs: dict[str, Construct], ioctls: dict[str, int], constants: dict[str, int]
) -> list[tuple[str, str, int]]:
    """(what, C expression, our value) for everything the test compares."""
    out: list[tuple[str, str, int]] = []
    for name, con in structs.items():
        out.append((f"sizeof(struct {name})", f"sizeof(struct {name})", sizeof(con)))
        for node in nodes(con):
            if node.path == uapi.RUN_ANONYMOUS and name == "kvm_run":
                continue  # the anonymous union itself has no C name; its members are checked
            member = _c_member(name, node.path)
            out.append((f"offsetof({name}, {member})", f"offsetof(struct {name}, {member})", node.offset))
            out.append((f"sizeof({name}.{member})", f"sizeof(((struct {name} *)0)->{member})", node.size))
    for macro, value in {**ioctls, **constants}.items():
        out.append((macro, f"(unsigned long long)({macro})", value))
    return out


def _source(exprs: list[str], with_main: bool, includes: tuple[str, ...] = ()) -> str:
    lines = [
        "#include <stddef.h>",
        "#include <stdio.h>" if with_main else "",
        "#include <linux/kvm.h>",
        *[f"#include <{h}>" for h in includes],
        "__attribute__((used)) const unsigned long long probe_values[] = {",
        *[f"    {e}," for e in exprs],
        "};",
    ]
    if with_main:
        lines += [
            "int main(void) {",
            "    for (size_t i = 0; i < sizeof probe_values / sizeof probe_values[0]; i++)",
            '        printf("%llu\\n", probe_values[i]);',
            "    return 0;",
            "}",
        ]
    return "\n".join(lines) + "\n"


def _compile(cc: str, src: Path, out: Path, *args: str) -> None:
    res = subprocess.run(
        [cc, "-std=gnu11", "-Wall", "-Werror", *args, "-o", str(out), str(src)], capture_output=True, text=True
    )
    assert res.returncode == 0, f"{cc} failed:\n{res.stderr}"


def _values_from_object(obj: Path, count: int) -> list[int]:
    with obj.open("rb") as f:
        elf = ELFFile(f)
        symtab = elf.get_section_by_name(".symtab")
        assert isinstance(symtab, SymbolTableSection)
        syms = symtab.get_symbol_by_name("probe_values")
        assert syms, "probe_values not in the object's symbol table"
        sym = syms[0]
        assert sym["st_size"] == 8 * count
        section = elf.get_section(sym["st_shndx"])
        rel = elf.get_section_by_name(".rela" + section.name)
        assert rel is None or rel.num_relocations() == 0, "probe values must be link-time constants"
        data = section.data()[sym["st_value"] : sym["st_value"] + 8 * count]
        little = elf.little_endian
    return [int.from_bytes(data[i : i + 8], "little" if little else "big") for i in range(0, len(data), 8)]


def _compare(expect: list[tuple[str, str, int]], got: list[int]) -> None:
    assert len(got) == len(expect)
    wrong = [
        f"{what}: C says {c}, uapi.py says {ours}" for (what, _, ours), c in zip(expect, got, strict=True) if c != ours
    ]
    assert not wrong, f"{len(wrong)} mismatches:\n" + "\n".join(wrong)


def test_x86_64_layout_matches_kernel_headers(tmp_path: Path) -> None:
    gcc = require_tool("gcc", "gcc")
    if not Path("/usr/include/linux/kvm.h").exists():
        pytest.skip("/usr/include/linux/kvm.h missing (Debian package linux-libc-dev)")
    expect = _expectations(uapi.X86_64_STRUCTS, uapi.X86_64_IOCTLS, uapi.X86_64_CONSTANTS)
    src = tmp_path / "probe.c"
    # asm/sigcontext.h: the XSAVE image structs (struct _xstate) KVM_GET_XSAVE's region holds
    src.write_text(_source([e for _, e, _ in expect], with_main=True, includes=X86_INCLUDES))
    exe = tmp_path / "probe"
    _compile(gcc, src, exe)
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split()
    _compare(expect, [int(v) for v in out])
    # the same numbers read from the object file, as the arm64 half does: the extraction itself is checked
    obj = tmp_path / "probe.o"
    _compile(gcc, src, obj, "-c")
    assert _values_from_object(obj, len(expect)) == [int(v) for v in out]


def test_arm64_layout_matches_kernel_headers(tmp_path: Path) -> None:
    cc = require_tool("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu")
    headers = Path("/usr/aarch64-linux-gnu/include/linux/kvm.h")
    if not headers.exists():
        message = f"{headers} missing (Debian package linux-libc-dev-arm64-cross; scripts/test installs it)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    expect = _expectations(uapi.ARM64_STRUCTS, uapi.ARM64_IOCTLS, uapi.ARM64_CONSTANTS)
    src = tmp_path / "probe.c"
    src.write_text(_source([e for _, e, _ in expect], with_main=False))
    obj = tmp_path / "probe.o"
    _compile(cc, src, obj, "-c")
    with obj.open("rb") as f:
        assert ELFFile(f).header["e_machine"] == "EM_AARCH64"
    _compare(expect, _values_from_object(obj, len(expect)))


def test_ioctl_numbers_match_the_reference_table() -> None:
    """A few numbers from kvm-hw-debug.md 1.3, independent of any compiler."""
    assert uapi.KVM_RUN == 0xAE80
    assert uapi.KVM_SET_GUEST_DEBUG == 0x4048AE9B
    assert uapi.KVM_SET_GUEST_DEBUG_ARM64 == 0x4208AE9B
    assert uapi.KVM_GET_REGS_ARM64 == 0x8360AE81
    assert uapi.KVM_GET_SREGS == 0x8138AE83
    assert uapi.KVM_ARM_PREFERRED_TARGET == 0x8020AEAF
    assert sizeof(uapi.kvm_run) == sizeof(uapi.kvm_run_arm64) == 2352
