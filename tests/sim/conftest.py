"""Fixtures of the simulated-core tests: test guests built on demand from guests/*.S."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from backends.elf import Image, load_image
from tests.conftest import ROOT, require_tool

GUESTS = ROOT / "guests"


def _stale(elf: Path, sources: list[Path]) -> bool:
    if not elf.exists():
        return True
    built = elf.stat().st_mtime_ns
    return any(src.stat().st_mtime_ns > built for src in sources)


@pytest.fixture(scope="session")
def guest_elf() -> Callable[[str], Path]:
    """guest_elf(name) -> guests/build/NAME.elf, running scripts/build-guests when it is missing or
    older than guests/NAME.S (or the linker script).  Without the cross assembler: a failure in CI,
    a skip locally."""

    def build(name: str) -> Path:
        source = GUESTS / f"{name}.S"
        if not source.exists():
            raise FileNotFoundError(f"no guest source {source}")
        elf = GUESTS / "build" / f"{name}.elf"
        if _stale(elf, [source, GUESTS / "link.ld"]):
            require_tool("aarch64-linux-gnu-as", "binutils-aarch64-linux-gnu")
            require_tool("aarch64-linux-gnu-ld", "binutils-aarch64-linux-gnu")
            out = subprocess.run(
                ["bash", str(ROOT / "scripts" / "build-guests")], cwd=ROOT, capture_output=True, text=True
            )
            if out.returncode != 0:
                pytest.fail(f"scripts/build-guests failed ({out.returncode}):\n{out.stdout}{out.stderr}")
            if not elf.exists():
                pytest.fail(f"scripts/build-guests did not produce {elf}")
        return elf

    return build


@dataclass(frozen=True)
class Guest:
    path: Path
    image: Image
    symbols: dict[str, int]

    def __getitem__(self, name: str) -> int:
        return self.symbols[name]


def read_symbols(path: Path) -> dict[str, int]:
    with open(path, "rb") as f:
        symtab = ELFFile(f).get_section_by_name(".symtab")
        assert symtab is not None, f"{path} has no symbol table"
        return {s.name: s["st_value"] for s in symtab.iter_symbols() if s.name}


@pytest.fixture(scope="session")
def debug_unit(guest_elf: Callable[[str], Path]) -> Guest:
    """guests/debug_unit.S: its image and symbol table."""
    path = guest_elf("debug_unit")
    return Guest(path, load_image(path), read_symbols(path))
