"""x86-64 guests on this host's /dev/kvm, behind the backends.api.Backend interface.

    KvmX86Backend(image, *, ram_size=128 << 20, console=None, cpus=1)

``image`` is a path to an x86-64 ELF (read with load_x86_image) or a backends.elf.Image whose machine is
"x86_64"; ``console`` receives the bytes the guest writes to the COM1 data port.  Every vCPU starts halted
at the ELF entry in 64-bit long mode.  Bad images, bad sizes and hosts without a usable KVM raise
ImageError / BackendError with a one-line message before any VM exists.

The machine (``cpus`` vCPUs, 1..8, no interrupt controller, no devices):
- SMP without INIT/SIPI (there is no local APIC to send them): every vCPU starts at the ELF entry in the
  same long-mode state, runnable at once (KVM makes all vCPUs of a VM without an in-kernel irqchip
  runnable).  A guest tells the vCPUs apart by ``rdi`` = the vCPU index (0..N-1), which the backend sets
  on each; each starts with its own ``rsp`` (below) and should still set up its own stack.  CPUID is the
  host's supported table on every vCPU (its APIC id fields do not name the vCPU).  Each vCPU has its own
  fd, kvm_run mapping and KVM_SET_GUEST_DEBUG state: set_guest_debug(..., vcpu) programs that vCPU only,
  run(vcpu) is called from one thread per vCPU and kick(vcpu) interrupts only that vCPU.  The register
  and guest-debug calls of a vCPU block while its run() is in progress (KVM's vcpu mutex): kick it first.
- RAM: ``ram_size`` bytes (4 KiB multiple, 4 MiB .. 3 GiB) at guest physical 0, one mmap-backed memory
  slot.  Guest addresses are physical: the page tables identity-map the first 4 GiB with 2 MiB pages,
  so RAM and everything above it (MMIO) is reachable and read_memory/write_memory take the same
  addresses the guest uses.
- The top 32 KiB of RAM are reserved for the boot structures: the GDT (null, 64-bit code at selector
  0x08, data at 0x10), then PML4, PDPT and four page directories.  A segment that would load there is
  refused.  RSP starts just below them (ram_size - 32 KiB, minus 16 KiB per vCPU index), RFLAGS = 2
  (interrupts off), CR0 = PE|MP|ET|NE|WP|PG, CR4 = PAE|OSFXSR|OSXMMEXCPT (SSE works), EFER = LME|LMA, no
  IDT: a guest exception becomes a triple fault (Exit FAULT, SIGSEGV).
- I/O ports: a byte written to 0x3f8 (COM1 data) goes to ``console``; a write to 0xf4 (QEMU's isa-debug-exit
  port) powers off (Exit SHUTDOWN, status = the value written); other writes are ignored and reads return
  all ones (so a UART driver polling LSR sees the transmitter empty).  Accesses past RAM are MMIO: reads
  all ones, writes ignored.  ``hlt`` (never woken: there are no interrupts) is Exit SHUTDOWN "guest halted".

Registers use gdb's amd64 names (gdbstub/x86_64.py): rax..r15 rip eflags (KVM_GET_REGS), the selectors
cs ss ds es fs gs and fs_base gs_base (KVM_GET_SREGS), st0-st7 fctrl fstat ftag fiseg fioff foseg fooff fop
xmm0-15 mxcsr (KVM_GET_XSAVE: KVM_GET_FPU never reports mxcsr).  ftag is the full two-bit-per-register tag
word, computed from the FXSAVE abridged tag as gdb does; fioff/fiseg and fooff/foseg are the low/high
halves of the 64-bit FPU instruction and data pointers (gdb's amd64 FXSAVE layout).

Debug exits are KVM's (kvm-hw-debug.md section 4): Exit(DEBUG, exception=1 or 3, pc, dr6, dr7).  Hosts
differ: probe_host() finds out what this one delivers, and capabilities() notes it.  Two host defects
are repaired so that the stub sees KVM's behaviour (each such Exit says so in ``detail``):
- a host whose KVM hands int3 to its instruction emulator (PVM: the emulator cannot run int3 in long mode
  and reports KVM_EXIT_INTERNAL_ERROR) gets the #BP debug exit KVM normally gives, when USE_SW_BP is on;
- a host that loses the single-step trap of an output instruction (out, MMIO store) that exited to
  userspace gets the step exit after it (see _finish_step_after_output).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import mmap
import os
import struct
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from backends.api import (
    GUESTDBG_ENABLE,
    GUESTDBG_SINGLESTEP,
    GUESTDBG_USE_HW,
    GUESTDBG_USE_SW_BP,
    GUESTDBG_VALID_MASK_X86,
    X86_BP_VECTOR,
    X86_DB_VECTOR,
    BackendError,
    Capabilities,
    ConsoleSink,
    DebugRegs,
    Exit,
    ExitReason,
    GuestMemoryError,
    X86DebugRegs,
)
from backends.elf import Image, ImageError, Segment, load_image
from backends.kvm import host, uapi
from backends.kvm.layout import Codec, offsetof, sizeof

SIGILL, SIGBUS, SIGSEGV = 4, 7, 11

KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30
MIN_RAM = 4 * MIB
MAX_RAM = 3 * GIB  # stays below the TSS/identity-map pages KVM needs near 4 GiB, inside the identity map
RESERVED_TOP = 32 * KIB  # boot structures at the top of RAM
IDENTITY_MAP = 4 * GIB
COM1_DATA = 0x3F8
EXIT_PORT = 0xF4
TSS_ADDR = 0xFFFB_D000  # three pages KVM needs for real-mode emulation on Intel (QEMU's choice)
IDENTITY_MAP_ADDR = 0xFFFB_C000
VCPU_STACK = 16 * KIB  # distance between the vCPUs' initial rsp values

DR6_STEP = 0xFFFF4FF0  # DR6 of a single-step #DB: the active-low bits and BS
DR7_RESET = 0x400
GDT_CODE64 = 0x08
GDT_DATA = 0x10
CR0_PE, CR0_MP, CR0_ET, CR0_NE, CR0_WP, CR0_PG = 1 << 0, 1 << 1, 1 << 4, 1 << 5, 1 << 16, 1 << 31
CR4_PAE, CR4_OSFXSR, CR4_OSXMMEXCPT = 1 << 5, 1 << 9, 1 << 10
EFER_LME, EFER_LMA = 1 << 8, 1 << 10
PTE_P, PTE_RW, PTE_PS = 1 << 0, 1 << 1, 1 << 7

# ---- uAPI views (from backends.kvm.uapi) -------------------------------------------------------------
_REGS = Codec(uapi.kvm_regs)
_SREGS = Codec(uapi.kvm_sregs)
_FPU = Codec(uapi.kvm_fpu)
_XSTATE = Codec(uapi._xstate)
_XSAVE_MIN = sizeof(uapi.kvm_xsave)
_GUEST_DEBUG = Codec(uapi.kvm_guest_debug)
_IO = Codec(uapi.exit_io)
_DEBUG_EXIT = Codec(uapi.kvm_debug_exit_arch)
_FAIL_ENTRY = Codec(uapi.exit_fail_entry)
_INTERNAL = Codec(uapi.exit_internal)
_CPUID_HEADER = Codec(uapi.kvm_cpuid2)
_TRANSLATION = Codec(uapi.kvm_translation)
_CPUID_ENTRY_SIZE = sizeof(uapi.kvm_cpuid_entry2)
_RUN_IMMEDIATE_EXIT = offsetof(uapi.kvm_run, "immediate_exit")
_RUN_EXIT_REASON = offsetof(uapi.kvm_run, "exit_reason")
_RUN_EXIT = offsetof(uapi.kvm_run, "exit")
_MMIO_DATA = offsetof(uapi.kvm_run, "exit.mmio.data")
_MMIO_LEN = offsetof(uapi.kvm_run, "exit.mmio.len")
_MMIO_IS_WRITE = offsetof(uapi.kvm_run, "exit.mmio.is_write")
_EMU_FLAGS = offsetof(uapi.kvm_run, "exit.emulation_failure.flags")
_EMU_INSN_SIZE = offsetof(uapi.kvm_run, "exit.emulation_failure.insn_size")
_EMU_INSN_BYTES = offsetof(uapi.kvm_run, "exit.emulation_failure.insn_bytes")
_SYSTEM_EVENT_TYPE = offsetof(uapi.kvm_run, "exit.system_event.type")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")

# ---- registers -----------------------------------------------------------------------------------------
_GPRS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp") + tuple(f"r{i}" for i in range(8, 16))
_SELECTORS = ("cs", "ss", "ds", "es", "fs", "gs")
_X87 = ("fctrl", "fstat", "ftag", "fiseg", "fioff", "foseg", "fooff", "fop")
REG_NAMES: tuple[str, ...] = (
    _GPRS
    + ("rip", "eflags")
    + _SELECTORS
    + tuple(f"st{i}" for i in range(8))
    + _X87
    + tuple(f"xmm{i}" for i in range(16))
    + ("mxcsr", "fs_base", "gs_base")
)
REG_BITS: dict[str, int] = {n: 64 for n in _GPRS + ("rip", "fs_base", "gs_base")}
REG_BITS.update({n: 32 for n in ("eflags", *_SELECTORS, *_X87, "mxcsr")})
REG_BITS.update({f"st{i}": 80 for i in range(8)})
REG_BITS.update({f"xmm{i}": 128 for i in range(16)})
_GROUP = {n: "regs" for n in _GPRS + ("rip", "eflags")}
_GROUP.update({n: "sregs" for n in (*_SELECTORS, "fs_base", "gs_base")})
_GROUP.update({n: "fpu" for n in REG_NAMES if n not in _GROUP})
# Values wider than the KVM field they land in (gdb gives these registers 32 bits).
_FIELD_MAX = {n: 0xFFFF for n in (*_SELECTORS, "fctrl", "fstat", "ftag", "fop")}
_MASK80 = (1 << 80) - 1
_M32 = 0xFFFF_FFFF


def _u128(values: dict[str, int], array: str, index: int) -> int:
    """One 16-byte register of a u32 array (st_space, xmm_space) as an integer."""
    return sum(values[f"{array}[{4 * index + k}]"] << 32 * k for k in range(4))


def _put_u128(values: dict[str, int], array: str, index: int, value: int) -> None:
    for k in range(4):
        values[f"{array}[{4 * index + k}]"] = value >> 32 * k & _M32


def full_ftag(abridged: int, fstat: int, fpr: list[int]) -> int:
    """The x87 tag word (2 bits per physical register: 0 valid, 1 zero, 2 special, 3 empty) from the
    FXSAVE abridged tag (1 bit: not empty) and the register contents, as gdb's i387 code does.
    ``fpr`` is in stack order (ST(0) first), as FXSAVE and kvm_fpu store it."""
    top = (fstat >> 11) & 7
    tag = 0
    for phys in range(8):
        if not abridged >> phys & 1:
            t = 3
        else:
            value = fpr[(phys - top) & 7] & _MASK80
            exponent = value >> 64 & 0x7FFF
            fraction = value & (1 << 64) - 1
            if exponent == 0x7FFF:
                t = 2
            elif exponent == 0:
                t = 1 if fraction == 0 else 2
            else:
                t = 0 if fraction >> 63 else 2
        tag |= t << 2 * phys
    return tag


def abridged_ftag(full: int) -> int:
    """FXSAVE's one bit per register: set unless the full tag says empty (3)."""
    return sum(1 << i for i in range(8) if (full >> 2 * i) & 3 != 3)


