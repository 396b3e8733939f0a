"""arm64 guests on this host's /dev/kvm (an aarch64 host), behind the backends.api.Backend interface.

    KvmArm64Backend(image, *, ram_size=128 << 20, console=None, cpus=1)

``image`` is a path to an aarch64 ELF (read with backends.elf.load_image, which refuses any other
machine) or a backends.elf.Image whose machine is "aarch64"; ``console`` receives the bytes the guest
writes to the UART data register.  Bad images, bad sizes and hosts without a usable KVM raise
ImageError / BackendError with a one-line message before any VM exists.

The machine (``cpus`` vCPUs, 1..8, no interrupt controller), laid out like QEMU's ``virt`` and backends.sim:
- RAM: ``ram_size`` bytes at guest physical 0x40000000, one mmap-backed memory slot; the VM has the
  default IPA size.  Guest code runs with the MMU off, so read_memory/write_memory take the addresses
  the guest uses.  Memory is written with 32-bit stores, never one short memcpy (the emulated arm64
  host can otherwise run stale code: arm64-kvm-host README, pitfall 6).
- Every vCPU is KVM's preferred target with PSCI 0.2.  vCPU 0 is reset to EL1h with DAIF masked (PSTATE
  0x3c5), PC at the ELF entry.  vCPUs 1..N-1 are created powered off (KVM_ARM_VCPU_POWER_OFF): the guest
  starts them with PSCI CPU_ON (HVC), which KVM handles in the kernel (target = MPIDR_EL1, whose Aff0 KVM
  sets to the vCPU index); until then they hold KVM's reset state and their KVM_RUN sleeps in the kernel,
  so run() of such a vCPU returns only when kicked (INTERRUPTED) or after CPU_ON, at a debug event.
- Each vCPU has its own fd, kvm_run mapping and KVM_SET_GUEST_DEBUG state: set_guest_debug(..., vcpu)
  programs only that vCPU (a debugger applies its points to every vCPU itself), and run(vcpu) is called
  from one thread per vCPU; kick(vcpu) interrupts only that vCPU (backends.kvm.host).  The register and
  guest-debug calls of a vCPU block while its run() is in progress (KVM's vcpu mutex): kick it first.
  Guest debug state set on a powered-off vCPU survives the reset CPU_ON makes.
- MMIO: a write to the UART data register (0x09000000) goes to ``console``; other MMIO writes are
  ignored and reads return zeros.  Every MMIO exit is completed by the next KVM_RUN before run()
  returns, so registers read or written after any stop are final (pitfall 3).
- PSCI SYSTEM_OFF / SYSTEM_RESET (KVM_EXIT_SYSTEM_EVENT) is Exit SHUTDOWN of the vCPU that made the call;
  KVM stops the other vCPUs (their KVM_RUN sleeps, as a powered-off vCPU's does, until kicked).

Registers (backends.sim's names): x0..x30, sp, pc, cpsr (64-bit PSTATE), v0..v31 (128-bit), fpsr, fpcr,
each through KVM_GET/SET_ONE_REG (arm64 has no KVM_GET_REGS).  ``sp`` is the stack pointer PSTATE
selects: SP_EL1 in EL1h, SP_EL0 otherwise.

Debug exits are KVM's: Exit(DEBUG, esr = hsr | hsr_high << 32 (when run->flags says hsr_high is valid),
far = run->debug.arch.far, which KVM writes only on watchpoint exits).
"""

from __future__ import annotations

import ctypes
import fcntl
import mmap
import os
import struct
from pathlib import Path

from backends.api import (
    GUESTDBG_ENABLE,
    GUESTDBG_VALID_MASK,
    MAX_DBG_REGS,
    BackendError,
    Capabilities,
    ConsoleSink,
    DebugRegs,
    Exit,
    ExitReason,
    GuestMemoryError,
    X86DebugRegs,
)
from backends.arm64_mmu import MMU_REGS, MmuRegs, translate
from backends.elf import Image, ImageError, load_image
from backends.guestdebug import debug_reg_names
from backends.kvm import host, uapi
from backends.kvm.layout import Codec, offsetof, sizeof

