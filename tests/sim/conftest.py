"""Fixtures of the simulated-core tests: test guests built on demand from guests/*.S."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from backends.elf import Image, load_image


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
