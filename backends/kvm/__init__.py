"""Real KVM backends (/dev/kvm): the uAPI (uapi.py), the x86-64 backend (x86.py), the arm64 backend
(arm64.py) and the choice of backend by host architecture.

    open_backend(image_path, ram_size, console, cpus=1) -> Backend
    KvmX86Backend(image_path_or_Image, *, ram_size=..., console=..., cpus=1)
    KvmArm64Backend(image_path_or_Image, *, ram_size=..., console=..., cpus=1)

``cpus`` (1..8) is the number of vCPUs (Capabilities.vcpus); see each backend for how they start.
"""

from __future__ import annotations

import platform
from pathlib import Path

from backends.api import Backend, BackendError, ConsoleSink
from backends.elf import Image
from backends.kvm.arm64 import KvmArm64Backend
from backends.kvm.x86 import KvmX86Backend

__all__ = ["KvmArm64Backend", "KvmX86Backend", "open_backend"]


def open_backend(image_path: str | Path | Image, ram_size: int, console: ConsoleSink | None, cpus: int = 1) -> Backend:
    """The KVM backend for this host's architecture (a KVM guest runs the host's instruction set)."""
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64"):
        backend: type[KvmX86Backend] | type[KvmArm64Backend] = KvmX86Backend
    elif machine in ("aarch64", "arm64"):
        backend = KvmArm64Backend
    else:
        raise BackendError(f"no KVM backend for host architecture {platform.machine() or 'unknown'}")
    if cpus == 1:  # the one-vCPU call, as before cpus existed
        return backend(image_path, ram_size=ram_size, console=console)
    return backend(image_path, ram_size=ram_size, console=console, cpus=cpus)