SIGILL, SIGBUS = 4, 7
KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30
RAM_BASE = 0x4000_0000
MIN_RAM = 64 * KIB
MAX_RAM = 4 * GIB
UART_BASE = 0x0900_0000
UART_SIZE = 0x1000
PSTATE_RESET = 0x3C5  # EL1h, DAIF masked

# ---- ONE_REG ids (arch/arm64/include/uapi/asm/kvm.h; kvm-hw-debug.md 1.4) -------------------------------
KVM_REG_ARM64 = 0x6000_0000_0000_0000
KVM_REG_SIZE_U32 = 0x0020 << 48
KVM_REG_SIZE_U64 = 0x0030 << 48
KVM_REG_SIZE_U128 = 0x0040 << 48
KVM_REG_ARM_CORE = 0x0010 << 16
KVM_REG_ARM64_SYSREG = 0x0013 << 16
_SIZE_BITS = {KVM_REG_SIZE_U32: 32, KVM_REG_SIZE_U64: 64, KVM_REG_SIZE_U128: 128}


def core_reg_id(field: str, size: int = KVM_REG_SIZE_U64) -> int:
    """The ONE_REG id of a struct kvm_regs member ("regs.pc", "fp_regs.vregs[3]"): its offset in 32-bit words."""
    return KVM_REG_ARM64 | size | KVM_REG_ARM_CORE | offsetof(uapi.kvm_regs_arm64, field) // 4


def sysreg_id(op0: int, op1: int, crn: int, crm: int, op2: int) -> int:
    return KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM64_SYSREG | op0 << 14 | op1 << 11 | crn << 7 | crm << 3 | op2


ID_AA64DFR0_EL1 = sysreg_id(3, 0, 0, 5, 0)
SP_EL0_ID = core_reg_id("regs.sp")
SP_EL1_ID = core_reg_id("sp_el1")
PSTATE_ID = core_reg_id("regs.pstate")

REG_IDS: dict[str, int] = {f"x{i}": core_reg_id(f"regs.regs[{i}]") for i in range(31)}
REG_IDS["pc"] = core_reg_id("regs.pc")
REG_IDS["cpsr"] = PSTATE_ID
REG_IDS.update({f"v{i}": core_reg_id(f"fp_regs.vregs[{i}]", KVM_REG_SIZE_U128) for i in range(32)})
REG_IDS["fpsr"] = core_reg_id("fp_regs.fpsr", KVM_REG_SIZE_U32)
REG_IDS["fpcr"] = core_reg_id("fp_regs.fpcr", KVM_REG_SIZE_U32)
REG_NAMES: tuple[str, ...] = (
    *(f"x{i}" for i in range(31)),
    "sp",
    "pc",
    "cpsr",
    *(f"v{i}" for i in range(32)),
    "fpsr",
    "fpcr",
)
REG_BITS: dict[str, int] = {n: (128 if n.startswith("v") else 32 if n in ("fpsr", "fpcr") else 64) for n in REG_NAMES}
# Registers outside gdb's table: the EL1 state a VMM writes to deliver an exception to the guest (there is
# no injection ioctl on arm64), and the debug registers KVM keeps for the guest (vcpu_debug_state, what
# its trapped MRS reads: never the host's values).
EXTRA_IDS: dict[str, int] = {
    "esr_el1": sysreg_id(3, 0, 5, 2, 0),
    "far_el1": sysreg_id(3, 0, 6, 0, 0),
    "vbar_el1": sysreg_id(3, 0, 12, 0, 0),
    "contextidr_el1": sysreg_id(3, 0, 13, 0, 1),
    "cpacr_el1": sysreg_id(3, 0, 1, 0, 2),
    "sctlr_el1": sysreg_id(3, 0, 1, 0, 0),
    "tcr_el1": sysreg_id(3, 0, 2, 0, 2),
    "ttbr0_el1": sysreg_id(3, 0, 2, 0, 0),
    "ttbr1_el1": sysreg_id(3, 0, 2, 0, 1),
    "mair_el1": sysreg_id(3, 0, 10, 2, 0),
    "elr_el1": core_reg_id("elr_el1"),
    "spsr_el1": core_reg_id("spsr[0]"),
    "sp_el0": SP_EL0_ID,
    "sp_el1": SP_EL1_ID,
    **{name: sysreg_id(*key) for name, key in debug_reg_names().items()},
}

