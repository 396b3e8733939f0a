"""The KVM userspace API this project uses, defined once (include/uapi/linux/kvm.h and asm/kvm.h).

Struct layouts are construct definitions named as in C (member names too, so that
tests/kvm/test_uapi_layout.py can ask gcc about every one of them); ioctl request numbers are computed
from the _IOC rule with the struct sizes these definitions give.  Where x86-64 and arm64 differ (the
debug structs, kvm_regs, and so the ioctls that carry them) the unsuffixed name is x86-64's and the arm64
one ends in ``_arm64``.  Backends read and write the structs through backends.kvm.layout (offsets and a
fast flat codec computed from these definitions).

Two C members are anonymous unions: kvm_run's exit union is ``exit`` here (C: ``run->debug``, here
``exit.debug``), and the union in system_event is represented by its ``data`` array (``flags`` is
``data[0]``).
"""

from __future__ import annotations

from construct import (
    Array,
    Bytes,
    BytesInteger,
    Construct,
    Int8ul,
    Int16ul,
    Int32ul,
    Int64ul,
    Padded,
    Padding,
    Struct,
    Union,
)

from backends.api import (
    GUESTDBG_BLOCKIRQ,
    GUESTDBG_ENABLE,
    GUESTDBG_INJECT_BP,
    GUESTDBG_INJECT_DB,
    GUESTDBG_SINGLESTEP,
    GUESTDBG_USE_HW,
    GUESTDBG_USE_SW_BP,
    GUESTDBG_VALID_MASK,
    GUESTDBG_VALID_MASK_X86,
)
from backends.kvm.layout import sizeof

u8, u16, u32, u64 = Int8ul, Int16ul, Int32ul, Int64ul
u128 = BytesInteger(16, swapped=True)  # __uint128_t, and the 16-byte register images (read as one integer)

KVM_API_VERSION = 12
KVMIO = 0xAE

# ---- _IOC (include/uapi/asm-generic/ioctl.h; x86-64 and arm64 both use the generic encoding) ----------
_IOC_NONE, _IOC_WRITE, _IOC_READ = 0, 1, 2


def _ioc(direction: int, nr: int, size: int) -> int:
    if not 0 <= size < 1 << 14:
        raise ValueError("ioctl argument size does not fit the 14-bit field")
    return direction << 30 | size << 16 | KVMIO << 8 | nr


def _io(nr: int) -> int:
    return _ioc(_IOC_NONE, nr, 0)


def _ior(nr: int, arg: Construct) -> int:
    return _ioc(_IOC_READ, nr, sizeof(arg))


def _iow(nr: int, arg: Construct) -> int:
    return _ioc(_IOC_WRITE, nr, sizeof(arg))


def _iowr(nr: int, arg: Construct) -> int:
    return _ioc(_IOC_READ | _IOC_WRITE, nr, sizeof(arg))


# ---- structs common to both architectures -----------------------------------------------------------
kvm_userspace_memory_region = Struct(
    "slot" / u32,
    "flags" / u32,
    "guest_phys_addr" / u64,
    "memory_size" / u64,
    "userspace_addr" / u64,
)
kvm_one_reg = Struct("id" / u64, "addr" / u64)
kvm_vcpu_init = Struct("target" / u32, "features" / Array(7, u32))
kvm_irq_level = Struct("irq" / u32, "level" / u32)  # irq: a union with the unused __s32 status
kvm_translation = Struct(
    "linear_address" / u64,
    "physical_address" / u64,
    "valid" / u8,
    "writeable" / u8,
    "usermode" / u8,
    "pad" / Array(5, u8),
)

