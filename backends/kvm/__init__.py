"""Real KVM backends (/dev/kvm): the uAPI (uapi.py), the x86-64 backend (x86.py), the arm64 backend
(arm64.py) and the choice of backend by host architecture.

    open_backend(image_path, ram_size, console) -> Backend
    KvmX86Backend(image_path_or_Image, *, ram_size=..., console=...)
    KvmArm64Backend(image_path_or_Image, *, ram_size=..., console=...)
"""

from __future__ import annotations

import platform
from pathlib import Path

from backends.api import Backend, BackendError, ConsoleSink
from backends.elf import Image
from backends.kvm.arm64 import KvmArm64Backend
from backends.kvm.x86 import KvmX86Backend

__all__ = ["KvmArm64Backend", "KvmX86Backend", "open_backend"]


def open_backend(image_path: str | Path | Image, ram_size: int, console: ConsoleSink | None) -> Backend:
    """The KVM backend for this host's architecture (a KVM guest runs the host's instruction set)."""
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64"):
        return KvmX86Backend(image_path, ram_size=ram_size, console=console)
    if machine in ("aarch64", "arm64"):
        return KvmArm64Backend(image_path, ram_size=ram_size, console=console)
    raise BackendError(f"no KVM backend for host architecture {platform.machine() or 'unknown'}")
