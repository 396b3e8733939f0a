"""The scenario rig: open any backend behind backends.api, and record what a scenario saw.

Scenarios (tests/scenarios/test_*.py) talk only to backends.api; the ``vm`` fixture gives them each
available backend in turn (the simulated core where unicorn is installed, arm64 KVM on an aarch64 host
with /dev/kvm: inside the emulated host, ``scripts/arm64-host``).  Every exit and every value a scenario
reads back is recorded; with GDBSTUB_SCENARIO_TRACE=FILE the records are appended to FILE as JSON lines,
which ``scripts/scenario-diff`` compares between backends.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backends.api import EC_WATCHPT_LOW, Backend, Capabilities, ConsoleSink, DebugRegs, Exit, ExitReason
from backends.elf import Image

ON_ARM64_KVM = platform.machine().lower() in ("aarch64", "arm64") and os.path.exists("/dev/kvm")
HAVE_UNICORN = importlib.util.find_spec("unicorn") is not None


def _open_sim(image: Image, console: ConsoleSink, cpus: int = 1) -> Backend:
    from backends.sim import SimBackend

    return SimBackend(image, console=console, cpus=cpus)


def _open_kvm(image: Image, console: ConsoleSink, cpus: int = 1) -> Backend:
    from backends.kvm.arm64 import KvmArm64Backend

    return KvmArm64Backend(image, console=console, cpus=cpus)


@dataclass(frozen=True)
class BackendKind:
    name: str
    open: Callable[[Image, ConsoleSink, int], Backend]
    unavailable: str  # why it cannot run here ("" when it can)


def backend_kinds() -> list[BackendKind]:
    """Every arm64 backend, each with the reason it cannot run on this host (empty if it can)."""
    wanted = {n for n in os.environ.get("GDBSTUB_SCENARIO_BACKENDS", "sim,kvm").split(",") if n}
    kinds = [
        BackendKind("sim", _open_sim, "" if HAVE_UNICORN else "unicorn is not installed"),
        BackendKind(
            "kvm",
            _open_kvm,
            "" if ON_ARM64_KVM else "needs an aarch64 host with /dev/kvm (on x86-64: scripts/arm64-host)",
        ),
    ]
    return [
        k if k.name in wanted or k.unavailable else BackendKind(k.name, k.open, "GDBSTUB_SCENARIO_BACKENDS")
        for k in kinds
    ]


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, Exit):
        return describe_exit(value)
    return value


def describe_exit(ex: Exit) -> dict[str, Any]:
    """What the differential compares of an exit: reason, EC and ISS, FAR where KVM defines it."""
    out: dict[str, Any] = {"reason": ex.reason.value}
    if ex.reason is ExitReason.DEBUG:
        out.update(ec=hex(ex.ec), iss=hex(ex.esr & 0x1FF_FFFF), hsr_high=hex(ex.esr >> 32))
        if ex.ec == EC_WATCHPT_LOW:
            out["far"] = hex(ex.far)
    elif ex.reason is ExitReason.SHUTDOWN:
        out["status"] = ex.status
    elif ex.reason is ExitReason.FAULT:
        out["signal"] = ex.signal
    return out


@dataclass
class Traced:
    """A backend with every exit (and the PC after it) and every value read back recorded."""

    backend: Backend
    kind: str
    trace: list[list[Any]] = field(default_factory=list)

    def capabilities(self) -> Capabilities:
        return self.backend.capabilities()

    def id_aa64dfr0(self) -> int:
        """ID_AA64DFR0_EL1 as the guest reads it (both arm64 backends have it; not part of backends.api)."""
        value: int = getattr(self.backend, "id_aa64dfr0")()  # noqa: B009 (outside the Backend protocol)
        return value

    def read_memory(self, addr: int, size: int) -> bytes:
        data = self.backend.read_memory(addr, size)
        self.trace.append(["mem", hex(addr), data.hex()])
        return data

    def write_memory(self, addr: int, data: bytes) -> None:
        self.backend.write_memory(addr, data)

    def translate(self, addr: int, vcpu: int = 0) -> int:
        pa = self.backend.translate(addr, vcpu)
        self.trace.append(["translate", hex(addr), hex(pa)])
        return pa

    def get_regs(self, vcpu: int = 0) -> dict[str, int]:
        return self.backend.get_regs(vcpu)

    def get_reg(self, name: str, vcpu: int = 0) -> int:
        value = self.backend.get_reg(name, vcpu)
        self.trace.append(["reg", name, hex(value)])
        return value

    def set_regs(self, regs: dict[str, int], vcpu: int = 0) -> None:
        self.backend.set_regs(regs, vcpu)

    def set_guest_debug(self, control: int, regs: DebugRegs | None = None, vcpu: int = 0) -> None:
        self.backend.set_guest_debug(control, regs, vcpu)

    def run(self, vcpu: int = 0) -> Exit:
        ex = self.backend.run(vcpu)
        self.trace.append(["exit", describe_exit(ex), hex(self.backend.get_reg("pc", vcpu))])
        return ex

    def kick(self, vcpu: int = 0) -> None:
        self.backend.kick(vcpu)

    def set_irq_line(self, level: bool, vcpu: int = 0) -> None:
        self.backend.set_irq_line(level, vcpu)

    def close(self) -> None:
        self.backend.close()

    def note(self, what: str, value: Any) -> None:
        """A guest-visible result the scenario derived itself."""
        self.trace.append(["note", what, _jsonable(value)])


def save_trace(path: Path, test: str, kind: str, outcome: str, trace: list[list[Any]]) -> None:
    with path.open("a") as f:
        f.write(json.dumps({"test": test, "backend": kind, "outcome": outcome, "trace": trace}) + "\n")