# ---- x86-64 (arch/x86/include/uapi/asm/kvm.h) ---------------------------------------------------------
_X86_GPRS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp") + tuple(f"r{i}" for i in range(8, 16))
kvm_regs = Struct(*[name / u64 for name in _X86_GPRS], "rip" / u64, "rflags" / u64)
kvm_segment = Struct(
    "base" / u64,
    "limit" / u32,
    "selector" / u16,
    "type" / u8,
    "present" / u8,
    "dpl" / u8,
    "db" / u8,
    "s" / u8,
    "l" / u8,
    "g" / u8,
    "avl" / u8,
    "unusable" / u8,
    "padding" / u8,
)
kvm_dtable = Struct("base" / u64, "limit" / u16, "padding" / Array(3, u16))
KVM_NR_INTERRUPTS = 256
SREGS_SEGMENTS = ("cs", "ds", "es", "fs", "gs", "ss", "tr", "ldt")
kvm_sregs = Struct(
    *[name / kvm_segment for name in SREGS_SEGMENTS],
    "gdt" / kvm_dtable,
    "idt" / kvm_dtable,
    *[name / u64 for name in ("cr0", "cr2", "cr3", "cr4", "cr8", "efer", "apic_base")],
    "interrupt_bitmap" / Array((KVM_NR_INTERRUPTS + 63) // 64, u64),
)
kvm_fpu = Struct(
    "fpr" / Array(8, u128),  # C: __u8 fpr[8][16]; the 80-bit ST(i) is the low 10 bytes
    "fcw" / u16,
    "fsw" / u16,
    "ftwx" / u8,  # abridged (FXSAVE) tag byte
    "pad1" / u8,
    "last_opcode" / u16,
    "last_ip" / u64,
    "last_dp" / u64,
    "xmm" / Array(16, u128),  # C: __u8 xmm[16][16]
    "mxcsr" / u32,
    "pad2" / u32,
)
kvm_cpuid_entry2 = Struct(
    "function" / u32,
    "index" / u32,
    "flags" / u32,
    "eax" / u32,
    "ebx" / u32,
    "ecx" / u32,
    "edx" / u32,
    "padding" / Array(3, u32),
)
kvm_cpuid2 = Struct("nent" / u32, "padding" / u32)  # followed by nent kvm_cpuid_entry2 (flexible array)
# KVM_GET_XSAVE's region is the XSAVE standard format: the legacy FXSAVE image (asm/sigcontext.h
# struct _fpstate_64), then the XSAVE header (struct _header) at 512.  KVM_GET_FPU cannot stand in for
# it: it never reports MXCSR.
kvm_xsave = Struct("region" / Array(1024, u32))  # KVM_CAP_XSAVE2 may make the real buffer larger
_fpstate_64 = Struct(
    "cwd" / u16,
    "swd" / u16,
    "twd" / u16,  # the abridged tag in the low byte
    "fop" / u16,
    "rip" / u64,
    "rdp" / u64,
    "mxcsr" / u32,
    "mxcsr_mask" / u32,
    "st_space" / Array(32, u32),  # 8 x 16 bytes
    "xmm_space" / Array(64, u32),  # 16 x 16 bytes
    "reserved2" / Array(12, u32),
    "reserved3" / Array(12, u32),  # union with struct _fpx_sw_bytes sw_reserved
)
_header = Struct("xfeatures" / u64, "reserved1" / Array(2, u64), "reserved2" / Array(5, u64))
_ymmh_state = Struct("ymmh_space" / Array(64, u32))
_xstate = Struct("fpstate" / _fpstate_64, "xstate_hdr" / _header, "ymmh" / _ymmh_state)
XFEATURE_MASK_FP, XFEATURE_MASK_SSE = 1 << 0, 1 << 1  # XSTATE_BV bits (architectural; not in the uAPI headers)
kvm_guest_debug_arch = Struct("debugreg" / Array(8, u64))
kvm_guest_debug = Struct("control" / u32, "pad" / u32, "arch" / kvm_guest_debug_arch)
kvm_debug_exit_arch = Struct("exception" / u32, "pad" / u32, "pc" / u64, "dr6" / u64, "dr7" / u64)

# ---- arm64 (arch/arm64/include/uapi/asm/kvm.h, asm/ptrace.h) ------------------------------------------
KVM_ARM_MAX_DBG_REGS = 16
KVM_NR_SPSR = 5
user_pt_regs = Struct("regs" / Array(31, u64), "sp" / u64, "pc" / u64, "pstate" / u64)
user_fpsimd_state = Struct("vregs" / Array(32, u128), "fpsr" / u32, "fpcr" / u32, "__reserved" / Array(2, u32))
kvm_regs_arm64 = Struct(
    "regs" / user_pt_regs,
    "sp_el1" / u64,
    "elr_el1" / u64,
    "spsr" / Array(KVM_NR_SPSR, u64),
    Padding(8),  # fp_regs is 16-byte aligned (__uint128_t)
    "fp_regs" / user_fpsimd_state,
)
kvm_guest_debug_arch_arm64 = Struct(
    *[name / Array(KVM_ARM_MAX_DBG_REGS, u64) for name in ("dbg_bcr", "dbg_bvr", "dbg_wcr", "dbg_wvr")]
)
kvm_guest_debug_arm64 = Struct("control" / u32, "pad" / u32, "arch" / kvm_guest_debug_arch_arm64)
kvm_debug_exit_arch_arm64 = Struct("hsr" / u32, "hsr_high" / u32, "far" / u64)


# ---- struct kvm_run (the vCPU's mmapped page) ----------------------------------------------------------
exit_fail_entry = Struct("hardware_entry_failure_reason" / u64, "cpu" / u32, Padding(4))
exit_io = Struct("direction" / u8, "size" / u8, "port" / u16, "count" / u32, "data_offset" / u64)
exit_mmio = Struct("phys_addr" / u64, "data" / Bytes(8), "len" / u32, "is_write" / u8, Padding(3))
exit_internal = Struct("suberror" / u32, "ndata" / u32, "data" / Array(16, u64))
exit_emulation_failure = Struct(
    "suberror" / u32, "ndata" / u32, "flags" / u64, "insn_size" / u8, "insn_bytes" / Bytes(15)
)
exit_system_event = Struct("type" / u32, "ndata" / u32, "data" / Array(16, u64))
KVM_RUN_EXIT_UNION_SIZE = 256
SYNC_REGS_SIZE_BYTES = 2048


def _kvm_run(debug_exit_arch: Construct) -> Construct:
    return Struct(
        "request_interrupt_window" / u8,
        "immediate_exit" / u8,
        "padding1" / Bytes(6),
        "exit_reason" / u32,
        "ready_for_interrupt_injection" / u8,
        "if_flag" / u8,
        "flags" / u16,
        "cr8" / u64,
        "apic_base" / u64,
        "exit"
        / Padded(
            KVM_RUN_EXIT_UNION_SIZE,
            Union(
                None,
                "hw" / Struct("hardware_exit_reason" / u64),
                "fail_entry" / exit_fail_entry,
                "ex" / Struct("exception" / u32, "error_code" / u32),
                "io" / exit_io,
                "debug" / Struct("arch" / debug_exit_arch),
                "mmio" / exit_mmio,
                "internal" / exit_internal,
                "emulation_failure" / exit_emulation_failure,
                "system_event" / exit_system_event,
            ),
        ),
        "kvm_valid_regs" / u64,
        "kvm_dirty_regs" / u64,
        "s" / Bytes(SYNC_REGS_SIZE_BYTES),
    )


kvm_run = _kvm_run(kvm_debug_exit_arch)
kvm_run_arm64 = _kvm_run(kvm_debug_exit_arch_arm64)
RUN_ANONYMOUS = "exit"  # the C name of this member is empty (an anonymous union)

# ---- ioctls -----------------------------------------------------------------------------------------
# system (/dev/kvm) fd
KVM_GET_API_VERSION = _io(0x00)
KVM_CREATE_VM = _io(0x01)
KVM_CHECK_EXTENSION = _io(0x03)  # also on a VM fd
KVM_GET_VCPU_MMAP_SIZE = _io(0x04)
KVM_GET_SUPPORTED_CPUID = _iowr(0x05, kvm_cpuid2)  # x86
# VM fd
KVM_CREATE_VCPU = _io(0x41)
KVM_SET_USER_MEMORY_REGION = _iow(0x46, kvm_userspace_memory_region)
KVM_SET_TSS_ADDR = _io(0x47)  # x86; the argument is the address itself
KVM_SET_IDENTITY_MAP_ADDR = _iow(0x48, u64)  # x86; the argument points at a __u64
KVM_ARM_PREFERRED_TARGET = _ior(0xAF, kvm_vcpu_init)
# vCPU fd
KVM_RUN = _io(0x80)
KVM_GET_REGS = _ior(0x81, kvm_regs)
KVM_SET_REGS = _iow(0x82, kvm_regs)
KVM_GET_REGS_ARM64 = _ior(0x81, kvm_regs_arm64)
KVM_SET_REGS_ARM64 = _iow(0x82, kvm_regs_arm64)
KVM_GET_SREGS = _ior(0x83, kvm_sregs)
KVM_SET_SREGS = _iow(0x84, kvm_sregs)
KVM_GET_FPU = _ior(0x8C, kvm_fpu)
KVM_SET_FPU = _iow(0x8D, kvm_fpu)
KVM_SET_CPUID2 = _iow(0x90, kvm_cpuid2)
KVM_SET_GUEST_DEBUG = _iow(0x9B, kvm_guest_debug)
KVM_GET_XSAVE = _ior(0xA4, kvm_xsave)
KVM_SET_XSAVE = _iow(0xA5, kvm_xsave)
KVM_GET_XSAVE2 = _ior(0xCF, kvm_xsave)  # copies KVM_CHECK_EXTENSION(KVM_CAP_XSAVE2) bytes
KVM_SET_GUEST_DEBUG_ARM64 = _iow(0x9B, kvm_guest_debug_arm64)
KVM_GET_ONE_REG = _iow(0xAB, kvm_one_reg)  # _IOW although it reads: the struct only carries a pointer
KVM_SET_ONE_REG = _iow(0xAC, kvm_one_reg)
KVM_ARM_VCPU_INIT = _iow(0xAE, kvm_vcpu_init)
KVM_IRQ_LINE = _iow(0x61, kvm_irq_level)  # a VM ioctl
KVM_TRANSLATE = _iowr(0x85, kvm_translation)  # x86 only (arm64 answers EINVAL)

# ---- exit reasons (kvm_run.exit_reason) ----------------------------------------------------------------
KVM_EXIT_UNKNOWN = 0
KVM_EXIT_EXCEPTION = 1
KVM_EXIT_IO = 2
KVM_EXIT_HYPERCALL = 3
KVM_EXIT_DEBUG = 4
KVM_EXIT_HLT = 5
KVM_EXIT_MMIO = 6
KVM_EXIT_IRQ_WINDOW_OPEN = 7
KVM_EXIT_SHUTDOWN = 8
KVM_EXIT_FAIL_ENTRY = 9
KVM_EXIT_INTR = 10
KVM_EXIT_NMI = 16
KVM_EXIT_INTERNAL_ERROR = 17
KVM_EXIT_SYSTEM_EVENT = 24
KVM_EXIT_ARM_NISV = 28

KVM_EXIT_IO_IN = 0
KVM_EXIT_IO_OUT = 1

KVM_INTERNAL_ERROR_EMULATION = 1
KVM_INTERNAL_ERROR_SIMUL_EX = 2
KVM_INTERNAL_ERROR_DELIVERY_EV = 3
KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON = 4
KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES = 1

KVM_SYSTEM_EVENT_SHUTDOWN = 1
KVM_SYSTEM_EVENT_RESET = 2
KVM_SYSTEM_EVENT_CRASH = 3

# ---- capabilities (KVM_CHECK_EXTENSION) ----------------------------------------------------------------
KVM_CAP_IRQCHIP = 0
KVM_CAP_HLT = 1
KVM_CAP_USER_MEMORY = 3
KVM_CAP_SET_TSS_ADDR = 4
KVM_CAP_EXT_CPUID = 7
KVM_CAP_NR_MEMSLOTS = 10
KVM_CAP_SET_GUEST_DEBUG = 23
KVM_CAP_VCPU_EVENTS = 41
KVM_CAP_DEBUGREGS = 50
KVM_CAP_SET_IDENTITY_MAP_ADDR = 37
KVM_CAP_XSAVE = 55
KVM_CAP_XSAVE2 = 208
KVM_CAP_ONE_REG = 70
KVM_CAP_ARM_PSCI_0_2 = 102
KVM_CAP_GUEST_DEBUG_HW_BPS = 119
KVM_CAP_GUEST_DEBUG_HW_WPS = 120
KVM_CAP_IMMEDIATE_EXIT = 136
KVM_CAP_SET_GUEST_DEBUG2 = 195

# ---- guest debug control bits (the same numbers backends.api uses) ------------------------------------
KVM_GUESTDBG_ENABLE = GUESTDBG_ENABLE
KVM_GUESTDBG_SINGLESTEP = GUESTDBG_SINGLESTEP
KVM_GUESTDBG_USE_SW_BP = GUESTDBG_USE_SW_BP
KVM_GUESTDBG_USE_HW_BP = GUESTDBG_USE_HW  # x86's name
KVM_GUESTDBG_USE_HW = GUESTDBG_USE_HW  # arm64's name
KVM_GUESTDBG_INJECT_DB = GUESTDBG_INJECT_DB
KVM_GUESTDBG_INJECT_BP = GUESTDBG_INJECT_BP
KVM_GUESTDBG_BLOCKIRQ = GUESTDBG_BLOCKIRQ
KVM_GUESTDBG_VALID_MASK_X86 = GUESTDBG_VALID_MASK_X86
KVM_GUESTDBG_VALID_MASK_ARM64 = GUESTDBG_VALID_MASK

# ---- arm64 vCPU init -----------------------------------------------------------------------------------
KVM_ARM_TARGET_GENERIC_V8 = 5
KVM_ARM_VCPU_POWER_OFF = 0
KVM_ARM_VCPU_PSCI_0_2 = 2
KVM_DEBUG_ARCH_HSR_HIGH_VALID = 1
# KVM_IRQ_LINE's irq on arm64: vcpu2_index[31:28] | irq_type[27:24] | vcpu_index[23:16] | irq_id[15:0].
# Type CPU drives a vCPU's own IRQ/FIQ input; it is the only type without an in-kernel GIC.
KVM_ARM_IRQ_TYPE_SHIFT = 24
KVM_ARM_IRQ_VCPU_SHIFT = 16
KVM_ARM_IRQ_TYPE_CPU = 0
KVM_ARM_IRQ_CPU_IRQ = 0
KVM_ARM_IRQ_CPU_FIQ = 1

# ---- what tests/kvm/test_uapi_layout.py checks against the C headers ----------------------------------
X86_64_STRUCTS: dict[str, Construct] = {
    "kvm_run": kvm_run,
    "kvm_userspace_memory_region": kvm_userspace_memory_region,
    "kvm_one_reg": kvm_one_reg,
    "kvm_translation": kvm_translation,
    "kvm_regs": kvm_regs,
    "kvm_segment": kvm_segment,
    "kvm_dtable": kvm_dtable,
    "kvm_sregs": kvm_sregs,
    "kvm_fpu": kvm_fpu,
    "kvm_cpuid_entry2": kvm_cpuid_entry2,
    "kvm_cpuid2": kvm_cpuid2,
    "kvm_guest_debug_arch": kvm_guest_debug_arch,
    "kvm_guest_debug": kvm_guest_debug,
    "kvm_debug_exit_arch": kvm_debug_exit_arch,
    "kvm_xsave": kvm_xsave,
    "_fpstate_64": _fpstate_64,
    "_header": _header,
    "_ymmh_state": _ymmh_state,
    "_xstate": _xstate,
}
ARM64_STRUCTS: dict[str, Construct] = {
    "kvm_run": kvm_run_arm64,
    "kvm_userspace_memory_region": kvm_userspace_memory_region,
    "kvm_one_reg": kvm_one_reg,
    "kvm_vcpu_init": kvm_vcpu_init,
    "kvm_irq_level": kvm_irq_level,
    "user_pt_regs": user_pt_regs,
    "user_fpsimd_state": user_fpsimd_state,
    "kvm_regs": kvm_regs_arm64,
    "kvm_guest_debug_arch": kvm_guest_debug_arch_arm64,
    "kvm_guest_debug": kvm_guest_debug_arm64,
    "kvm_debug_exit_arch": kvm_debug_exit_arch_arm64,
}
_COMMON_IOCTLS = {
    "KVM_GET_API_VERSION": KVM_GET_API_VERSION,
    "KVM_CREATE_VM": KVM_CREATE_VM,
    "KVM_CHECK_EXTENSION": KVM_CHECK_EXTENSION,
    "KVM_GET_VCPU_MMAP_SIZE": KVM_GET_VCPU_MMAP_SIZE,
    "KVM_CREATE_VCPU": KVM_CREATE_VCPU,
    "KVM_SET_USER_MEMORY_REGION": KVM_SET_USER_MEMORY_REGION,
    "KVM_RUN": KVM_RUN,
    "KVM_GET_ONE_REG": KVM_GET_ONE_REG,
    "KVM_SET_ONE_REG": KVM_SET_ONE_REG,
}
X86_64_IOCTLS: dict[str, int] = _COMMON_IOCTLS | {
    "KVM_GET_REGS": KVM_GET_REGS,
    "KVM_SET_REGS": KVM_SET_REGS,
    "KVM_GET_SREGS": KVM_GET_SREGS,
    "KVM_SET_SREGS": KVM_SET_SREGS,
    "KVM_GET_FPU": KVM_GET_FPU,
    "KVM_SET_FPU": KVM_SET_FPU,
    "KVM_SET_GUEST_DEBUG": KVM_SET_GUEST_DEBUG,
    "KVM_SET_TSS_ADDR": KVM_SET_TSS_ADDR,
    "KVM_SET_IDENTITY_MAP_ADDR": KVM_SET_IDENTITY_MAP_ADDR,
    "KVM_GET_SUPPORTED_CPUID": KVM_GET_SUPPORTED_CPUID,
    "KVM_SET_CPUID2": KVM_SET_CPUID2,
    "KVM_GET_XSAVE": KVM_GET_XSAVE,
    "KVM_SET_XSAVE": KVM_SET_XSAVE,
    "KVM_GET_XSAVE2": KVM_GET_XSAVE2,
    "KVM_TRANSLATE": KVM_TRANSLATE,
}
ARM64_IOCTLS: dict[str, int] = _COMMON_IOCTLS | {
    "KVM_GET_REGS": KVM_GET_REGS_ARM64,
    "KVM_SET_REGS": KVM_SET_REGS_ARM64,
    "KVM_SET_GUEST_DEBUG": KVM_SET_GUEST_DEBUG_ARM64,
    "KVM_ARM_VCPU_INIT": KVM_ARM_VCPU_INIT,
    "KVM_ARM_PREFERRED_TARGET": KVM_ARM_PREFERRED_TARGET,
    "KVM_IRQ_LINE": KVM_IRQ_LINE,
}
# Constants the test also compares (C macro name -> value), per architecture.
COMMON_CONSTANTS: dict[str, int] = {
    "KVM_API_VERSION": KVM_API_VERSION,
    "KVMIO": KVMIO,
    "KVM_EXIT_UNKNOWN": KVM_EXIT_UNKNOWN,
    "KVM_EXIT_EXCEPTION": KVM_EXIT_EXCEPTION,
    "KVM_EXIT_IO": KVM_EXIT_IO,
    "KVM_EXIT_HYPERCALL": KVM_EXIT_HYPERCALL,
    "KVM_EXIT_DEBUG": KVM_EXIT_DEBUG,
    "KVM_EXIT_HLT": KVM_EXIT_HLT,
    "KVM_EXIT_MMIO": KVM_EXIT_MMIO,
    "KVM_EXIT_IRQ_WINDOW_OPEN": KVM_EXIT_IRQ_WINDOW_OPEN,
    "KVM_EXIT_SHUTDOWN": KVM_EXIT_SHUTDOWN,
    "KVM_EXIT_FAIL_ENTRY": KVM_EXIT_FAIL_ENTRY,
    "KVM_EXIT_INTR": KVM_EXIT_INTR,
    "KVM_EXIT_NMI": KVM_EXIT_NMI,
    "KVM_EXIT_INTERNAL_ERROR": KVM_EXIT_INTERNAL_ERROR,
    "KVM_EXIT_SYSTEM_EVENT": KVM_EXIT_SYSTEM_EVENT,
    "KVM_EXIT_ARM_NISV": KVM_EXIT_ARM_NISV,
    "KVM_EXIT_IO_IN": KVM_EXIT_IO_IN,
    "KVM_EXIT_IO_OUT": KVM_EXIT_IO_OUT,
    "KVM_INTERNAL_ERROR_EMULATION": KVM_INTERNAL_ERROR_EMULATION,
    "KVM_INTERNAL_ERROR_SIMUL_EX": KVM_INTERNAL_ERROR_SIMUL_EX,
    "KVM_INTERNAL_ERROR_DELIVERY_EV": KVM_INTERNAL_ERROR_DELIVERY_EV,
    "KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON": KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON,
    "KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES": KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES,
    "KVM_SYSTEM_EVENT_SHUTDOWN": KVM_SYSTEM_EVENT_SHUTDOWN,
    "KVM_SYSTEM_EVENT_RESET": KVM_SYSTEM_EVENT_RESET,
    "KVM_SYSTEM_EVENT_CRASH": KVM_SYSTEM_EVENT_CRASH,
    "KVM_CAP_IRQCHIP": KVM_CAP_IRQCHIP,
    "KVM_CAP_HLT": KVM_CAP_HLT,
    "KVM_CAP_USER_MEMORY": KVM_CAP_USER_MEMORY,
    "KVM_CAP_SET_TSS_ADDR": KVM_CAP_SET_TSS_ADDR,
    "KVM_CAP_EXT_CPUID": KVM_CAP_EXT_CPUID,
    "KVM_CAP_NR_MEMSLOTS": KVM_CAP_NR_MEMSLOTS,
    "KVM_CAP_SET_GUEST_DEBUG": KVM_CAP_SET_GUEST_DEBUG,
    "KVM_CAP_VCPU_EVENTS": KVM_CAP_VCPU_EVENTS,
    "KVM_CAP_SET_IDENTITY_MAP_ADDR": KVM_CAP_SET_IDENTITY_MAP_ADDR,
    "KVM_CAP_ONE_REG": KVM_CAP_ONE_REG,
    "KVM_CAP_ARM_PSCI_0_2": KVM_CAP_ARM_PSCI_0_2,
    "KVM_CAP_GUEST_DEBUG_HW_BPS": KVM_CAP_GUEST_DEBUG_HW_BPS,
    "KVM_CAP_GUEST_DEBUG_HW_WPS": KVM_CAP_GUEST_DEBUG_HW_WPS,
    "KVM_CAP_IMMEDIATE_EXIT": KVM_CAP_IMMEDIATE_EXIT,
    "KVM_CAP_SET_GUEST_DEBUG2": KVM_CAP_SET_GUEST_DEBUG2,
    "KVM_GUESTDBG_ENABLE": KVM_GUESTDBG_ENABLE,
    "KVM_GUESTDBG_SINGLESTEP": KVM_GUESTDBG_SINGLESTEP,
    "KVM_GUESTDBG_USE_SW_BP": KVM_GUESTDBG_USE_SW_BP,
}
X86_64_CONSTANTS: dict[str, int] = COMMON_CONSTANTS | {
    "KVM_CAP_DEBUGREGS": KVM_CAP_DEBUGREGS,  # #ifdef __KVM_HAVE_DEBUGREGS: x86 only
    "KVM_GUESTDBG_USE_HW_BP": KVM_GUESTDBG_USE_HW_BP,
    "KVM_GUESTDBG_INJECT_DB": KVM_GUESTDBG_INJECT_DB,
    "KVM_GUESTDBG_INJECT_BP": KVM_GUESTDBG_INJECT_BP,
    "KVM_GUESTDBG_BLOCKIRQ": KVM_GUESTDBG_BLOCKIRQ,
    "KVM_NR_INTERRUPTS": KVM_NR_INTERRUPTS,
    "KVM_CAP_XSAVE": KVM_CAP_XSAVE,
    "KVM_CAP_XSAVE2": KVM_CAP_XSAVE2,
}
ARM64_CONSTANTS: dict[str, int] = COMMON_CONSTANTS | {
    "KVM_GUESTDBG_USE_HW": KVM_GUESTDBG_USE_HW,
    "KVM_ARM_MAX_DBG_REGS": KVM_ARM_MAX_DBG_REGS,
    "KVM_NR_SPSR": KVM_NR_SPSR,
    "KVM_ARM_TARGET_GENERIC_V8": KVM_ARM_TARGET_GENERIC_V8,
    "KVM_ARM_VCPU_POWER_OFF": KVM_ARM_VCPU_POWER_OFF,
    "KVM_ARM_VCPU_PSCI_0_2": KVM_ARM_VCPU_PSCI_0_2,
    "KVM_DEBUG_ARCH_HSR_HIGH_VALID": KVM_DEBUG_ARCH_HSR_HIGH_VALID,
    "KVM_ARM_IRQ_TYPE_SHIFT": KVM_ARM_IRQ_TYPE_SHIFT,
    "KVM_ARM_IRQ_VCPU_SHIFT": KVM_ARM_IRQ_VCPU_SHIFT,
    "KVM_ARM_IRQ_TYPE_CPU": KVM_ARM_IRQ_TYPE_CPU,
    "KVM_ARM_IRQ_CPU_IRQ": KVM_ARM_IRQ_CPU_IRQ,
    "KVM_ARM_IRQ_CPU_FIQ": KVM_ARM_IRQ_CPU_FIQ,
}
