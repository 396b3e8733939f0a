"""Fixtures of the scenario corpus: ``vm`` is every available arm64 backend in turn (see rig.py)."""

from __future__ import annotations

import faulthandler
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from backends.elf import Image, load_image
from tests.scenarios.rig import BackendKind, Traced, backend_kinds, save_trace


class Guest:
    """A scenario guest: its image and symbols."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.image: Image = load_image(path)
        with path.open("rb") as f:
            symtab = ELFFile(f).get_section_by_name(".symtab")
            assert isinstance(symtab, SymbolTableSection)
            self.symbols = {s.name: s["st_value"] for s in symtab.iter_symbols() if s.name}

    def __getitem__(self, name: str) -> int:
        return self.symbols[name]


def _params() -> list[object]:
    out: list[object] = []
    for kind in backend_kinds():
        marks: list[pytest.MarkDecorator] = []
        if kind.name == "kvm":
            marks.append(pytest.mark.kvm_arm64)
        if kind.unavailable:
            marks.append(pytest.mark.skip(reason=f"{kind.name} backend: {kind.unavailable}"))
        out.append(pytest.param(kind, id=kind.name, marks=marks))
    return out


@pytest.fixture(params=_params())
def kind(request: pytest.FixtureRequest) -> BackendKind:
    k: BackendKind = request.param
    return k


@pytest.fixture(autouse=True)
def watchdog(request: pytest.FixtureRequest) -> Iterator[None]:
    """A guest that never exits blocks KVM_RUN forever: dump every thread's stack and end the process
    (unless pytest-timeout watches each test, as in the emulated arm64 host: it fails just that test)."""
    if request.config.pluginmanager.hasplugin("timeout"):
        yield
        return
    faulthandler.dump_traceback_later(60, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture
def console() -> list[bytes]:
    return []


@pytest.fixture
def make_vm(kind: BackendKind, console: list[bytes], request: pytest.FixtureRequest) -> Iterator[Callable[..., Traced]]:
    """make_vm(guest, cpus=1) -> a fresh VM of this backend with the guest loaded, closed after the test."""
    opened: list[Traced] = []

    def make(guest: Guest, cpus: int = 1) -> Traced:
        vm = Traced(kind.open(guest.image, console.append, cpus), kind.name)
        opened.append(vm)
        return vm

    yield make
    trace_file = os.environ.get("GDBSTUB_SCENARIO_TRACE")
    for vm in opened:
        if trace_file:
            rep = getattr(request.node, "rep_call", None)
            outcome = rep.outcome if rep is not None else "error"
            test = request.node.nodeid.replace(f"[{kind.name}-", "[").replace(f"[{kind.name}]", "")
            save_trace(Path(trace_file), test, kind.name, outcome, vm.trace)
        vm.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()  # type: ignore[attr-defined]
    if rep.when == "call":
        item.rep_call = rep  # type: ignore[attr-defined]