# ---- uAPI views ---------------------------------------------------------------------------------------------
_ONE_REG = struct.Struct("<QQ")  # struct kvm_one_reg: id, addr
assert _ONE_REG.size == sizeof(uapi.kvm_one_reg)
_VCPU_INIT = Codec(uapi.kvm_vcpu_init)
_GUEST_DEBUG = Codec(uapi.kvm_guest_debug_arm64)
_IRQ_LEVEL = Codec(uapi.kvm_irq_level)
_DEBUG_EXIT = Codec(uapi.kvm_debug_exit_arch_arm64)
_RUN = uapi.kvm_run_arm64
_RUN_IMMEDIATE_EXIT = offsetof(_RUN, "immediate_exit")
_RUN_EXIT_REASON = offsetof(_RUN, "exit_reason")
_RUN_FLAGS = offsetof(_RUN, "flags")
_RUN_EXIT = offsetof(_RUN, "exit")
_MMIO_ADDR = offsetof(_RUN, "exit.mmio.phys_addr")
_MMIO_DATA = offsetof(_RUN, "exit.mmio.data")
_MMIO_LEN = offsetof(_RUN, "exit.mmio.len")
_MMIO_IS_WRITE = offsetof(_RUN, "exit.mmio.is_write")
_SYSTEM_EVENT_TYPE = offsetof(_RUN, "exit.system_event.type")
_INTERNAL_SUBERROR = offsetof(_RUN, "exit.internal.suberror")
_FAIL_ENTRY_REASON = offsetof(_RUN, "exit.fail_entry.hardware_entry_failure_reason")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_SYSTEM_EVENTS = {
    uapi.KVM_SYSTEM_EVENT_SHUTDOWN: "PSCI SYSTEM_OFF",
    uapi.KVM_SYSTEM_EVENT_RESET: "PSCI SYSTEM_RESET",
    uapi.KVM_SYSTEM_EVENT_CRASH: "guest crash (system event)",
}


def uses_sp_el1(pstate: int) -> bool:
    """PSTATE.M selects the stack pointer: EL1h (0b0101) uses SP_EL1; EL1t and EL0t use SP_EL0."""
    return pstate & 0xF == 0b0101


class _Arm64Vcpu(host.Vcpu):
    """A vCPU with the debug registers last set on it and its own ONE_REG buffer (vCPUs are read and run
    from different threads)."""

    def __init__(self, index: int, fd: int, run: mmap.mmap) -> None:
        super().__init__(index, fd, run)
        self.dbg = DebugRegs()
        self.regbuf = ctypes.create_string_buffer(16)  # ONE_REG values land here (up to 128 bits)
        self.regbuf_addr = ctypes.addressof(self.regbuf)


def store_words(view: memoryview | mmap.mmap, offset: int, data: bytes) -> None:
    """Copy ``data`` into guest RAM with 32-bit stores (bytes at unaligned edges): never one short memcpy,
    which the emulated arm64 host can leave invisible to the guest's instruction fetch."""
    n = len(data)
    head = min(-offset % 4, n)
    for i in range(head):
        view[offset + i] = data[i]
    words = (n - head) // 4
    if words:
        struct.pack_into(f"<{words}I", view, offset + head, *struct.unpack_from(f"<{words}I", data, head))
    for i in range(head + 4 * words, n):
        view[offset + i] = data[i]


