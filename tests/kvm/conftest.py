"""Fixtures for the real-KVM tests: the x86-64 guests (built by scripts/build-x86-guests when missing or
stale) and their symbols, and x86 VMs that are closed after each test."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from backends.kvm.x86 import KvmX86Backend
from tests.conftest import ROOT, require_tool

X86_GUESTS = ROOT / "guests" / "x86"
X86_BUILD = ROOT / "guests" / "build" / "x86"
HAVE_KVM = os.path.exists("/dev/kvm")
NO_KVM = "no /dev/kvm on this host"


def _stale(elf: Path, sources: list[Path]) -> bool:
    if not elf.exists():
        return True
    built = elf.stat().st_mtime_ns
    return any(src.stat().st_mtime_ns > built for src in sources)


def build_x86_guest(name: str) -> Path:
    """guests/build/x86/NAME.elf, rebuilt when older than its source or the linker script."""
    source = X86_GUESTS / f"{name}.S"
    elf = X86_BUILD / f"{name}.elf"
    if _stale(elf, [source, X86_GUESTS / "link.ld", ROOT / "scripts" / "build-x86-guests"]):
        require_tool("as", "binutils")
        require_tool("ld", "binutils")
        out = subprocess.run(
            ["bash", str(ROOT / "scripts" / "build-x86-guests")], cwd=ROOT, capture_output=True, text=True
        )
        if out.returncode != 0:
            pytest.fail(f"scripts/build-x86-guests failed ({out.returncode}):\n{out.stdout}{out.stderr}")
    return elf


def elf_symbols(path: Path) -> dict[str, int]:
    with path.open("rb") as f:
        symtab = ELFFile(f).get_section_by_name(".symtab")
        assert isinstance(symtab, SymbolTableSection)
        return {s.name: s["st_value"] for s in symtab.iter_symbols() if s.name}


@pytest.fixture(scope="session")
def x86_guest() -> Callable[[str], Path]:
    return build_x86_guest


@pytest.fixture(scope="session")
def debug_guest() -> tuple[Path, dict[str, int]]:
    """The scenario guest (guests/x86/debug_regs.S) and its symbols."""
    elf = build_x86_guest("debug_regs")
    return elf, elf_symbols(elf)


@pytest.fixture
def console() -> bytearray:
    return bytearray()


@pytest.fixture
def make_vm(console: bytearray) -> Iterator[Callable[..., KvmX86Backend]]:
    """make_vm(image, **kw) -> KvmX86Backend whose console appends to the ``console`` fixture."""
    vms: list[KvmX86Backend] = []

    def factory(image: object, **kw: object) -> KvmX86Backend:
        kw.setdefault("console", console.extend)
        vm = KvmX86Backend(image, **kw)  # type: ignore[arg-type]  # forwarded as given
        vms.append(vm)
        return vm

    yield factory
    for vm in vms:
        vm.close()