# ---- images ----------------------------------------------------------------------------------------------
def load_x86_image(path: str | Path) -> Image:
    """An x86-64 ELF's PT_LOAD segments (physical addresses) and entry; ImageError with one line if not."""
    return load_image(path, "x86_64")


def image_from_code(code: bytes, *, base: int = 0x10_0000, name: str = "<code>") -> Image:
    """An Image of raw machine code loaded and entered at ``base`` (host probes, tests)."""
    return Image(Path(name), "x86_64", base, (Segment(base, bytes(code), len(code)),), hashlib.sha256(code).hexdigest())


# ---- the backend -------------------------------------------------------------------------------------------
class _X86Vcpu(host.Vcpu):
    """A vCPU with the debug registers last set on it."""

    def __init__(self, index: int, fd: int, run: mmap.mmap) -> None:
        super().__init__(index, fd, run)
        self.dbg = X86DebugRegs()


class KvmX86Backend(host.VmLifecycle[_X86Vcpu]):
    """One x86-64 VM with ``cpus`` vCPUs on /dev/kvm (see the module docstring for the machine)."""

    def __init__(
        self,
        image: str | Path | Image,
        *,
        ram_size: int = 128 * MIB,
        console: ConsoleSink | None = None,
        kvm_path: str = host.KVM_PATH,
        cpus: int = 1,
    ) -> None:
        host.check_vcpu_count(cpus)
        img = image if isinstance(image, Image) else load_x86_image(image)
        if img.machine != "x86_64":
            raise ImageError(f"{img.path} is an image for {img.machine}, not x86-64")
        if not MIN_RAM <= ram_size <= MAX_RAM or ram_size % (4 * KIB):
            raise BackendError(
                f"RAM size must be a multiple of 4 KiB between {MIN_RAM // MIB} MiB and {MAX_RAM // GIB} GiB"
            )
        self.ram_size = ram_size
        self.tables = ram_size - RESERVED_TOP
        self._check_image(img)
        self.image = img
        self._xsave_size = 0  # 0: the host has no KVM_GET_XSAVE; KVM_GET_FPU it is
        self._set_up(cpus, console, kvm_path, _RUN_IMMEDIATE_EXIT)

    # ---- set-up ----------------------------------------------------------------------------------------
    def _check_image(self, img: Image) -> None:
        for seg in img.segments:
            if seg.addr < 0 or seg.addr + seg.memsize > self.tables:
                raise BackendError(
                    f"segment at {seg.addr:#x}+{seg.memsize:#x} lies outside guest RAM 0x0+{self.tables:#x} "
                    f"(the top {RESERVED_TOP // KIB} KiB of the {self.ram_size // MIB} MiB hold the page tables)"
                )
        if not 0 <= img.entry < self.tables:
            raise BackendError(f"entry point {img.entry:#x} lies outside guest RAM")

    def _create(self) -> None:
        ram = self._create_vm_with_ram(self.ram_size, 0)
        host.ioctl_ulong(self._vm, uapi.KVM_SET_TSS_ADDR, TSS_ADDR, what="KVM_SET_TSS_ADDR")
        ident = bytearray(_U64.pack(IDENTITY_MAP_ADDR))
        host.ioctl_out(self._vm, uapi.KVM_SET_IDENTITY_MAP_ADDR, ident, what="KVM_SET_IDENTITY_MAP_ADDR")
        size = host.ioctl_int(self._kvm, uapi.KVM_GET_VCPU_MMAP_SIZE, what="KVM_GET_VCPU_MMAP_SIZE")
        for index in range(self.cpus):
            fd = host.ioctl_int(self._vm, uapi.KVM_CREATE_VCPU, index, what=f"KVM_CREATE_VCPU {index}")
            self._fds.append(fd)
            run = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            self._vcpus.append(_X86Vcpu(index, fd, run))
        if host.ioctl_int(self._kvm, uapi.KVM_CHECK_EXTENSION, uapi.KVM_CAP_XSAVE, what="KVM_CHECK_EXTENSION") > 0:
            xsave2 = host.ioctl_int(self._vm, uapi.KVM_CHECK_EXTENSION, uapi.KVM_CAP_XSAVE2, what="KVM_CHECK_EXTENSION")
            self._xsave_size = max(_XSAVE_MIN, xsave2)
        cpuid = self._supported_cpuid()
        for v in self._vcpus:
            host.ioctl_out(v.fd, uapi.KVM_SET_CPUID2, bytearray(cpuid), what="KVM_SET_CPUID2")
        for seg in self.image.segments:
            ram[seg.addr : seg.addr + len(seg.data)] = seg.data  # the tail to memsize is already zero
        self._boot_structures()
        for v in self._vcpus:
            self._boot_state(v)

    def _boot_state(self, v: _X86Vcpu) -> None:
        """Long mode at the ELF entry (module docstring); rdi = the vCPU index, rsp 16 KiB lower per index."""
        sregs = self._get("sregs", v)
        code = {"base": 0, "limit": 0xFFFF_FFFF, "selector": GDT_CODE64, "type": 11, "present": 1, "dpl": 0}
        code.update({"db": 0, "s": 1, "l": 1, "g": 1, "avl": 0, "unusable": 0})
        data = dict(code, selector=GDT_DATA, type=3, db=1, l=0)
        for seg_name in uapi.SREGS_SEGMENTS[:6]:
            for key, value in (code if seg_name == "cs" else data).items():
                sregs[f"{seg_name}.{key}"] = value
        sregs.update({"gdt.base": self.tables, "gdt.limit": 3 * 8 - 1, "idt.base": 0, "idt.limit": 0})
        sregs["cr0"] = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG
        sregs["cr3"] = self.tables + 0x1000
        sregs["cr4"] = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT
        sregs["efer"] = EFER_LME | EFER_LMA
        self._set("sregs", sregs, v)
        rsp = self.tables - v.index * VCPU_STACK
        self._set("regs", {"rip": self.image.entry, "rsp": rsp, "rflags": 2, "rdi": v.index}, v)
        fpu = self._get("fpu", v)  # the architectural power-on control words, whatever the host's vCPU reset did
        fpu.update({"fcw": 0x37F, "mxcsr": 0x1F80})
        self._set("fpu", fpu, v)

    def _supported_cpuid(self) -> bytearray:
        """The host's supported CPUID as a struct kvm_cpuid2, for KVM_SET_CPUID2 unchanged (E2BIG means a
        bigger table is needed)."""
        nent = 128
        while True:
            buf = bytearray(_CPUID_HEADER.pack({"nent": nent}) + bytes(_CPUID_ENTRY_SIZE * nent))
            try:
                host.ioctl_out(self._kvm, uapi.KVM_GET_SUPPORTED_CPUID, buf, what="KVM_GET_SUPPORTED_CPUID")
                break
            except host.KvmIoctlError as e:
                if e.errno != errno.E2BIG or nent >= 4096:
                    raise
                nent *= 2
        return buf

    def _boot_structures(self) -> None:
        """GDT and identity-mapping page tables in the reserved top of RAM (module docstring)."""
        assert self._ram is not None
        ram, base = self._ram, self.tables
        ram[base : base + RESERVED_TOP] = bytes(RESERVED_TOP)
        _U64.pack_into(ram, base + GDT_CODE64, 0x00AF_9B00_0000_FFFF)  # P, DPL0, code exec/read, L=1, G=1
        _U64.pack_into(ram, base + GDT_DATA, 0x00CF_9300_0000_FFFF)  # P, DPL0, data read/write, D/B=1, G=1
        pml4, pdpt, pd = base + 0x1000, base + 0x2000, base + 0x3000
        _U64.pack_into(ram, pml4, pdpt | PTE_P | PTE_RW)
        for gib in range(IDENTITY_MAP // GIB):
            _U64.pack_into(ram, pdpt + 8 * gib, (pd + 0x1000 * gib) | PTE_P | PTE_RW)
        pages = IDENTITY_MAP // (2 * MIB)
        struct.pack_into(f"<{pages}Q", ram, pd, *[(i << 21) | PTE_P | PTE_RW | PTE_PS for i in range(pages)])
        assert pd + 8 * pages <= self.ram_size

    # ---- Backend: capabilities -------------------------------------------------------------------------
    def capabilities(self) -> Capabilities:
        host = probe_host()
        notes = ["one pool of 4 debug registers (DR0-DR3) shared by breakpoints and watchpoints"]
        if self.cpus > 1:
            notes.append(f"{self.cpus} vCPUs, all started at the ELF entry (no INIT/SIPI); rdi = the vCPU index")
        notes += host.notes()
        if not host.data_breakpoints:
            # a watchpoint that never fires is worse than none: with 0, gdb watches in software (by stepping)
            notes.append("hardware watchpoints: 0 reported; `set can-use-hw-watchpoints 0` makes gdb watch in software")
        return Capabilities(
            arch="x86_64",
            hw_breakpoints=4,
            hw_watchpoints=4 if host.data_breakpoints else 0,
            single_step=True,
            sw_breakpoints=True,
            guest_debug_flags=GUESTDBG_VALID_MASK_X86,
            vcpus=self.cpus,
            notes=tuple(notes),
        )

    def set_irq_line(self, level: bool, vcpu: int = 0) -> None:
        """x86-64 has no per-vCPU interrupt line without an in-kernel irqchip (capability irq_line off)."""
        self._cpu(vcpu)
        raise BackendError("the x86-64 backend has no interrupt line (no in-kernel irqchip or APIC is created)")

    # ---- Backend: memory ---------------------------------------------------------------------------------
    def _check_range(self, addr: int, size: int) -> None:
        if self._closed:
            raise BackendError("the VM is closed")
        if size < 0 or addr < 0 or addr + size > self.ram_size:
            raise GuestMemoryError(f"{addr:#x}+{size:#x} is outside guest memory")

    def read_memory(self, addr: int, size: int) -> bytes:
        self._check_range(addr, size)
        assert self._ram_view is not None
        return bytes(self._ram_view[addr : addr + size])

    def write_memory(self, addr: int, data: bytes) -> None:
        self._check_range(addr, len(data))
        assert self._ram_view is not None
        self._ram_view[addr : addr + len(data)] = data

    # ---- Backend: registers --------------------------------------------------------------------------------
    def _get(self, group: str, v: _X86Vcpu) -> dict[str, int]:
        if self._closed:
            raise BackendError("the VM is closed")
        if group == "fpu":
            return self._get_fpu(v)
        codec, request = (_REGS, uapi.KVM_GET_REGS) if group == "regs" else (_SREGS, uapi.KVM_GET_SREGS)
        buf = bytearray(codec.size)
        host.ioctl_out(v.fd, request, buf, what=f"KVM_GET_{group.upper()}")
        return codec.unpack(buf)

    def _set(self, group: str, values: dict[str, int], v: _X86Vcpu) -> None:
        if group == "fpu":
            self._set_fpu(values, v)
            return
        codec, request = (_REGS, uapi.KVM_SET_REGS) if group == "regs" else (_SREGS, uapi.KVM_SET_SREGS)
        host.ioctl_in(v.fd, request, codec.pack(values), what=f"KVM_SET_{group.upper()}")

    def _get_fpu(self, v: _X86Vcpu) -> dict[str, int]:
        """x87/SSE state in struct kvm_fpu's terms.  From KVM_GET_XSAVE where the host has it, because
        KVM_GET_FPU leaves mxcsr out (it reads as whatever the buffer held)."""
        if not self._xsave_size:
            buf = bytearray(_FPU.size)
            host.ioctl_out(v.fd, uapi.KVM_GET_FPU, buf, what="KVM_GET_FPU")
            return _FPU.unpack(buf)
        buf = bytearray(self._xsave_size)
        request = uapi.KVM_GET_XSAVE2 if self._xsave_size > _XSAVE_MIN else uapi.KVM_GET_XSAVE
        host.ioctl_out(v.fd, request, buf, what="KVM_GET_XSAVE")
        x = _XSTATE.unpack(buf)
        fpu = {f"fpr[{i}]": _u128(x, "fpstate.st_space", i) for i in range(8)}
        fpu.update({f"xmm[{i}]": _u128(x, "fpstate.xmm_space", i) for i in range(16)})
        fpu.update({"fcw": x["fpstate.cwd"], "fsw": x["fpstate.swd"], "ftwx": x["fpstate.twd"] & 0xFF})
        fpu.update({"last_opcode": x["fpstate.fop"], "last_ip": x["fpstate.rip"], "last_dp": x["fpstate.rdp"]})
        fpu["mxcsr"] = x["fpstate.mxcsr"]
        return fpu

    def _set_fpu(self, fpu: dict[str, int], v: _X86Vcpu) -> None:
        """Writes the kvm_fpu-shaped values back through KVM_SET_XSAVE (or KVM_SET_FPU), keeping the rest
        of the XSAVE image as KVM gave it; XSTATE_BV gets x87 and SSE so that the values are loaded."""
        if not self._xsave_size:
            host.ioctl_in(v.fd, uapi.KVM_SET_FPU, _FPU.pack(fpu), what="KVM_SET_FPU")
            return
        buf = bytearray(self._xsave_size)
        request = uapi.KVM_GET_XSAVE2 if self._xsave_size > _XSAVE_MIN else uapi.KVM_GET_XSAVE
        host.ioctl_out(v.fd, request, buf, what="KVM_GET_XSAVE")
        x = _XSTATE.unpack(buf)
        for i in range(8):
            _put_u128(x, "fpstate.st_space", i, fpu[f"fpr[{i}]"])
        for i in range(16):
            _put_u128(x, "fpstate.xmm_space", i, fpu[f"xmm[{i}]"])
        x.update({"fpstate.cwd": fpu["fcw"], "fpstate.swd": fpu["fsw"], "fpstate.fop": fpu["last_opcode"]})
        x["fpstate.twd"] = x["fpstate.twd"] & 0xFF00 | fpu["ftwx"]
        x.update({"fpstate.rip": fpu["last_ip"], "fpstate.rdp": fpu["last_dp"], "fpstate.mxcsr": fpu["mxcsr"]})
        x["xstate_hdr.xfeatures"] |= uapi.XFEATURE_MASK_FP | uapi.XFEATURE_MASK_SSE
        buf[: _XSTATE.size] = _XSTATE.pack(x)
        host.ioctl_in(v.fd, uapi.KVM_SET_XSAVE, bytes(buf), what="KVM_SET_XSAVE")

    @staticmethod
    def _from_regs(name: str, regs: dict[str, int]) -> int:
        return regs["rflags"] & _M32 if name == "eflags" else regs[name]

    @staticmethod
    def _from_sregs(name: str, sregs: dict[str, int]) -> int:
        if name in ("fs_base", "gs_base"):
            return sregs[f"{name[:2]}.base"]
        return sregs[f"{name}.selector"]

    @staticmethod
    def _from_fpu(name: str, fpu: dict[str, int]) -> int:
        if name.startswith("st"):
            return fpu[f"fpr[{name[2:]}]"] & _MASK80
        if name.startswith("xmm"):
            return fpu[f"xmm[{name[3:]}]"]
        if name == "ftag":
            return full_ftag(fpu["ftwx"], fpu["fsw"], [fpu[f"fpr[{i}]"] for i in range(8)])
        field, shift = {
            "fctrl": ("fcw", 0),
            "fstat": ("fsw", 0),
            "fop": ("last_opcode", 0),
            "fioff": ("last_ip", 0),
            "fiseg": ("last_ip", 32),
            "fooff": ("last_dp", 0),
            "foseg": ("last_dp", 32),
            "mxcsr": ("mxcsr", 0),
        }[name]
        return fpu[field] >> shift & _M32

    def translate(self, addr: int, vcpu: int = 0) -> int:
        """KVM_TRANSLATE: the vCPU's own page-table walk (CR3, paging mode)."""
        v = self._cpu(vcpu)
        if self._closed:
            raise BackendError("the VM is closed")
        buf = bytearray(_TRANSLATION.size)
        buf[:8] = (addr & (1 << 64) - 1).to_bytes(8, "little")
        host.ioctl_out(v.fd, uapi.KVM_TRANSLATE, buf, what="KVM_TRANSLATE")
        out = _TRANSLATION.unpack(buf)
        if not out["valid"]:
            raise GuestMemoryError(f"no translation for {addr:#x}: the guest's page tables map nothing there")
        return int(out["physical_address"])

    def get_regs(self, vcpu: int = 0) -> dict[str, int]:
        v = self._cpu(vcpu)
        regs, sregs, fpu = self._get("regs", v), self._get("sregs", v), self._get("fpu", v)
        out: dict[str, int] = {}
        for name in REG_NAMES:
            group = _GROUP[name]
            if group == "regs":
                out[name] = self._from_regs(name, regs)
            elif group == "sregs":
                out[name] = self._from_sregs(name, sregs)
            else:
                out[name] = self._from_fpu(name, fpu)
        return out

    def get_reg(self, name: str, vcpu: int = 0) -> int:
        v = self._cpu(vcpu)
        group = _GROUP.get(name)
        if group is None:
            raise BackendError(f"unknown register {name}")
        if group == "regs":
            return self._from_regs(name, self._get("regs", v))
        if group == "sregs":
            return self._from_sregs(name, self._get("sregs", v))
        return self._from_fpu(name, self._get("fpu", v))

    def set_regs(self, regs: dict[str, int], vcpu: int = 0) -> None:
        v = self._cpu(vcpu)
        for name, value in regs.items():
            if name not in _GROUP:
                raise BackendError(f"unknown register {name}")
            if not 0 <= value < 1 << REG_BITS[name] or value > _FIELD_MAX.get(name, value):
                raise BackendError(f"value {value:#x} out of range for {name}")
        groups = {_GROUP[name] for name in regs}
        if "regs" in groups:
            kr = self._get("regs", v)
            for name, value in regs.items():
                if _GROUP[name] == "regs":
                    kr["rflags" if name == "eflags" else name] = value
            self._set("regs", kr, v)
        if "sregs" in groups:
            ks = self._get("sregs", v)
            for name, value in regs.items():
                if _GROUP[name] == "sregs":
                    ks[f"{name[:2]}.base" if name.endswith("_base") else f"{name}.selector"] = value
            self._set("sregs", ks, v)
        if "fpu" in groups:
            kf = self._get("fpu", v)
            for name, value in regs.items():
                if _GROUP[name] == "fpu":
                    self._to_fpu(kf, name, value)
            self._set("fpu", kf, v)

    @staticmethod
    def _to_fpu(fpu: dict[str, int], name: str, value: int) -> None:
        if name.startswith("st"):
            key = f"fpr[{name[2:]}]"
            fpu[key] = fpu[key] & ~_MASK80 | value
        elif name.startswith("xmm"):
            fpu[f"xmm[{name[3:]}]"] = value
        elif name == "ftag":
            fpu["ftwx"] = abridged_ftag(value)
        elif name in ("fioff", "fiseg", "fooff", "foseg"):
            field = "last_ip" if name[1] == "i" else "last_dp"
            shift = 32 if name.endswith("seg") else 0
            fpu[field] = fpu[field] & ~(_M32 << shift) | value << shift
        else:
            fpu[{"fctrl": "fcw", "fstat": "fsw", "fop": "last_opcode", "mxcsr": "mxcsr"}[name]] = value

    # ---- Backend: guest debug ------------------------------------------------------------------------------
    def set_guest_debug(self, control: int, regs: DebugRegs | X86DebugRegs | None = None, vcpu: int = 0) -> None:
        """KVM_SET_GUEST_DEBUG of this one vCPU; ``regs`` None keeps the registers last set on it."""
        v = self._cpu(vcpu)
        if regs is not None and not isinstance(regs, X86DebugRegs):
            raise BackendError("an x86-64 vCPU takes x86 debug registers (X86DebugRegs)")
        bad = control & ~GUESTDBG_VALID_MASK_X86
        if bad or not 0 <= control < 1 << 32:
            raise BackendError(f"invalid guest-debug control bits {bad:#x} (EINVAL)")
        dbg = v.dbg if regs is None else regs
        if len(dbg.debugreg) != 8 or any(not 0 <= v < 1 << 64 for v in dbg.debugreg):
            raise BackendError("debugreg must hold 8 values of 64 bits")
        values = {"control": control, **{f"arch.debugreg[{i}]": v for i, v in enumerate(dbg.debugreg)}}
        if self._closed:
            raise BackendError("the VM is closed")
        host.ioctl_in(v.fd, uapi.KVM_SET_GUEST_DEBUG, _GUEST_DEBUG.pack(values), what="KVM_SET_GUEST_DEBUG")
        v.dbg = dbg.copy()
        v.control = control if control & GUESTDBG_ENABLE else 0

    # ---- Backend: run ------------------------------------------------------------------------------------
    def _run_until_exit(self, v: _X86Vcpu) -> Exit:
        run = v.run
        while True:
            try:
                _kvm_run(v.fd)
            except InterruptedError:
                return Exit(ExitReason.INTERRUPTED)
            except OSError as e:
                raise BackendError(f"KVM_RUN: {os.strerror(e.errno) if e.errno else e}") from None
            reason = _U32.unpack_from(run, _RUN_EXIT_REASON)[0]
            if reason == uapi.KVM_EXIT_DEBUG:
                return self._debug_exit(run, v)
            if reason == uapi.KVM_EXIT_IO:
                ex = self._port_io(run, v)
                if ex is not None:
                    return ex
            elif reason == uapi.KVM_EXIT_MMIO:
                if not run[_MMIO_IS_WRITE]:
                    n = _U32.unpack_from(run, _MMIO_LEN)[0]
                    run[_MMIO_DATA : _MMIO_DATA + n] = b"\xff" * n
                elif v.control & GUESTDBG_SINGLESTEP:
                    return self._finish_step_after_output(v)
            elif reason == uapi.KVM_EXIT_HLT:
                return Exit(ExitReason.SHUTDOWN, detail="guest halted")
            elif reason == uapi.KVM_EXIT_INTR:
                return Exit(ExitReason.INTERRUPTED)
            else:
                return self._fatal_exit(reason, run, v)

    def _port_io(self, run: mmap.mmap, v: _X86Vcpu) -> Exit | None:
        """Serial output and the exit port; other ports read as all ones.  None: keep running."""
        io_exit = _IO.unpack(run, _RUN_EXIT)
        off, n = io_exit["data_offset"], io_exit["size"] * io_exit["count"]
        if io_exit["direction"] == uapi.KVM_EXIT_IO_IN:
            run[off : off + n] = b"\xff" * n
            return None
        port = io_exit["port"]
        if port == COM1_DATA and self._console is not None:
            with self._console_lock:
                self._console(bytes(run[off : off + n]))
        elif port == EXIT_PORT:
            status = int.from_bytes(run[off : off + io_exit["size"]], "little")
            self._complete_pending_io(v)
            return Exit(ExitReason.SHUTDOWN, status=status, detail=f"guest wrote {status:#x} to port {EXIT_PORT:#x}")
        if v.control & GUESTDBG_SINGLESTEP:
            return self._finish_step_after_output(v)
        return None

    def _finish_step_after_output(self, v: _X86Vcpu) -> Exit:
        """Single-stepping an output instruction (out, MMIO store) that exited to us.  KVM completes it on
        the next KVM_RUN and then reports the step; some hosts (PVM) complete it and run on, losing the
        step.  Completing it here with immediate_exit tells the two apart: a DEBUG exit is KVM's own
        report, EINTR means the step was lost, and the backend reports it as KVM would (DR6.BS, pc = the
        next instruction; DR7 as KVM loads it: the USE_HW_BP debugreg[7], else the guest's reset 0x400)."""
        run = v.run
        run[_RUN_IMMEDIATE_EXIT] = 1
        try:
            _kvm_run(v.fd)
        except InterruptedError:
            rip = self._get("regs", v)["rip"]
            dr7 = v.dbg.debugreg[7] if v.control & GUESTDBG_USE_HW else DR7_RESET
            return Exit(
                ExitReason.DEBUG,
                exception=X86_DB_VECTOR,
                pc=rip,
                dr6=DR6_STEP,
                dr7=dr7,
                detail="single step after output completed by the backend (the host loses it)",
            )
        except OSError as e:
            raise BackendError(f"KVM_RUN (completing output): {os.strerror(e.errno) if e.errno else e}") from None
        finally:
            run[_RUN_IMMEDIATE_EXIT] = 0
        reason = _U32.unpack_from(run, _RUN_EXIT_REASON)[0]
        if reason == uapi.KVM_EXIT_DEBUG:
            return self._debug_exit(run, v)
        return self._fatal_exit(reason, run, v)

    def _debug_exit(self, run: bytearray | memoryview | mmap.mmap, v: _X86Vcpu) -> Exit:
        """KVM_EXIT_DEBUG as an Exit.  Some hosts (PVM) never write dr7 on #DB exits, leaving stale bytes of an
        earlier exit in the union: DR7 without its reserved-1 bit 10 is replaced by the DR7 we pushed."""
        d = _DEBUG_EXIT.unpack(run, _RUN_EXIT)
        dr7 = d["dr7"]
        if not dr7 & 0x400 or dr7 >> 32:
            dr7 = v.dbg.debugreg[7] if v.control & GUESTDBG_USE_HW else DR7_RESET
        return Exit(ExitReason.DEBUG, exception=d["exception"], pc=d["pc"], dr6=d["dr6"], dr7=dr7)

    def _complete_pending_io(self, v: _X86Vcpu) -> None:
        """KVM finishes an exited I/O instruction (RIP past it) only on the next KVM_RUN: do that now with
        immediate_exit, so the registers gdb reads after this stop are final (kvm-hw-debug pitfall 3)."""
        v.run[_RUN_IMMEDIATE_EXIT] = 1
        try:
            _kvm_run(v.fd)
        except InterruptedError:
            pass
        except OSError as e:
            raise BackendError(f"KVM_RUN (completing I/O): {os.strerror(e.errno) if e.errno else e}") from None

    def _fatal_exit(self, reason: int, run: mmap.mmap, v: _X86Vcpu) -> Exit:
        rip = self._get("regs", v)["rip"]
        if reason == uapi.KVM_EXIT_INTERNAL_ERROR:
            internal = _INTERNAL.unpack(run, _RUN_EXIT)
            if internal["suberror"] == uapi.KVM_INTERNAL_ERROR_EMULATION:
                insn = self._emulation_failure_insn(run)
                if insn[:1] == b"\xcc":
                    if v.control & GUESTDBG_USE_SW_BP:
                        return Exit(
                            ExitReason.DEBUG,
                            exception=X86_BP_VECTOR,
                            pc=rip,
                            detail="int3 reported by KVM's instruction emulator (the host does not intercept #BP)",
                        )
                    return Exit(
                        ExitReason.FAULT, signal=SIGILL, detail=f"int3 at {rip:#x} with software breakpoints off"
                    )
                return Exit(
                    ExitReason.FAULT,
                    signal=SIGILL,
                    detail=f"KVM cannot emulate the instruction at {rip:#x} ({insn.hex()})",
                )
            return Exit(
                ExitReason.FAULT, signal=SIGILL, detail=f"KVM internal error {internal['suberror']} at {rip:#x}"
            )
        if reason == uapi.KVM_EXIT_SHUTDOWN:
            return Exit(ExitReason.FAULT, signal=SIGSEGV, detail=f"triple fault (KVM_EXIT_SHUTDOWN) at {rip:#x}")
        if reason == uapi.KVM_EXIT_FAIL_ENTRY:
            why = _FAIL_ENTRY.unpack(run, _RUN_EXIT)["hardware_entry_failure_reason"]
            return Exit(
                ExitReason.FAULT, signal=SIGILL, detail=f"VM entry failed (hardware reason {why:#x}) at {rip:#x}"
            )
        if reason == uapi.KVM_EXIT_SYSTEM_EVENT:
            kind = _U32.unpack_from(run, _SYSTEM_EVENT_TYPE)[0]
            return Exit(ExitReason.SHUTDOWN, detail=f"system event {kind}")
        return Exit(ExitReason.FAULT, signal=SIGBUS, detail=f"unhandled KVM exit reason {reason} at {rip:#x}")

    @staticmethod
    def _emulation_failure_insn(run: mmap.mmap) -> bytes:
        flags = _U64.unpack_from(run, _EMU_FLAGS)[0]
        if not flags & uapi.KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES:
            return b""
        size = min(run[_EMU_INSN_SIZE], 15)
        return bytes(run[_EMU_INSN_BYTES : _EMU_INSN_BYTES + size])

    def __enter__(self) -> KvmX86Backend:
        return self


def _kvm_run(vcpu_fd: int) -> None:
    fcntl.ioctl(vcpu_fd, uapi.KVM_RUN, 0)


# ---- what this host's KVM does (probed once per process) ----------------------------------------------
@dataclass(frozen=True)
class HostProfile:
    """Behaviour of this host's KVM that the architecture alone does not settle, found by running tiny
    guests.  Nested and software hypervisors (PVM) differ from bare-metal VMX/SVM here."""

    pvm: bool  # the kvm_pvm module is loaded (a software, page-table based KVM backend)
    data_breakpoints: bool  # a DR7 write breakpoint traps (KVM_EXIT_DEBUG with DR6.Bn)
    general_detect: bool  # DR7.GD makes `mov %dr0` exit with DR6.BD
    int3_native: bool  # int3 with USE_SW_BP exits as #BP without the emulator workaround
    sse: bool  # the guest can execute SSE instructions (xorps)
    findings: tuple[tuple[str, str], ...] = ()  # (probe, what its guest did)

    def finding(self, probe: str) -> str:
        return dict(self.findings).get(probe, "not probed")

    def notes(self) -> list[str]:
        out = []
        if self.pvm:
            out.append("host KVM is PVM (kvm_pvm module)")
        if not self.data_breakpoints:
            out.append("this host's KVM does not deliver data breakpoints (probed): watchpoints never trigger")
        if not self.general_detect:
            out.append("this host's KVM ignores DR7.GD (probed)")
        if not self.int3_native:
            out.append("int3 reaches us as an emulation failure; reported as the usual #BP exit")
        if not self.sse:
            out.append(
                "guest SSE/x87 instructions fail on this host (probed): it runs CPL-0 guest code in KVM's "
                "instruction emulator, which cannot execute them"
            )
        return out


# mov %rax, 0x200000 (absolute, 8 bytes); hlt
_PROBE_DATA_BP = bytes.fromhex("48890425 00002000 f4".replace(" ", ""))
_PROBE_GD = bytes.fromhex("0f21c0 f4".replace(" ", ""))  # mov %dr0, %rax; hlt
_PROBE_INT3 = bytes.fromhex("cc f4".replace(" ", ""))
_PROBE_SSE = bytes.fromhex("0f57c0 f4".replace(" ", ""))  # xorps %xmm0, %xmm0; hlt


@cache
def probe_host() -> HostProfile:
    """Run four tiny guests to learn what this host delivers (cached: a few milliseconds, once)."""
    pvm = Path("/sys/module/kvm_pvm").exists()

    def first_exit(code: bytes, control: int, debugreg: list[int]) -> Exit:
        with KvmX86Backend(image_from_code(code, name="<probe>"), ram_size=MIN_RAM) as vm:
            vm.set_guest_debug(control, X86DebugRegs(debugreg))
            return vm.run()

    hw = GUESTDBG_ENABLE | GUESTDBG_USE_HW
    data = first_exit(_PROBE_DATA_BP, hw, [0x20_0000, 0, 0, 0, 0, 0, 0, 0x400 | 0b10 | 0b1101 << 16])
    gd = first_exit(_PROBE_GD, hw, [0] * 7 + [0x400 | 1 << 13])
    int3 = first_exit(_PROBE_INT3, GUESTDBG_ENABLE | GUESTDBG_USE_SW_BP, [0] * 8)
    sse = first_exit(_PROBE_SSE, 0, [0] * 8)
    return HostProfile(
        pvm=pvm,
        data_breakpoints=data.reason is ExitReason.DEBUG and bool(data.dr6 & 1),
        general_detect=gd.reason is ExitReason.DEBUG and bool(gd.dr6 & 1 << 13),
        int3_native=int3.reason is ExitReason.DEBUG and not int3.detail,
        sse=sse.reason is ExitReason.SHUTDOWN and sse.detail == "guest halted",
        findings=tuple(
            (name, f"{ex.reason.value}: {ex.detail}" if ex.detail else f"{ex.reason.value} at {ex.pc:#x}")
            for name, ex in (("data breakpoint", data), ("DR7.GD", gd), ("int3", int3), ("SSE", sse))
        ),
    )