class KvmArm64Backend(host.VmLifecycle[_Arm64Vcpu]):
    """One arm64 VM with ``cpus`` vCPUs on /dev/kvm (see the module docstring for the machine)."""

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
        img = image if isinstance(image, Image) else load_image(image)
        if img.machine != "aarch64":
            raise ImageError(f"{img.path} is an image for {img.machine}, not aarch64")
        if not MIN_RAM <= ram_size <= MAX_RAM or ram_size % (4 * KIB):
            raise BackendError(f"RAM size must be a multiple of 4 KiB between 64 KiB and {MAX_RAM // GIB} GiB")
        self.ram_base, self.ram_size = RAM_BASE, ram_size
        for seg in img.segments:
            if seg.addr < RAM_BASE or seg.addr + seg.memsize > RAM_BASE + ram_size:
                raise BackendError(
                    f"segment at {seg.addr:#x}+{seg.memsize:#x} lies outside guest RAM {RAM_BASE:#x}+{ram_size:#x}"
                )
        if not RAM_BASE <= img.entry < RAM_BASE + ram_size:
            raise BackendError(f"entry point {img.entry:#x} lies outside guest RAM")
        self.image = img
        self._set_up(cpus, console, kvm_path, _RUN_IMMEDIATE_EXIT)

    # ---- set-up ----------------------------------------------------------------------------------------
    def _create(self) -> None:
        ram = self._create_vm_with_ram(self.ram_size, RAM_BASE)
        size = host.ioctl_int(self._kvm, uapi.KVM_GET_VCPU_MMAP_SIZE, what="KVM_GET_VCPU_MMAP_SIZE")
        init = bytearray(_VCPU_INIT.size)
        host.ioctl_out(self._vm, uapi.KVM_ARM_PREFERRED_TARGET, init, what="KVM_ARM_PREFERRED_TARGET")
        preferred = _VCPU_INIT.unpack(init)
        self.target = preferred["target"]
        for index in range(self.cpus):  # every vCPU exists before any runs
            fd = host.ioctl_int(self._vm, uapi.KVM_CREATE_VCPU, index, what=f"KVM_CREATE_VCPU {index}")
            self._fds.append(fd)
            run = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            self._vcpus.append(_Arm64Vcpu(index, fd, run))
            values = dict(preferred)
            values["features[0]"] |= 1 << uapi.KVM_ARM_VCPU_PSCI_0_2
            if index:  # secondaries wait for the guest's PSCI CPU_ON
                values["features[0]"] |= 1 << uapi.KVM_ARM_VCPU_POWER_OFF
            host.ioctl_in(fd, uapi.KVM_ARM_VCPU_INIT, _VCPU_INIT.pack(values), what=f"KVM_ARM_VCPU_INIT {index}")
        for seg in self.image.segments:  # the tail to memsize is already zero
            store_words(ram, seg.addr - RAM_BASE, seg.data)
        boot = self._vcpus[0]
        self._set_one(boot, REG_IDS["pc"], self.image.entry, 64)
        self._set_one(boot, PSTATE_ID, PSTATE_RESET, 64)

    def _check_extension(self, cap: int) -> int:
        return host.ioctl_int(self._vm, uapi.KVM_CHECK_EXTENSION, cap, what="KVM_CHECK_EXTENSION")

    # ---- Backend: capabilities -------------------------------------------------------------------------
    def capabilities(self) -> Capabilities:
        """Breakpoint and watchpoint counts are KVM_CHECK_EXTENSION's answers (BRPs+1, WRPs+1 of the host)."""
        bps = self._check_extension(uapi.KVM_CAP_GUEST_DEBUG_HW_BPS)
        wps = self._check_extension(uapi.KVM_CAP_GUEST_DEBUG_HW_WPS)
        mask = self._check_extension(uapi.KVM_CAP_SET_GUEST_DEBUG2)
        notes = [
            f"KVM arm64 (preferred target {self.target}): KVM_CAP_GUEST_DEBUG_HW_BPS={bps}, HW_WPS={wps}",
            "watchpoint FAR: as this host's CPU reports it",
        ]
        if self.cpus > 1:
            notes.append(f"{self.cpus} vCPUs: 1..{self.cpus - 1} start powered off until the guest's PSCI CPU_ON")
        return Capabilities(
            arch="aarch64",
            hw_breakpoints=bps,
            hw_watchpoints=wps,
            guest_debug_flags=mask if mask > 0 else GUESTDBG_VALID_MASK,
            vcpus=self.cpus,
            debug_id=self.id_aa64dfr0(),
            far_policy="this host CPU's",
            irq_line=True,
            notes=tuple(notes),
        )

    def id_aa64dfr0(self) -> int:
        """ID_AA64DFR0_EL1 as the guest reads it (KVM_GET_ONE_REG): BRPs/WRPs fields hold count - 1."""
        return self._get_one(self._vcpus[0], ID_AA64DFR0_EL1, 64)

    # ---- Backend: memory ---------------------------------------------------------------------------------
    def _check_range(self, addr: int, size: int) -> None:
        if self._closed:
            raise BackendError("the VM is closed")
        if size < 0 or addr < RAM_BASE or addr + size > RAM_BASE + self.ram_size:
            raise GuestMemoryError(f"{addr:#x}+{size:#x} is outside guest memory")

    def read_memory(self, addr: int, size: int) -> bytes:
        self._check_range(addr, size)
        assert self._ram_view is not None
        off = addr - RAM_BASE
        return bytes(self._ram_view[off : off + size])

    def write_memory(self, addr: int, data: bytes) -> None:
        self._check_range(addr, len(data))
        assert self._ram_view is not None
        store_words(self._ram_view, addr - RAM_BASE, bytes(data))

    # ---- Backend: registers --------------------------------------------------------------------------------
    def _get_one(self, v: _Arm64Vcpu, reg_id: int, bits: int) -> int:
        if self._closed:
            raise BackendError("the VM is closed")
        request = _ONE_REG.pack(reg_id, v.regbuf_addr)
        host.ioctl_in(v.fd, uapi.KVM_GET_ONE_REG, request, what=f"KVM_GET_ONE_REG {reg_id:#x}")
        return int.from_bytes(v.regbuf.raw[: bits // 8], "little")

    def _set_one(self, v: _Arm64Vcpu, reg_id: int, value: int, bits: int) -> None:
        if self._closed:
            raise BackendError("the VM is closed")
        ctypes.memmove(v.regbuf, value.to_bytes(bits // 8, "little"), bits // 8)
        request = _ONE_REG.pack(reg_id, v.regbuf_addr)
        host.ioctl_in(v.fd, uapi.KVM_SET_ONE_REG, request, what=f"KVM_SET_ONE_REG {reg_id:#x}")

    def _sp_id(self, v: _Arm64Vcpu, pstate: int | None = None) -> int:
        if pstate is None:
            pstate = self._get_one(v, PSTATE_ID, 64)
        return SP_EL1_ID if uses_sp_el1(pstate) else SP_EL0_ID

    def translate(self, addr: int, vcpu: int = 0) -> int:
        """arm64 KVM has no KVM_TRANSLATE: the guest's stage 1 tables are walked here (arm64_mmu)."""
        v = self._cpu(vcpu)
        sctlr = self._get_one(v, EXTRA_IDS["sctlr_el1"], 64)
        if not sctlr & 1:
            return addr
        regs = MmuRegs(sctlr, *(self._get_one(v, EXTRA_IDS[n], 64) for n in MMU_REGS[1:]))
        return translate(addr, regs, self.read_memory)

    def get_regs(self, vcpu: int = 0) -> dict[str, int]:
        v = self._cpu(vcpu)
        out: dict[str, int] = {}
        for name in REG_NAMES:
            if name == "sp":
                continue
            out[name] = self._get_one(v, REG_IDS[name], REG_BITS[name])
        out["sp"] = self._get_one(v, self._sp_id(v, out["cpsr"]), 64)
        return {name: out[name] for name in REG_NAMES}

    def get_reg(self, name: str, vcpu: int = 0) -> int:
        v = self._cpu(vcpu)
        if name == "sp":
            return self._get_one(v, self._sp_id(v), 64)
        reg_id = REG_IDS.get(name)
        if reg_id is None:
            if name in EXTRA_IDS:
                return self._get_one(v, EXTRA_IDS[name], 64)
            raise BackendError(f"unknown register {name}")
        return self._get_one(v, reg_id, REG_BITS[name])

    def set_regs(self, regs: dict[str, int], vcpu: int = 0) -> None:
        """PSTATE is written first, so that ``sp`` lands in the stack pointer of the new mode."""
        v = self._cpu(vcpu)
        for name, value in regs.items():
            if name not in REG_BITS and name not in EXTRA_IDS:
                raise BackendError(f"unknown register {name}")
            if not 0 <= value < 1 << REG_BITS.get(name, 64):
                raise BackendError(f"value {value:#x} out of range for {name}")
        if "cpsr" in regs:
            self._set_one(v, PSTATE_ID, regs["cpsr"], 64)
        for name, value in regs.items():
            if name not in ("cpsr", "sp"):
                self._set_one(v, REG_IDS.get(name) or EXTRA_IDS[name], value, REG_BITS.get(name, 64))
        if "sp" in regs:
            self._set_one(v, self._sp_id(v, regs.get("cpsr")), regs["sp"], 64)

    # ---- Backend: guest debug ------------------------------------------------------------------------------
    def set_guest_debug(self, control: int, regs: DebugRegs | X86DebugRegs | None = None, vcpu: int = 0) -> None:
        """KVM_SET_GUEST_DEBUG of this one vCPU; KVM itself refuses unknown control bits (EINVAL, a BackendError).
        ``regs`` None keeps the registers last set on this vCPU."""
        v = self._cpu(vcpu)
        if regs is not None and not isinstance(regs, DebugRegs):
            raise BackendError("an arm64 vCPU takes arm64 debug registers (DebugRegs)")
        if not 0 <= control < 1 << 32:
            raise BackendError(f"invalid guest-debug control {control:#x} (EINVAL)")
        dbg = v.dbg if regs is None else regs
        values = {"control": control}
        for field, array in (("dbg_bcr", dbg.bcr), ("dbg_bvr", dbg.bvr), ("dbg_wcr", dbg.wcr), ("dbg_wvr", dbg.wvr)):
            if len(array) != MAX_DBG_REGS or any(not 0 <= v < 1 << 64 for v in array):
                raise BackendError(f"{field} must hold {MAX_DBG_REGS} values of 64 bits")
            values.update({f"arch.{field}[{i}]": v for i, v in enumerate(array)})
        if self._closed:
            raise BackendError("the VM is closed")
        host.ioctl_in(v.fd, uapi.KVM_SET_GUEST_DEBUG_ARM64, _GUEST_DEBUG.pack(values), what="KVM_SET_GUEST_DEBUG")
        v.dbg = dbg.copy()
        v.control = control if control & GUESTDBG_ENABLE else 0

    def set_irq_line(self, level: bool, vcpu: int = 0) -> None:
        """KVM_IRQ_LINE with type CPU (this VM has no in-kernel GIC): KVM kicks the vCPU if it runs."""
        v = self._cpu(vcpu)
        irq = uapi.KVM_ARM_IRQ_TYPE_CPU << uapi.KVM_ARM_IRQ_TYPE_SHIFT
        irq |= v.index << uapi.KVM_ARM_IRQ_VCPU_SHIFT | uapi.KVM_ARM_IRQ_CPU_IRQ
        with self._lock:
            if self._closed:
                raise BackendError("the VM is closed")
            host.ioctl_in(
                self._vm,
                uapi.KVM_IRQ_LINE,
                _IRQ_LEVEL.pack({"irq": irq, "level": int(bool(level))}),
                what="KVM_IRQ_LINE",
            )

    # ---- Backend: run ------------------------------------------------------------------------------------
    def _run_until_exit(self, v: _Arm64Vcpu) -> Exit:
        """KVM_RUN until an exit worth reporting.  MMIO exits are answered and KVM_RUN re-entered, which
        completes the access (PC past it) before anything else: a kick then returns EINTR from that
        KVM_RUN with the access done, and a single step over it reports the step.  A powered-off vCPU
        sleeps inside KVM_RUN until CPU_ON or a kick (EINTR)."""
        run = v.run
        while True:
            try:
                fcntl.ioctl(v.fd, uapi.KVM_RUN, 0)
            except InterruptedError:
                return Exit(ExitReason.INTERRUPTED)
            except OSError as e:
                raise BackendError(f"KVM_RUN: {os.strerror(e.errno) if e.errno else e}") from None
            reason = _U32.unpack_from(run, _RUN_EXIT_REASON)[0]
            if reason == uapi.KVM_EXIT_DEBUG:
                d = _DEBUG_EXIT.unpack(run, _RUN_EXIT)
                esr = d["hsr"]
                if _U16.unpack_from(run, _RUN_FLAGS)[0] & uapi.KVM_DEBUG_ARCH_HSR_HIGH_VALID:
                    esr |= d["hsr_high"] << 32
                return Exit(ExitReason.DEBUG, esr=esr, far=d["far"])
            if reason == uapi.KVM_EXIT_MMIO:
                self._mmio(run)
            elif reason == uapi.KVM_EXIT_INTR:
                return Exit(ExitReason.INTERRUPTED)
            elif reason == uapi.KVM_EXIT_SYSTEM_EVENT:
                kind = _U32.unpack_from(run, _SYSTEM_EVENT_TYPE)[0]
                return Exit(ExitReason.SHUTDOWN, status=0, detail=_SYSTEM_EVENTS.get(kind, f"system event {kind}"))
            else:
                return self._fatal_exit(v, reason, run)

    def _mmio(self, run: mmap.mmap) -> None:
        """The UART data register's writes go to the console; other writes are ignored, reads are zeros."""
        addr = _U64.unpack_from(run, _MMIO_ADDR)[0]
        n = min(_U32.unpack_from(run, _MMIO_LEN)[0], 8)
        if not run[_MMIO_IS_WRITE]:
            run[_MMIO_DATA : _MMIO_DATA + n] = bytes(n)
        elif addr == UART_BASE and self._console is not None:
            with self._console_lock:
                self._console(bytes(run[_MMIO_DATA : _MMIO_DATA + 1]))

    def _fatal_exit(self, v: _Arm64Vcpu, reason: int, run: mmap.mmap) -> Exit:
        pc = self._get_one(v, REG_IDS["pc"], 64)
        if reason == uapi.KVM_EXIT_ARM_NISV:
            return Exit(ExitReason.FAULT, signal=SIGBUS, detail=f"MMIO access KVM cannot decode at {pc:#x}")
        if reason == uapi.KVM_EXIT_INTERNAL_ERROR:
            sub = _U32.unpack_from(run, _INTERNAL_SUBERROR)[0]
            return Exit(ExitReason.FAULT, signal=SIGILL, detail=f"KVM internal error {sub} at {pc:#x}")
        if reason == uapi.KVM_EXIT_FAIL_ENTRY:
            why = _U64.unpack_from(run, _FAIL_ENTRY_REASON)[0]
            return Exit(ExitReason.FAULT, signal=SIGILL, detail=f"VM entry failed (reason {why:#x}) at {pc:#x}")
        return Exit(ExitReason.FAULT, signal=SIGBUS, detail=f"unhandled KVM exit reason {reason} at {pc:#x}")

    def __enter__(self) -> KvmArm64Backend:
        return self
