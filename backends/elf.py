"""Guest images: an aarch64 ELF's loadable segments and entry point (pyelftools).

Both backends load through this module so that "what a guest image is" is
decided once, and a bad image is refused with one clear message before any VM
exists.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

from elftools.elf.elffile import ELFFile

EM_AARCH64 = 183


class ImageError(Exception):
    """The file is not a loadable guest image; the message is one line for the user."""


@dataclass(frozen=True)
class Segment:
    addr: int  # physical load address (guest RAM; the demo guests run with the MMU off)
    data: bytes  # file bytes
    memsize: int  # bytes in memory; the tail past len(data) is zero-filled


@dataclass(frozen=True)
class Image:
    path: Path
    machine: str
    entry: int
    segments: tuple[Segment, ...]
    sha256: str


# machine -> (ELF e_machine, the name users read in errors)
MACHINES = {"aarch64": ("EM_AARCH64", "aarch64"), "x86_64": ("EM_X86_64", "x86-64")}


def load_image(path: str | Path, machine: str = "aarch64") -> Image:
    """Parse an ELF for ``machine`` and return its PT_LOAD segments; raises ImageError with a one-line reason."""
    em, shown = MACHINES[machine]
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise ImageError(f"cannot read guest image {p}: {e.strerror or e}") from None
    try:
        elf = ELFFile(io.BytesIO(raw))
        if elf.header["e_machine"] != em:
            raise ImageError(f"{p} is an ELF for {elf.header['e_machine']}, not {shown} ({em})")
        if elf.elfclass != 64:
            raise ImageError(f"{p} is a 32-bit ELF; an {shown} (64-bit) image is needed")
        segs = []
        for seg in elf.iter_segments():
            if seg["p_type"] != "PT_LOAD" or seg["p_memsz"] == 0:
                continue
            data = seg.data()
            if len(data) != seg["p_filesz"]:
                raise ImageError(f"{p} is truncated: a PT_LOAD segment extends past the end of the file")
            segs.append(Segment(seg["p_paddr"], data, seg["p_memsz"]))
        if not segs:
            raise ImageError(f"{p} has no PT_LOAD segments to load")
        return Image(p, machine, elf.header["e_entry"], tuple(segs), hashlib.sha256(raw).hexdigest())
    except ImageError:
        raise
    except Exception as e:  # pyelftools raises many types on corrupt input; all mean "not a valid ELF"
        raise ImageError(f"{p} is not a valid ELF file: {e}") from None
