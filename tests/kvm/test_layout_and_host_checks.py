"""Pieces of the KVM backends that need no /dev/kvm: the layout codec, the x87 tag conversion, the
x86-64 image loader, the one-line host-check refusals (with ioctls faked) and open_backend's choice."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from construct import Array, Int16ul, Int32ul, Int64ul, Padded, Padding, Struct, Union

from backends.api import BackendError
from backends.elf import ImageError
from backends.kvm import host, open_backend, uapi
from backends.kvm.layout import Codec, nodes, offsetof, sizeof
from backends.kvm.x86 import abridged_ftag, full_ftag, load_x86_image
from tests.conftest import DEMO_ELF
from tests.kvm.conftest import build_x86_guest


def test_nodes_offsets_and_codec_round_trip() -> None:
    con = Struct("a" / Int16ul, Padding(2), "b" / Array(2, Int32ul), "c" / uapi.u128, "d" / Int64ul)
    assert sizeof(con) == 36
    leaves = [(n.path, n.offset) for n in nodes(con) if n.leaf]
    assert leaves == [("a", 0), ("b[0]", 4), ("b[1]", 8), ("c", 12), ("d", 28)]
    codec = Codec(con)
    values = {"a": 0xBEEF, "b[0]": 1, "b[1]": 0xFFFF_FFFF, "c": (1 << 128) - 2, "d": 1 << 63}
    raw = codec.pack(values)
    assert len(raw) == 36 and raw[2:4] == b"\0\0"
    assert codec.unpack(raw) == values
    assert codec.unpack(b"\xff" * 4 + raw, 4) == values
    assert codec.pack({"a": 1}) == b"\x01" + bytes(35)  # missing fields are zero
    with pytest.raises(KeyError):
        codec.pack({"nope": 1})


def test_codec_refuses_unions_and_kvm_run_offsets() -> None:
    with pytest.raises(TypeError, match="overlaps"):
        Codec(Struct("u" / Padded(4, Union(None, "x" / Int32ul, "y" / Int32ul))))
    with pytest.raises(TypeError, match="Padded"):
        nodes(Struct("u" / Union(None, "x" / Int32ul)))
    assert offsetof(uapi.kvm_run, "exit.debug.arch.pc") == 40
    assert offsetof(uapi.kvm_run_arm64, "exit.debug.arch.far") == 40
    assert offsetof(uapi.kvm_run, "kvm_valid_regs") == 288


def test_x87_tag_word_conversions() -> None:
    one = 0x3FFF << 64 | 1 << 63  # valid (00)
    zero = 0  # zero (01)
    inf = 0x7FFF << 64 | 1 << 63  # special (10)
    denormal = 1  # exponent 0, fraction != 0: special
    fpr = [one, zero, inf, denormal, 0, 0, 0, 0]
    assert full_ftag(0b0000_1111, 0, fpr) == 0xFF << 8 | 0b10_10_01_00
    # TOP = 6: physical register 6 is ST(0)
    assert full_ftag(0b0100_0000, 6 << 11, fpr) == 0xFFFF & ~(3 << 12)
    assert full_ftag(0, 0, fpr) == 0xFFFF
    assert abridged_ftag(0xFFFF) == 0 and abridged_ftag(0) == 0xFF and abridged_ftag(0xFF << 8 | 0b10_10_01_00) == 0x0F


def test_x86_image_loader() -> None:
    with pytest.raises(ImageError, match="EM_AARCH64, not x86-64"):
        load_x86_image(DEMO_ELF)
    with pytest.raises(ImageError, match="cannot read"):
        load_x86_image("/nonexistent.elf")
    with pytest.raises(ImageError, match="not a valid ELF"):
        load_x86_image(Path(__file__))
    image = load_x86_image(build_x86_guest("demo"))
    assert (image.machine, image.entry) == ("x86_64", 0x100000)
    assert image.segments[0].addr == 0x100000 and len(image.segments) == 2


def test_host_check_refusals_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(BackendError, match="does not exist"):
        host.open_kvm(str(tmp_path / "kvm"))
    fake = tmp_path / "kvm"
    fake.write_bytes(b"")
    answers = {uapi.KVM_GET_API_VERSION: 11}

    def fake_ioctl(fd: int, request: int, arg: int = 0, *, what: str) -> int:
        if request == uapi.KVM_CHECK_EXTENSION:
            return answers.get(arg, 1)
        return answers.get(request, 0)

    monkeypatch.setattr(host, "ioctl_int", fake_ioctl)
    with pytest.raises(BackendError, match="KVM API version 11, this backend speaks 12") as e:
        host.open_kvm(str(fake))
    assert "\n" not in str(e.value)
    answers[uapi.KVM_GET_API_VERSION] = 12
    answers[uapi.KVM_CAP_SET_GUEST_DEBUG] = 0
    with pytest.raises(BackendError, match="missing KVM_CAP_SET_GUEST_DEBUG"):
        host.open_kvm(str(fake))
    answers[uapi.KVM_CAP_SET_GUEST_DEBUG] = 1
    fd = host.open_kvm(str(fake))
    os.close(fd)


def test_open_backend_on_an_arm64_host_opens_the_arm64_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[object, int, object]] = []

    def fake_arm64(image: object, *, ram_size: int, console: object) -> str:
        calls.append((image, ram_size, console))
        return "arm64 backend"

    monkeypatch.setattr("platform.machine", lambda: "aarch64")
    monkeypatch.setattr("backends.kvm.KvmArm64Backend", fake_arm64)
    assert open_backend(DEMO_ELF, 128 << 20, None) == "arm64 backend"  # type: ignore[comparison-overlap]
    assert calls == [(DEMO_ELF, 128 << 20, None)]
    monkeypatch.setattr("platform.machine", lambda: "riscv64")
    with pytest.raises(BackendError, match="riscv64"):
        open_backend(DEMO_ELF, 128 << 20, None)
