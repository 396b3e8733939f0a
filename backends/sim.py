"""A simulated arm64 hypervisor core: unicorn runs the guest at EL1, this module plays EL2.

It reproduces what Linux KVM on arm64 shows userspace for guest debugging
(KVM_SET_GUEST_DEBUG, KVM_EXIT_DEBUG with hsr/far): breakpoints fire before the
instruction with PC at it, watchpoints fire before the access with memory and
registers untouched and PC at the load/store, single steps report EC 0x32 with PC
at the next instruction, and a resumed breakpoint or watchpoint re-hits at once
(the debugger steps over it, as with KVM).

Speed: Python runs only on events.  A breakpoint is a unicorn code hook on its
own address; a watchpoint is a memory hook ranged to its bytes (plus a small
margin, so that every access of a multi-access instruction can be undone).

Several vCPUs (``cpus``, 1..8): one unicorn instance per vCPU (_Core: registers,
hooks, page protections, guest-debug state, exits), all mapping the same host
memory as guest RAM.  vCPU 0 starts at the image entry, the others powered off
until the guest calls PSCI CPU_ON (KVM's in-kernel PSCI 0.2 through `hvc #0` or
`smc #0`; MPIDR_EL1.Aff0 is the vCPU index).  run() is called from one thread
per vCPU; the vCPUs inside run() take turns of SMP_QUANTUM counted instructions
in a deterministic round-robin (_Scheduler), so one instance runs at a time.
With one vCPU there are no turns and no instruction counting, as before.
"""

from __future__ import annotations

import ctypes
import enum
import mmap
import struct
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from unicorn import (  # type: ignore[attr-defined]
    UC_ARCH_ARM64,
    UC_ERR_EXCEPTION,
    UC_ERR_FETCH_PROT,
    UC_ERR_FETCH_UNMAPPED,
    UC_ERR_INSN_INVALID,
    UC_ERR_READ_PROT,
    UC_ERR_READ_UNMAPPED,
    UC_ERR_WRITE_PROT,
    UC_ERR_WRITE_UNMAPPED,
    UC_HOOK_BLOCK,
    UC_HOOK_CODE,
    UC_HOOK_INSN,
    UC_HOOK_INTR,
    UC_HOOK_MEM_READ,
    UC_HOOK_MEM_READ_UNMAPPED,
    UC_HOOK_MEM_WRITE,
    UC_HOOK_MEM_WRITE_PROT,
    UC_HOOK_MEM_WRITE_UNMAPPED,
    UC_MEM_FETCH,
    UC_MEM_WRITE,
    UC_MEM_WRITE_PROT,
    UC_MEM_WRITE_UNMAPPED,
    UC_MODE_ARM,
    UC_PROT_ALL,
    UC_PROT_EXEC,
    UC_PROT_WRITE,
    Uc,
    UcError,
)
from unicorn import arm64_const as A
from unicorn.unicorn_const import UC_CTL_IO_WRITE, UC_CTL_TLB_FLUSH, UC_HOOK_TLB_FILL, UC_TLB_CPU, UC_TLB_VIRTUAL

from backends.api import (
    EC_BREAKPT_LOW,
    EC_BRK64,
    EC_SOFTSTP_LOW,
    EC_WATCHPT_LOW,
    GUESTDBG_ENABLE,
    GUESTDBG_SINGLESTEP,
    GUESTDBG_USE_HW,
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
from backends.arm64_mmu import MmuRegs, TranslationFault, translate
from backends.elf import Image
from backends.guestdebug import (
    ID_AA64DFR0_EL1,
    PSTATE_SS,
    GuestDebugState,
    SysReg,
    breakpoint_esr,
    debug_reg_names,
    step_esr,
    watchpoint_esr,
)

RAM_BASE = 0x4000_0000
UART_BASE = 0x0900_0000
UART_SIZE = 0x1000
_NEVER = (1 << 64) - 1  # an `until` address no A64 instruction can have (unaligned)
_MMU_WATCH_MAX = 16 << 20  # with the MMU on, a watch's first 16 MiB are translated (page by page) and watched
_TRAP_PAGE = 0xFFFF_FFFF_F000  # physical, outside RAM and devices: where _NEVER translates (see _on_tlb_fill)
_PAGE_SIZE = 0x1000
_RAM_CHUNK = 2 << 20
_PAGE_MASK = _PAGE_SIZE - 1
_PROT_FALSE_HITS_MAX = 256  # accesses to unwatched bytes of a protected page before it gets a ranged hook
# How far below a watch an instruction that reaches the watched bytes may start (the widest A64 access,
# st4/ld4 of four q registers, is 64 bytes): its earlier accesses there must be seen to be undone.
_ACCESS_MARGIN = 64
# Ranged hooks match an access by its start address, and unicorn reports accesses of at most 8 bytes
# (wider ones arrive in pieces): 7 bytes below a watch catch every access that overlaps it.  Earlier
# pieces of the same instruction further below are not seen, so a read watch or a busy page's write
# watch may leave them done at the exit (gdb never sees that: it steps over the access before it
# reports).  A wider margin would call Python for every access near a watch (~100x slower there).
_HOOK_MARGIN = 7

# QEMU exception numbers as unicorn's interrupt hook reports them.
_EXCP_UDEF = 1
_EXCP_SWI = 2
_EXCP_PREFETCH_ABORT = 3
_EXCP_DATA_ABORT = 4
_EXCP_BKPT = 7
_EXCP_HVC = 11
_EXCP_SMC = 13

# PSCI 0.2 function ids (SMC32 0x84..., SMC64 0xC4...) and return codes
_PSCI_BASE32 = 0x8400_0000
_PSCI_BASE64 = 0xC400_0000
PSCI_VERSION = 0x8400_0000
PSCI_CPU_SUSPEND = 0x8400_0001
PSCI_CPU_SUSPEND_64 = 0xC400_0001
PSCI_CPU_OFF = 0x8400_0002
PSCI_CPU_ON = 0x8400_0003
PSCI_CPU_ON_64 = 0xC400_0003
PSCI_AFFINITY_INFO = 0x8400_0004
PSCI_AFFINITY_INFO_64 = 0xC400_0004
PSCI_MIGRATE_INFO_TYPE = 0x8400_0006
PSCI_SYSTEM_OFF = 0x8400_0008
PSCI_SYSTEM_RESET = 0x8400_0009
PSCI_RET_SUCCESS = 0
PSCI_RET_NOT_SUPPORTED = -1
PSCI_RET_INVALID_PARAMS = -2
PSCI_RET_ALREADY_ON = -4
_MPIDR_HWID_BITMASK = 0xFF_00FF_FFFF  # Aff3, Aff2, Aff1, Aff0
_MPIDR_EL1 = (3, 0, 0, 0, 5)  # (op0, op1, CRn, CRm, op2)
_WFI = 0xD503207F
_EC_IABT_LOW, _EC_DABT_LOW = 0x20, 0x24  # Instruction/Data Abort from EL0 (+1: from the current EL)
_ISS_WNR = 1 << 6
_PSTATE_I = 0x80
_VECTOR_IRQ = 0x80  # an IRQ's vector: the synchronous one's + 0x80
_MASK32 = (1 << 32) - 1
_MASK64 = (1 << 64) - 1
MAX_CPUS = 8
# Several vCPUs take turns on the host CPU: a turn is one emu_start of at most SMP_QUANTUM instructions
# (unicorn counts them: ~4x slower than uncounted), and after a vCPU enters or leaves run() the others wait up
# to SMP_GATHER seconds for every powered-on vCPU to be inside run() (see _Scheduler).
SMP_QUANTUM = 10_000
SMP_GATHER = 0.05

SIGILL, SIGTRAP, SIGBUS, SIGSEGV = 4, 5, 7, 11

_IL = 1 << 25
_EC_SVC64 = 0x15


def _esr(ec: int, iss: int) -> int:
    return (ec << 26) | _IL | iss


ESR_BREAKPOINT = _esr(EC_BREAKPT_LOW, 0x22)  # 0xC2000022, as measured on arm64 KVM
ESR_SOFTSTEP = _esr(EC_SOFTSTP_LOW, (1 << 24) | 0x22)  # 0xCB000022 (ISV=1, EX=0)
ESR_SOFTSTEP_PENDING = _esr(EC_SOFTSTP_LOW, 0x22)  # 0xCA000022 (ISV=0): taken from active-pending state


def esr_watchpoint(write: bool) -> int:
    return _esr(EC_WATCHPT_LOW, (0x40 if write else 0) | 0x22)  # 0xD2000062 / 0xD2000022


def esr_brk64(imm16: int) -> int:
    return _esr(EC_BRK64, imm16 & 0xFFFF)


class FarPolicy(enum.Enum):
    """Which accessed address a watchpoint exit reports in FAR: implementations differ (DESIGN.md 3.4)."""

    LOWEST = "lowest"  # the lowest address the instruction accessed (Apple M1 style)
    WATCHED = "watched"  # the first watched byte the access touched (Cortex-A72 style)
    LOWEST16 = "lowest16"  # the lowest accessed address rounded down to 16


_REGS: dict[str, int] = {f"x{i}": getattr(A, f"UC_ARM64_REG_X{i}") for i in range(29)}
_REGS.update({"x29": A.UC_ARM64_REG_X29, "x30": A.UC_ARM64_REG_X30, "sp": A.UC_ARM64_REG_SP, "pc": A.UC_ARM64_REG_PC})
_REGS["cpsr"] = A.UC_ARM64_REG_PSTATE
_REGS.update({f"v{i}": getattr(A, f"UC_ARM64_REG_Q{i}") for i in range(32)})
_REGS.update({"fpsr": A.UC_ARM64_REG_FPSR, "fpcr": A.UC_ARM64_REG_FPCR})
_REG_NAMES = list(_REGS)
_REG_IDS = [_REGS[n] for n in _REG_NAMES]
_REG_WIDTH = {n: (128 if n.startswith("v") else 32 if n in ("fpsr", "fpcr") else 64) for n in _REG_NAMES}
# EL1 system registers a VMM reads and writes to deliver an exception to the guest (KVM: ONE_REG sysregs);
# not in gdb's register table.  sp_el0/sp_el1 are the architectural stack pointers, whichever is live.
_SYSREGS: dict[str, int] = {
    "esr_el1": A.UC_ARM64_REG_ESR_EL1,
    "elr_el1": A.UC_ARM64_REG_ELR_EL1,
    "far_el1": A.UC_ARM64_REG_FAR_EL1,
    "vbar_el1": A.UC_ARM64_REG_VBAR_EL1,
    "cpacr_el1": A.UC_ARM64_REG_CPACR_EL1,
    "ttbr0_el1": A.UC_ARM64_REG_TTBR0_EL1,
    "ttbr1_el1": A.UC_ARM64_REG_TTBR1_EL1,
    "mair_el1": A.UC_ARM64_REG_MAIR_EL1,
}
_SPSR_EL1 = (4, 0, 3, 0, 0)  # (CRn, CRm, op0, op1, op2): unicorn names no SPSR_EL1, its CP_REG does
_CONTEXTIDR = (13, 0, 3, 0, 1)  # CONTEXTIDR_EL1 as unicorn's CP_REG names it
_SCTLR = (1, 0, 3, 0, 0)
_TCR = (2, 0, 3, 0, 2)
_CP_REGS = {"spsr_el1": _SPSR_EL1, "contextidr_el1": _CONTEXTIDR, "sctlr_el1": _SCTLR, "tcr_el1": _TCR}
_SCTLR_RESET = 0x00C5_0078  # KVM's reset_val for SCTLR_EL1 (arch/arm64/kvm/sys_regs.c), as the guest reads it
_SCTLR_KEY = (3, 0, 1, 0, 0)  # (op0, op1, CRn, CRm, op2), as the sysreg hook names it
# the registers KVM traps and emulates against the guest's own copy (backends/guestdebug.py)
_GUEST_DEBUG_REGS: dict[str, SysReg] = debug_reg_names()
_EXTRA_REGS = set(_SYSREGS) | set(_CP_REGS) | {"sp_el0", "sp_el1"} | set(_GUEST_DEBUG_REGS)
_ERET = 0xD69F03E0


class _RegBatch:
    """All registers in one uc_reg_read_batch call into preallocated buffers.

    The binding's reg_read_batch builds ctypes objects per register (~100 us for the 68 of `g`);
    this takes a few microseconds.  Falls back to the binding if its internals ever move.
    """

    def __init__(self, uc: Any, ids: list[int]) -> None:
        self._uc = uc
        self._ids = ids
        n = len(ids)
        self._n = n
        self._c_ids = (ctypes.c_int * n)(*ids)
        self._buf = ctypes.create_string_buffer(16 * n)
        base = ctypes.addressof(self._buf)
        self._ptrs = (ctypes.c_void_p * n)(*[base + 16 * i for i in range(n)])
        self._fmt = struct.Struct(f"<{2 * n}Q")
        try:
            from unicorn.unicorn_py3.unicorn import uclib

            self._lib: Any = uclib
            self._handle: Any = uc._uch
        except (ImportError, AttributeError):
            self._lib = None

    def raw(self) -> bytes:
        """The registers as 16 little-endian bytes each: cheap to take and to compare."""
        if self._lib is None:
            return b"".join(v.to_bytes(16, "little") for v in self.read())
        ctypes.memset(self._buf, 0, 16 * self._n)  # 32-bit registers fill only their low bytes
        if self._lib.uc_reg_read_batch(self._handle, self._c_ids, self._ptrs, self._n) != 0:
            raise BackendError("reading registers failed")
        return self._buf.raw

    def read(self) -> list[int]:
        if self._lib is None:
            return [v if isinstance(v, int) else 0 for v in self._uc.reg_read_batch(self._ids)]
        words = self._fmt.unpack(self.raw())
        return [words[i] | words[i + 1] << 64 for i in range(0, 2 * self._n, 2)]


@dataclass(frozen=True)
class _Watch:
    """One enabled WRP decoded by the architecture's rules: the bytes it watches and how."""

    start: int
    end: int
    load: bool
    store: bool
    el0: bool
    el1: bool
    guest_n: int = -1  # the guest's own WRP n (its enable conditions are checked at each hit), -1: the host's
    va_delta: int = 0  # MMU on: start/end are the physical bytes behind the watched page; virtual = + this


def decode_breakpoint(bcr: int, bvr: int, linked: bool = False) -> int | None:
    """The A64 address an enabled DBGBCR/DBGBVR pair matches, or None (disabled or unsupported type).
    ``linked`` also accepts BT=0b0001 (an address match linked to a context-ID breakpoint)."""
    if not bcr & 1:
        return None
    bt = (bcr >> 20) & 0xF
    bas = (bcr >> 5) & 0xF
    # only (unlinked, or for the guest linked) address match; BAS 1100 never matches A64
    if bt not in ((0, 1) if linked else (0,)) or bas not in (0b1111, 0b0011):
        return None
    if not (bcr >> 1) & 0b11:
        return None
    return _va(bvr) & ~0b11


def _va(value: int) -> int:
    """DBGBVR/DBGWVR bits [52:0] as the virtual address they match: bits 63:53 (RESS) are taken as the
    sign extension of bit 52, which is what an upper-half address (a kernel's) has there."""
    value &= (1 << 53) - 1
    return value | (_MASK64 & ~((1 << 53) - 1)) if value >> 52 & 1 else value


def decode_watchpoint(wcr: int, wvr: int, guest_n: int = -1) -> _Watch | None:
    """The byte range an enabled DBGWCR/DBGWVR pair watches, or None where it can never fire.
    A guest's own watchpoint (``guest_n``) may be linked (WT=1): its context is checked at each hit."""
    if guest_n >= 0:
        wcr &= ~(1 << 20)
    if not wcr & 1:
        return None
    pac = (wcr >> 1) & 0b11
    lsc = (wcr >> 3) & 0b11
    bas = (wcr >> 5) & 0xFF
    mask = (wcr >> 24) & 0x1F
    if (wcr >> 20) & 1 or lsc == 0 or pac == 0:  # linked (WT=1) is not modelled; LSC 00 is reserved
        return None
    addr = _va(wvr)
    if mask:
        if mask < 3:  # MASK 1 and 2 are reserved: never fire
            return None
        size = 1 << mask
        start = addr & ~(size - 1)
        end = start + size
    else:
        base = addr & ~0b111
        if addr & 0b100:  # deprecated: WVR 4-aligned only, BAS[3:0] covers the upper word
            bas = (bas & 0xF) << 4
        if bas == 0:
            return None
        low = (bas & -bas).bit_length() - 1  # contiguous lanes; a gap is CONSTRAINED UNPREDICTABLE:
        run = bas >> low  # take the first run of ones, as QEMU does
        n = 0
        while run & 1:
            run >>= 1
            n += 1
        start, end = base + low, base + low + n
    return _Watch(start, end, bool(lsc & 1), bool(lsc & 2), bool(pac & 2), bool(pac & 1), guest_n)


def _page_runs(pages: Iterable[int]) -> list[tuple[int, int]]:
    """Page addresses as (start, size) runs of adjacent pages, in address order."""
    runs: list[list[int]] = []
    for page in sorted(pages):
        if runs and runs[-1][0] + runs[-1][1] == page:
            runs[-1][1] += _PAGE_SIZE
        else:
            runs.append([page, _PAGE_SIZE])
    return [(start, size) for start, size in runs]


class _Core:
    """One vCPU: its own unicorn instance (registers, hooks, page protections, translated code) on the
    machine's shared RAM, its own guest-debug state (host's and guest's) and its own exits.  Everything
    here runs on the vCPU's thread, and with several vCPUs only in its turn (_Scheduler)."""

    def __init__(self, vm: SimBackend, index: int, host: int) -> None:
        self._vm = vm
        self.index = index
        # KVM's reset_mpidr(): Aff0 = vcpu_id[3:0], Aff1 = vcpu_id[11:4], Aff2 = vcpu_id[19:12]; bit 31 RES1
        self.mpidr = 1 << 31 | (index & 0xF) | ((index >> 4) & 0xFF) << 8 | ((index >> 12) & 0xFF) << 16
        self.on = index == 0  # vCPU 0 starts at the image entry, the others powered off (KVM_ARM_VCPU_POWER_OFF)
        self._off_request = False  # the guest called PSCI CPU_OFF: power off once emu_start returns
        self._code_stale = False  # another vCPU invalidated the instruction caches (IC): drop translated code
        self._sched: _Scheduler | None = None  # set by SimBackend with several vCPUs
        self.ram_base, self.ram_size = vm.ram_base, vm.ram_size
        self.brps, self.wrps = vm.brps, vm.wrps
        ram_base, ram_size = vm.ram_base, vm.ram_size
        self._uc: Any = Uc(UC_ARCH_ARM64, UC_MODE_ARM)  # untyped binding
        # While the guest's MMU is on, stage 1 translation is ours (backends/arm64_mmu.py, on each unicorn TLB
        # miss): unicorn 2.1.4's own walk checks the virtual address against its memory map, so a guest that
        # maps memory anywhere but at its own physical address (a kernel's upper half) would fault there.
        # With the MMU off, unicorn's own TLB (no Python per miss) is used (_apply_hooks switches).
        uc: Any = self._uc
        self._tlb_virtual = False
        uc.hook_add(UC_HOOK_TLB_FILL, self._on_tlb_fill)
        uc.mem_map(_TRAP_PAGE, _PAGE_SIZE, UC_PROT_EXEC)
        # RAM is host memory the machine owns (reads need no copy through unicorn), mapped in 2 MiB pieces:
        # unicorn splits a region to protect one page of it, and a split of the whole RAM costs ~100 ms.
        # Every vCPU maps the same host memory: its own mapping carries its own watchpoint protections.
        for off in range(0, ram_size, _RAM_CHUNK):
            self._uc.mem_map_ptr(ram_base + off, min(_RAM_CHUNK, ram_size - off), UC_PROT_ALL, host + off)
        self._uc.mmio_map(UART_BASE, UART_SIZE, self._uart_read, None, self._uart_write, None)
        self._uc.hook_add(UC_HOOK_INTR, self._on_interrupt)
        # every MRS/MSR calls Python (cheap: no hot loop runs system-register instructions): the guest's
        # debug registers live in self._guest, as KVM traps them to vcpu_debug_state
        self._uc.hook_add(UC_HOOK_INSN, self._on_sysreg, True, 1, 0, A.UC_ARM64_INS_MRS)
        self._uc.hook_add(UC_HOOK_INSN, self._on_sysreg, False, 1, 0, A.UC_ARM64_INS_MSR)
        self._guest = self._new_guest_state()
        self._guest_bps: dict[int, list[int]] = {}  # address -> the guest's own BRPs on it (while it owns them)
        self._guest_exc: tuple[int, int | None] | None = None  # (esr, far): a debug exception for the guest
        self._exceptions = 0  # exception entries made so far (the guest's single-step watches it)
        self._emulated = False  # the last instruction was one KVM traps and emulates (MMIO, debug sysregs)
        self._regfile = _RegBatch(self._uc, _REG_IDS)
        self._keyfile = _RegBatch(self._uc, _REG_IDS[:34])  # x0-x30, sp, pc, cpsr
        self._last_was_step = False
        self._control = 0
        self._dbg = DebugRegs()
        self._hooks: list[int] = []
        self._hooks_dirty = False
        self._bp_addrs: dict[int, int] = {}  # address -> PMC bits of its breakpoints (0b01 EL1, 0b10 EL0)
        self._watches: list[_Watch] = []
        self._pending: Exit | None = None
        self._far = 0  # KVM writes far only on watchpoint exits: other exits keep the stale value
        self._journal_pc = -1
        self._journal_key = b""
        self._journal_regs: list[int] = []
        self._journal: list[tuple[int, bytes]] = []
        self._journal_low = 0
        self._snapshot: object | None = None
        self._protected: dict[int, int] = {}  # watched page -> permissions taken away
        self._hot_pages: set[int] = set()  # watched pages the guest touches too often to protect
        self._false_hits: dict[int, int] = {}
        self._rearm = False
        self._uc.hook_add(UC_HOOK_MEM_WRITE_PROT, self._on_protection)
        self._lock = vm._cv  # the machine's one lock: guards _kicked/_running and the scheduler's state
        self._running = False
        self._kicked = False
        self._irq = False  # the IRQ input's level (set_irq_line; guarded by the lock)
        self._irq_poll = False  # stop to take an IRQ: the line rose, or the guest unmasked it (PSTATE.I)
        self._irq_hook: int | None = None  # a block hook while the line is high: it sees the guest unmask
        self._fault_level = 0  # the lookup level of the last translation our walk failed (_on_tlb_fill)
        self._fault_fetch: bool | None = None  # ...and whether it was an instruction fetch (None: no failure)
        self._scratch: Any = None  # a unicorn engine that finds a faulting access's address (_data_fault_address)
        self._sys_hook: int | None = None  # SYS instructions: several vCPUs (IC), or watches with the MMU on (TLBI)
        self._retry = threading.Event()
        self._retrier: threading.Thread | None = None
        self._uc.reg_write(A.UC_ARM64_REG_PSTATE, 0x3C5)  # EL1h, DAIF masked: KVM's vcpu reset state
        self._uc.reg_write(A.UC_ARM64_REG_CP_REG, (*_SCTLR, _SCTLR_RESET))  # KVM's reset value (MMU off)
        self._mmu = False  # SCTLR_EL1.M, kept here as every write to it is seen (_on_sysreg, _set_extra)
        self._reset_context = self._uc.context_save()  # what CPU_ON starts from (kvm_reset_vcpu)

    def _new_guest_state(self) -> GuestDebugState:
        # the context-aware breakpoints are the highest-numbered CTX_CMPs + 1 (ID_AA64DFR0_EL1)
        return GuestDebugState(ctx_first=self.brps - 1 - ((self._vm.id_aa64dfr0() >> 28) & 0xF))

    def power_on(self, entry: int, context_id: int) -> None:
        """PSCI CPU_ON on this (powered-off, not running) vCPU: a reset vCPU at ``entry`` in EL1h with DAIF
        masked and the MMU off, x0 = the context id.  The debugger's guest-debug state survives (KVM keeps
        vcpu->guest_debug), the guest's own debug registers are reset like its other system registers."""
        uc = self._uc
        uc.context_restore(self._reset_context)
        self._mmu = False
        self._hooks_dirty = True  # (unicorn's own TLB again)
        uc.reg_write(A.UC_ARM64_REG_PC, entry)
        uc.reg_write(A.UC_ARM64_REG_X0, context_id)
        if self._control == 0:
            self._hooks_dirty = True  # unload the guest's own points: its debug registers are reset below
        self._guest = self._new_guest_state()
        self._guest_exc = None
        self._last_was_step = False
        # other vCPUs may have written code this one translated before it powered off: drop it all
        uc.ctl_flush_tb()
        uc.ctl(UC_CTL_TLB_FLUSH, UC_CTL_IO_WRITE)
        self.on = True

    def get_regs(self) -> dict[str, int]:
        return dict(zip(_REG_NAMES, self._regfile.read(), strict=True))

    def get_reg(self, name: str) -> int:
        reg = _REGS.get(name)
        if reg is None:
            if name in _EXTRA_REGS:
                return self._get_extra(name)
            raise BackendError(f"unknown register {name}")
        value: int = self._uc.reg_read(reg)
        return value

    def set_regs(self, regs: dict[str, int]) -> None:
        for name, value in regs.items():
            if name not in _REGS and name not in _EXTRA_REGS:
                raise BackendError(f"unknown register {name}")
            if not 0 <= value < 1 << _REG_WIDTH.get(name, 64):
                raise BackendError(f"value out of range for {name}")
        if "cpsr" in regs:  # first, as KVM's ONE_REG order gives it: "sp" then means the new mode's SP
            self._write_pstate(regs["cpsr"])
        for name, value in regs.items():
            if name == "cpsr" or name == "sp":
                continue
            if name in _REGS:
                self._uc.reg_write(_REGS[name], value)
            else:
                self._set_extra(name, value)
        if "sp" in regs:
            self._uc.reg_write(A.UC_ARM64_REG_SP, regs["sp"])

    def _write_pstate(self, value: int) -> None:
        """PSTATE with the stack pointers banked as the architecture keeps them (SP_EL0 and SP_EL1 stay
        what they were; the live one follows the new mode), which unicorn's PSTATE write does not do."""
        uc = self._uc
        sp_el0, sp_el1 = self._get_extra("sp_el0"), self._get_extra("sp_el1")
        uc.reg_write(A.UC_ARM64_REG_PSTATE, value)
        live_el1 = self._sp_el1_live()
        uc.reg_write(
            A.UC_ARM64_REG_SP_EL1 if not live_el1 else A.UC_ARM64_REG_SP_EL0, sp_el1 if not live_el1 else sp_el0
        )
        uc.reg_write(A.UC_ARM64_REG_SP, sp_el1 if live_el1 else sp_el0)

    def _sp_el1_live(self) -> bool:
        """unicorn keeps the live stack pointer in SP and does not bank it on PSTATE writes."""
        pstate = self._uc.reg_read(A.UC_ARM64_REG_PSTATE)
        return ((pstate >> 2) & 3) == 1 and bool(pstate & 1)

    def _get_extra(self, name: str) -> int:
        uc = self._uc
        if name in _GUEST_DEBUG_REGS:
            return self._guest.read(_GUEST_DEBUG_REGS[name])
        if name in _CP_REGS:
            return int(uc.reg_read(A.UC_ARM64_REG_CP_REG, _CP_REGS[name]))
        if name in ("sp_el0", "sp_el1"):
            live = (name == "sp_el1") == self._sp_el1_live()
            return int(uc.reg_read(A.UC_ARM64_REG_SP if live else getattr(A, f"UC_ARM64_REG_{name.upper()}")))
        return int(uc.reg_read(_SYSREGS[name]))

    def _set_extra(self, name: str, value: int) -> None:
        uc = self._uc
        if name in _GUEST_DEBUG_REGS:
            if self._guest.write(_GUEST_DEBUG_REGS[name], value) and self._control == 0:
                self._hooks_dirty = True
        elif name in _CP_REGS:
            uc.reg_write(A.UC_ARM64_REG_CP_REG, (*_CP_REGS[name], value))
            if name == "sctlr_el1":
                self._mmu = bool(value & 1)
                self._hooks_dirty = True  # watchpoints are kept differently with the MMU on
        elif name in ("sp_el0", "sp_el1"):
            live = (name == "sp_el1") == self._sp_el1_live()
            uc.reg_write(A.UC_ARM64_REG_SP if live else getattr(A, f"UC_ARM64_REG_{name.upper()}"), value)
        else:
            uc.reg_write(_SYSREGS[name], value)

    def _take_exception(self, esr: int | None, elr: int, far: int | None = None, kind: int = 0) -> bool:
        """Exception entry to EL1 (AArch64), as the architecture does it for exceptions KVM never sees
        (undefined instructions, SVC, an IRQ: ``kind`` _VECTOR_IRQ, no ESR) and for BRK while nothing
        debugs the guest.  False, with nothing changed, if the vector lies outside guest RAM: a guest that
        set up no vectors cannot take the exception, and stopping there (SIGILL/SIGTRAP) helps more than
        a fault loop."""
        uc = self._uc
        pstate = uc.reg_read(A.UC_ARM64_REG_PSTATE)
        el, sp_h = (pstate >> 2) & 3, pstate & 1
        vector = uc.reg_read(A.UC_ARM64_REG_VBAR_EL1) + (0x400 if el == 0 else 0x200 if sp_h else 0) + kind
        try:
            at = self.translate(vector)
        except GuestMemoryError:
            return False
        if not self.ram_base <= at < self.ram_base + self.ram_size - 4:
            return False
        sp_el1 = self._get_extra("sp_el1")
        if not (el == 1 and sp_h):  # the live SP was SP_EL0: bank it, EL1h runs on SP_EL1
            uc.reg_write(A.UC_ARM64_REG_SP_EL0, uc.reg_read(A.UC_ARM64_REG_SP))
        if esr is not None:
            uc.reg_write(A.UC_ARM64_REG_ESR_EL1, esr)
        uc.reg_write(A.UC_ARM64_REG_ELR_EL1, elr)
        uc.reg_write(A.UC_ARM64_REG_CP_REG, (*_SPSR_EL1, pstate))
        if far is not None:
            uc.reg_write(A.UC_ARM64_REG_FAR_EL1, far)
        # EL1h, DAIF masked; SS, IL and NZCV clear, as arm64 KVM on the emulated host shows
        uc.reg_write(A.UC_ARM64_REG_PSTATE, 0x3C5)
        uc.reg_write(A.UC_ARM64_REG_SP, sp_el1)
        uc.reg_write(A.UC_ARM64_REG_PC, vector)
        self._exceptions += 1
        return True

    # ---- stage 1 translation (guest virtual -> guest physical) --------------------------------------
    def translate(self, va: int) -> int:
        """What this vCPU's MMU maps ``va`` to now; GuestMemoryError (TranslationFault) if nothing."""
        if not self._mmu:  # (no register read: this runs on every unicorn TLB miss)
            return va
        uc = self._uc
        sctlr = uc.reg_read(A.UC_ARM64_REG_CP_REG, _SCTLR)
        regs = MmuRegs(
            sctlr,
            uc.reg_read(A.UC_ARM64_REG_CP_REG, _TCR),
            uc.reg_read(A.UC_ARM64_REG_TTBR0_EL1),
            uc.reg_read(A.UC_ARM64_REG_TTBR1_EL1),
        )
        return translate(va, regs, self._vm.read_memory)

    def _on_tlb_fill(self, uc: Uc, vaddr: int, access: int, entry: Any, _ud: object) -> bool:
        """A unicorn TLB miss: the page's physical address (permissions are not modelled: all allowed).
        False (no mapping) makes emu_start fail (UC_ERR_EXCEPTION); the run loop then delivers the
        translation fault to the guest (_took_translation_fault, with what is recorded here)."""
        try:
            entry.paddr = self.translate(vaddr)
        except GuestMemoryError as e:
            if vaddr >> 10 != _NEVER >> 10:
                self._fault_level = e.level if isinstance(e, TranslationFault) else 0
                self._fault_fetch = access == UC_MEM_FETCH
                return False
            # unicorn looks up emu_start's `until` address (_NEVER) as code when it starts: it gets the
            # trap page (all UDF), which no guest access can otherwise reach
            entry.paddr, entry.perms = _TRAP_PAGE, UC_PROT_EXEC
            return True
        entry.perms = UC_PROT_ALL
        return True

    def _took_translation_fault(self, e: UcError) -> bool:
        """After emu_start failed: was it a translation fault the guest's MMU raised (our walk found nothing)?
        Then the Instruction or Data Abort exception to EL1 is taken, as the CPU takes it under KVM, with
        IFSC/DFSC = translation fault at the level that failed, WnR, and FAR_EL1 = the address.  False if it
        was something else or cannot be delivered (no vectors; the address not found): the guest stops."""
        fetch, self._fault_fetch = self._fault_fetch, None
        if e.errno != UC_ERR_EXCEPTION or fetch is None or not self._mmu:
            return False
        uc = self._uc
        pc = uc.reg_read(A.UC_ARM64_REG_PC)
        level = self._fault_level
        if fetch:
            far, write = pc, False
        else:
            found = self._data_fault_address(pc)
            if found is None:
                return False
            far, write = found
        from_el0 = not (uc.reg_read(A.UC_ARM64_REG_PSTATE) >> 2) & 3
        ec = (_EC_IABT_LOW if fetch else _EC_DABT_LOW) + (0 if from_el0 else 1)
        esr = _esr(ec, (0b000100 | level) | (_ISS_WNR if write else 0))
        return self._take_exception(esr, pc, far)

    def _data_fault_address(self, pc: int) -> tuple[int, bool] | None:
        """The address (and whether a write) of the load/store at ``pc`` that missed the guest's tables:
        unicorn does not tell, so the instruction runs once more in a scratch engine with the same registers
        and only the pages that are mapped, and its unmapped-memory hook names the access that is not."""
        scratch = self._scratch
        if scratch is None:
            scratch = self._scratch = Uc(UC_ARCH_ARM64, UC_MODE_ARM)
        try:
            code = self._read_va(pc, 4)
        except GuestMemoryError:
            return None
        for begin, end, _perms in list(scratch.mem_regions()):
            scratch.mem_unmap(begin, end - begin + 1)
        scratch.mem_map(pc & ~_PAGE_MASK, _PAGE_SIZE)
        scratch.mem_write(pc, code)
        scratch.reg_write(A.UC_ARM64_REG_PSTATE, self._uc.reg_read(A.UC_ARM64_REG_PSTATE) & ~PSTATE_SS)
        for reg in _REG_IDS[:32]:  # x0-x30, sp
            scratch.reg_write(reg, self._uc.reg_read(reg))
        found: list[tuple[int, bool]] = []

        def unmapped(uc: Any, access: int, addr: int, size: int, value: int, _ud: object) -> bool:
            try:
                self.translate(addr)
            except GuestMemoryError:
                found.append((addr, access == UC_MEM_WRITE_UNMAPPED))
                return False
            uc.mem_map(addr & ~_PAGE_MASK, _PAGE_SIZE)  # mapped for the guest: let this part of the access be
            return True

        hook = scratch.hook_add(UC_HOOK_MEM_READ_UNMAPPED | UC_HOOK_MEM_WRITE_UNMAPPED, unmapped)
        try:
            scratch.emu_start(pc, _NEVER, count=1)
        except UcError:
            pass
        finally:
            scratch.hook_del(hook)
        return found[0] if found else None

    def _physical(self, watches: list[_Watch]) -> list[_Watch]:
        """The watches as the physical bytes the MMU maps them to now (unicorn's memory hooks see physical
        addresses): one per run of contiguous pages, unmapped pages left out.  The mapping is taken again
        when the guest changes it (TLBI, SCTLR_EL1) or the debugger does; an access to the same memory
        through another mapping (an alias) also hits, where the hardware compares virtual addresses."""
        out: list[_Watch] = []
        for w in watches:
            va = w.start
            end = min(w.end, w.start + _MMU_WATCH_MAX)
            while va < end:
                n = min(end - va, _PAGE_SIZE - (va & _PAGE_MASK))
                try:
                    pa = self.translate(va)
                except GuestMemoryError:
                    va += n
                    continue
                delta = (va - pa) & _MASK64
                last = out[-1] if out else None
                if last is not None and last.guest_n == w.guest_n and last.end == pa and last.va_delta == delta:
                    out[-1] = replace(last, end=pa + n)
                else:
                    out.append(replace(w, start=pa, end=pa + n, va_delta=delta))
                va += n
        return out

    def _read_va(self, addr: int, size: int) -> bytes:
        """Guest memory at a virtual address (unicorn's mem_read takes physical ones), page by page."""
        out = b""
        while size > 0:
            n = min(size, _PAGE_SIZE - (addr & _PAGE_MASK))
            out += bytes(self._uc.mem_read(self.translate(addr), n))
            addr, size = addr + n, size - n
        return out

    def _on_sysreg(self, uc: Uc, reg: int, cp: Any, is_read: bool) -> int:
        """MRS/MSR: the debug registers are emulated against the guest's own copy (1 = skip the
        instruction: done here); ID_AA64DFR0_EL1 reads as the configured core.  Others run natively."""
        key = (cp.op0, cp.op1, cp.crn, cp.crm, cp.op2)
        if key == _SCTLR_KEY and not is_read:  # every SCTLR_EL1 write passes here: _mmu follows M
            if bool(cp.val & 1) == self._mmu:
                return 0
            self._mmu = bool(cp.val & 1)  # the MMU goes on or off: another TLB mode, and watched stores
            uc.reg_write(A.UC_ARM64_REG_CP_REG, (*_SCTLR, cp.val))  # need the other kind of hook: done here
            self._rearm = True  # (1: skipped), then back to the run loop, which applies both before the next
            uc.emu_stop()  # instruction
            return 1
        if is_read and key == _MPIDR_EL1:  # VMPIDR_EL2: read without a trap
            uc.reg_write(reg, self.mpidr)
            return 1
        if is_read and key == ID_AA64DFR0_EL1:
            uc.reg_write(reg, self._vm.id_aa64dfr0())
            self._emulated = True  # KVM traps the ID registers (HCR_EL2.TID3)
            return 1
        if not self._guest.handles(key):
            return 0
        self._emulated = True  # KVM traps these (MDCR_EL2.TDA/TDOSA) and emulates them
        if is_read:
            uc.reg_write(reg, self._guest.read(key))
            return 1
        armed = self._guest.step_armed()
        if self._guest.write(key, cp.val) and self._control == 0:
            self._hooks_dirty = True  # the guest owns the hardware: its new point must be loaded
        if self._hooks_dirty or armed != self._guest.step_armed():
            self._rearm = True
            uc.emu_stop()  # back to the run loop: new hooks, or single-stepping starts or ends
        return 1

    def _on_sys(self, uc: Uc, reg: int, cp: Any, _ud: object) -> int:
        """SYS instructions (cheap: no hot loop runs them).  A TLB invalidation with watchpoints set and the
        MMU on re-translates the watched pages.  With several vCPUs, an instruction-cache invalidation (IC
        IVAU, IALLU, IALLUIS) makes every other vCPU drop its translated code before its next turn, which is
        what the architecture asks of code written for another CPU (unicorn sees only its own instance's
        stores to code).  Every SYS still runs natively (0)."""
        if cp.op0 == 1 and cp.crn == 8 and self._watches and self._mmu:  # TLBI: the guest remapped
            self._rearm = True  # something: take the watched pages' physical addresses again
            uc.emu_stop()
        if cp.op0 == 1 and cp.crn == 7 and (cp.op1, cp.crm, cp.op2) in ((3, 5, 1), (0, 5, 0), (0, 1, 0)):
            for core in self._vm._cores:
                if core is not self:
                    core._code_stale = True
        return 0

    # ---- guest debug ---------------------------------------------------------------------------
    def set_guest_debug(self, control: int, regs: DebugRegs | None) -> None:
        if not control & GUESTDBG_ENABLE:
            control = 0
        hw_before = self._control & GUESTDBG_USE_HW
        if control & GUESTDBG_USE_HW and regs is not None and regs != self._dbg:
            self._dbg = regs.copy()  # copied unchecked, as KVM does; slots past the count are never loaded
            self._hooks_dirty = True
        if (control & GUESTDBG_USE_HW) != hw_before or (control == 0) != (self._control == 0):
            self._hooks_dirty = True  # the world switch: the host's registers, the guest's, or none
        self._control = control  # SINGLESTEP alone needs no new hooks

    def _apply_hooks(self) -> None:
        """Turn the enabled debug registers into unicorn hooks and page protections.

        Breakpoints: a code hook on each address (free elsewhere).  Write watchpoints: each watched page
        is write-protected, which costs nothing until the guest writes to the page and gives a precise
        exit (the store never happens); a page the guest keeps writing outside the watched bytes
        (``_PROT_FALSE_HITS_MAX`` times) switches to a memory hook ranged to the watched bytes, which
        costs ~25% on every access but calls Python only for those bytes.  Read watchpoints always use
        a ranged hook.
        """
        uc = self._uc
        for h in self._hooks:
            uc.hook_del(h)
        self._hooks.clear()
        bps: dict[int, int] = {}
        guest_bps: dict[int, list[int]] = {}
        watches: list[_Watch] = []
        if self._control & GUESTDBG_USE_HW:  # the world switch loads the host's registers...
            for i in range(self.brps):
                addr = decode_breakpoint(self._dbg.bcr[i], self._dbg.bvr[i])
                if addr is not None:
                    bps[addr] = bps.get(addr, 0) | (self._dbg.bcr[i] >> 1) & 0b11
            for i in range(self.wrps):
                w = decode_watchpoint(self._dbg.wcr[i], self._dbg.wvr[i])
                if w is not None:
                    watches.append(w)
        elif self._control == 0:  # ...or, while nothing debugs the guest, its own (enabled at each hit)
            regs = self._guest.regs
            for i in range(self.brps):
                addr = decode_breakpoint(regs.bcr[i], regs.bvr[i], linked=True)
                if addr is not None:
                    guest_bps.setdefault(addr, []).append(i)
            for i in range(self.wrps):
                w = decode_watchpoint(regs.wcr[i], regs.wvr[i], guest_n=i)
                if w is not None:
                    watches.append(w)
        for addr in sorted(bps.keys() | guest_bps.keys()):
            self._hooks.append(uc.hook_add(UC_HOOK_CODE, self._on_breakpoint, begin=addr, end=addr))
        ram_end = self.ram_base + self.ram_size
        protect: dict[int, int] = {}  # page -> permissions taken away
        # with the MMU on, unicorn's memory hooks see physical addresses, and a watched virtual page may be
        # any physical one (another one after a TLBI): the watches become the physical bytes behind them
        # now, and stores are watched with ranged hooks instead of page protections
        mmu_on = self._mmu
        if mmu_on:
            watches = self._physical(watches)
        for w in watches:
            near = max(w.start - _HOOK_MARGIN, 0)
            if w.load:  # unicorn caches a page as readable once a read-protection hook lets a load through,
                # so loads are watched with a ranged hook on the watched bytes (and the margin below them)
                self._hooks.append(uc.hook_add(UC_HOOK_MEM_READ, self._on_access, begin=near, end=w.end - 1))
            if not w.store:
                continue
            if mmu_on:
                self._hooks.append(uc.hook_add(UC_HOOK_MEM_WRITE, self._on_access, begin=near, end=w.end - 1))
                continue
            lo, hi = max(w.start - _ACCESS_MARGIN, self.ram_base), min(w.end, ram_end)
            pages = range(lo & ~_PAGE_MASK, hi, _PAGE_SIZE) if lo < hi else range(0)
            for page in pages:
                if page not in self._hot_pages:
                    protect[page] = UC_PROT_WRITE
            # a busy page holding watched bytes gets a ranged hook; a busy page below them (protected
            # only to undo the lower part of an access crossing into them) is simply left alone
            if any(page in self._hot_pages and page + _PAGE_SIZE > w.start for page in pages):
                self._hooks.append(uc.hook_add(UC_HOOK_MEM_WRITE, self._on_access, begin=near, end=w.end - 1))
        # one mem_protect per run of adjacent pages: unicorn splits its region at every call, and page by
        # page a large watch (Z2 over all of RAM) would take hours (quadratic in the number of pages)
        for start, size in _page_runs(self._protected.keys() - protect.keys()):
            uc.mem_protect(start, size, UC_PROT_ALL)
        changed = [(page, taken) for page, taken in protect.items() if self._protected.get(page) != taken]
        for taken in {t for _, t in changed}:
            for start, size in _page_runs(page for page, t in changed if t == taken):
                uc.mem_protect(start, size, UC_PROT_ALL & ~taken)
        self._protected = protect
        self._hot_pages &= {
            pg for w in watches for pg in range(max(w.start - _ACCESS_MARGIN, 0) & ~_PAGE_MASK, w.end, _PAGE_SIZE)
        }
        self._false_hits.clear()
        self._bp_addrs = bps
        self._guest_bps = guest_bps
        self._watches = watches
        self._hooks_dirty = False
        if mmu_on and watches and self._sys_hook is None:  # a TLBI may move the watched pages (_on_sys);
            # otherwise SYS is not hooked: DC ZVA runs in memset loops
            self._sys_hook = uc.hook_add(UC_HOOK_INSN, self._on_sys, None, 1, 0, A.UC_ARM64_INS_SYS)
        if self._tlb_virtual != mmu_on:
            uc.ctl_set_tlb_mode(UC_TLB_VIRTUAL if mmu_on else UC_TLB_CPU)
            self._tlb_virtual = mmu_on
        # unicorn decides at translation time which blocks call hooks, and its TLB lets cached pages skip
        # memory hooks and protections: both caches must go when these change.
        uc.ctl_flush_tb()
        uc.ctl(UC_CTL_TLB_FLUSH, UC_CTL_IO_WRITE)

    # ---- hooks (run on the vCPU thread, only on events) ----------------------------------------
    def _stop(self, ex: Exit) -> None:
        if self._pending is None:
            self._pending = ex
        self._uc.emu_stop()

    def _guest_exception(self, esr: int, far: int | None = None) -> None:
        """A debug exception the guest takes itself: delivered by the run loop (after undoing a watched access)."""
        if self._guest_exc is None and self._pending is None:
            self._guest_exc = (esr, far)
        self._uc.emu_stop()

    def _on_breakpoint(self, uc: Uc, addr: int, size: int, _ud: object) -> None:
        if addr in self._guest_bps and self._guest_exc is None:
            pstate = uc.reg_read(A.UC_ARM64_REG_PSTATE)
            ctx = uc.reg_read(A.UC_ARM64_REG_CP_REG, _CONTEXTIDR)
            if any(self._guest.breakpoint_fires(n, pstate, ctx) for n in self._guest_bps[addr]):
                self._guest_exception(breakpoint_esr(pstate))
            return
        pmc = self._bp_addrs.get(addr, 0)
        if pmc and self._pending is None and pmc & (0b01 if (uc.reg_read(A.UC_ARM64_REG_PSTATE) >> 2) & 3 else 0b10):
            self._stop(Exit(ExitReason.DEBUG, esr=ESR_BREAKPOINT, far=self._far))

    def _journal_access(self, uc: Any, addr: int, size: int, write: bool) -> None:
        """Remember what one execution of one instruction overwrites, so a later hit by the same
        execution (the upper half of an stp) can undo the lower half.  An execution is known by its PC and
        general registers: a loop re-running one store changes some of them between executions, while an
        instruction changes none before its last access (QEMU loads a GPR pair through a temporary)."""
        key = self._keyfile.raw()
        if key != self._journal_key:
            self._journal_key = key
            self._journal_pc = uc.reg_read(A.UC_ARM64_REG_PC)
            # a load may write a vector register before its last access (ldp q0, q1): keep them all
            self._journal_regs = [] if write else self._regfile.read()
            self._journal.clear()
            self._journal_low = addr
        self._journal_low = min(self._journal_low, addr)
        if write:
            self._journal.append((addr, bytes(uc.mem_read(addr, size))))  # (hooks get physical addresses)

    def _watch_hit(self, uc: Any, addr: int, size: int, write: bool) -> bool:
        """Does this access hit an enabled watchpoint?  If so, record the exit as KVM reports it."""
        el = None
        end = addr + size
        for w in self._watches:
            if addr < w.end and w.start < end and (w.store if write else w.load):
                if w.guest_n >= 0:
                    pstate = uc.reg_read(A.UC_ARM64_REG_PSTATE)
                    ctx = uc.reg_read(A.UC_ARM64_REG_CP_REG, _CONTEXTIDR)
                    if self._guest_exc is not None or not self._guest.watchpoint_fires(w.guest_n, pstate, ctx):
                        continue
                    self._snapshot = uc.context_save()
                    self._guest_exception(watchpoint_esr(pstate, write), self._far_of(addr, w) + w.va_delta)
                    return True
                if el is None:
                    el = (uc.reg_read(A.UC_ARM64_REG_PSTATE) >> 2) & 3
                if not (w.el1 if el else w.el0):
                    continue
                policy = self._vm.far_policy
                if policy is FarPolicy.WATCHED:
                    far = max(addr, w.start)
                elif policy is FarPolicy.LOWEST:
                    far = self._journal_low
                else:
                    far = self._journal_low & ~0xF
                far = (far + w.va_delta) & _MASK64  # memory hooks see physical addresses; FAR is virtual
                self._far = far
                self._snapshot = uc.context_save()
                self._stop(Exit(ExitReason.DEBUG, esr=esr_watchpoint(write), far=far))
                return True
        return False

    def _far_of(self, addr: int, w: _Watch) -> int:
        policy = self._vm.far_policy
        if policy is FarPolicy.WATCHED:
            return max(addr, w.start)
        return self._journal_low if policy is FarPolicy.LOWEST else self._journal_low & ~0xF

    def _on_access(self, uc: Uc, access: int, addr: int, size: int, value: int, _ud: object) -> None:
        """Ranged memory hook (hot pages): called before the access, which lands anyway: undone later."""
        write = access == UC_MEM_WRITE
        self._journal_access(uc, addr, size, write)
        if self._pending is None:
            self._watch_hit(uc, addr, size, write)

    def _on_protection(self, uc: Uc, access: int, addr: int, size: int, value: int, _ud: object) -> bool:
        """A write to a write-protected (watched) page.  Returning False aborts it before it happens
        (a precise watchpoint exit); True lets it go on (unicorn then skips the write, so we do it)."""
        write = access == UC_MEM_WRITE_PROT
        if not write:
            return False  # only writes are watched through protection
        page = addr & ~_PAGE_MASK
        if page not in self._protected and (addr + size - 1) & ~_PAGE_MASK not in self._protected:
            return False  # a real protection fault: the guest's own business (not modelled)
        self._journal_access(uc, addr, size, write)
        if self._pending is None and self._guest_exc is None and self._watch_hit(uc, addr, size, write):
            return False
        if self._pending is not None or self._guest_exc is not None:
            return False
        if write:
            uc.mem_write(addr, (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little"))
        n = self._false_hits.get(page, 0) + 1
        self._false_hits[page] = n
        if n == _PROT_FALSE_HITS_MAX:
            self._hot_pages.add(page)  # this page is busy: a ranged hook is cheaper than faulting
            self._rearm = True
            uc.emu_stop()
        return True

    def _on_interrupt(self, uc: Uc, intno: int, _ud: object) -> None:
        pc = uc.reg_read(A.UC_ARM64_REG_PC)
        if intno == _EXCP_BKPT:
            insn = int.from_bytes(self._read_va(pc, 4), "little")
            esr = esr_brk64((insn >> 5) & 0xFFFF)
            if self._control & GUESTDBG_ENABLE:  # MDCR_EL2.TDE: every debug exception exits to userspace
                self._stop(Exit(ExitReason.DEBUG, esr=esr, far=self._far))
            elif not self._take_exception(esr, pc):
                self._stop(Exit(ExitReason.FAULT, signal=SIGTRAP, detail=f"BRK at {pc:#x} with no vectors"))
        elif intno in (_EXCP_HVC, _EXCP_SMC) and self._psci(uc, pc):  # pc: already after the call
            pass
        elif intno == _EXCP_UDEF and self._is_hvc0(pc) and self._psci(uc, pc + 4):
            pass
        elif intno == _EXCP_UDEF:
            if not self._take_exception(_IL, pc):  # EC 0x00: unknown reason; ELR = the instruction
                self._stop(Exit(ExitReason.FAULT, signal=SIGILL, detail=f"undefined instruction at {pc:#x}"))
        elif intno in (_EXCP_DATA_ABORT, _EXCP_PREFETCH_ABORT):
            self._stop(Exit(ExitReason.FAULT, signal=SIGSEGV, detail=f"abort at {pc:#x}"))
        elif intno == _EXCP_SWI:  # SVC: the preferred return address is the next instruction (pc already is)
            imm = (int.from_bytes(self._read_va(pc - 4, 4), "little") >> 5) & 0xFFFF
            if not self._take_exception(_esr(_EC_SVC64, imm), pc):
                self._stop(Exit(ExitReason.FAULT, signal=SIGILL, detail=f"SVC at {pc - 4:#x} with no vectors"))
        else:  # HVC/SMC that are not PSCI calls: UNDEFINED at EL1 without EL2/EL3 firmware to take them
            name = {_EXCP_HVC: "HVC", _EXCP_SMC: "SMC"}.get(intno, f"exception {intno}")
            if not self._take_exception(_IL, pc - 4):
                self._stop(Exit(ExitReason.FAULT, signal=SIGILL, detail=f"{name} at {pc - 4:#x} with no vectors"))

    def _is_hvc0(self, pc: int) -> bool:
        """`hvc #0`: undefined to unicorn, whose core has no EL2."""
        try:
            return int.from_bytes(self._read_va(pc, 4), "little") == 0xD4000002
        except (UcError, GuestMemoryError):
            return False

    def _psci(self, uc: Any, next_pc: int) -> bool:
        """KVM's in-kernel PSCI 0.2 for a call with a PSCI function id in w0: the result in x0, PC after the
        call.  False (nothing done) for other ids: the HVC/SMC stays UNDEFINED, as without EL2/EL3."""
        fn = uc.reg_read(A.UC_ARM64_REG_X0) & _MASK32
        if fn & ~0x1F not in (_PSCI_BASE32, _PSCI_BASE64):
            return False
        uc.reg_write(A.UC_ARM64_REG_PC, next_pc)
        if fn in (PSCI_SYSTEM_OFF, PSCI_SYSTEM_RESET):
            self._vm._system_off(self)
            self._stop(Exit(ExitReason.SHUTDOWN, status=0, detail="PSCI SYSTEM_OFF"))
            return True
        if fn == PSCI_CPU_OFF:
            self._off_request = True  # the run loop powers this vCPU off once emu_start returns
            uc.emu_stop()
            return True
        mask = _MASK32 if fn < _PSCI_BASE64 else _MASK64  # SMC32 calls take 32-bit arguments
        x1, x2, x3 = (uc.reg_read(r) & mask for r in (A.UC_ARM64_REG_X1, A.UC_ARM64_REG_X2, A.UC_ARM64_REG_X3))
        if fn == PSCI_VERSION:
            ret = 2  # 0.2
        elif fn in (PSCI_CPU_ON, PSCI_CPU_ON_64):
            ret = self._vm._cpu_on(x1, x2, x3)
        elif fn in (PSCI_AFFINITY_INFO, PSCI_AFFINITY_INFO_64):
            ret = self._vm._affinity_info(x1, x2)
        elif fn in (PSCI_CPU_SUSPEND, PSCI_CPU_SUSPEND_64):
            ret = PSCI_RET_SUCCESS  # KVM: a WFI (which returns at once here: no interrupts to wait for)
        elif fn == PSCI_MIGRATE_INFO_TYPE:
            ret = 2  # no Trusted OS
        else:
            ret = PSCI_RET_NOT_SUPPORTED
        uc.reg_write(A.UC_ARM64_REG_X0, ret & _MASK64)
        return True

    def _uart_read(self, uc: Uc, offset: int, size: int, _ud: object) -> int:
        self._emulated = True
        return 0  # FR (0x18) reads 0: transmit FIFO never full

    def _uart_write(self, uc: Uc, offset: int, size: int, value: int, _ud: object) -> None:
        self._emulated = True
        console = self._vm._console
        if offset == 0 and console is not None:
            console(bytes([value & 0xFF]))

    # ---- run -----------------------------------------------------------------------------------
    def run(self) -> Exit:
        sched = self._sched
        with self._lock:
            if self._kicked:
                self._kicked = False
                return Exit(ExitReason.INTERRUPTED, far=self._far)
            self._running = True
            if sched is not None:
                sched.enter(self.index)
        try:
            return self._run_once()
        finally:
            with self._lock:
                self._running = False
                self._kicked = False  # the stop served the kick
                if sched is not None:
                    sched.leave(self.index)

    def _run_once(self) -> Exit:
        uc = self._uc
        step = bool(self._control & GUESTDBG_SINGLESTEP)
        sched = self._sched
        quantum = 0 if sched is None else sched.quantum  # one vCPU runs uncounted until an event
        while True:
            if sched is not None:  # each pass of this loop is one turn
                if not sched.take_turn(self.index):
                    return Exit(ExitReason.INTERRUPTED, far=self._far)
                if self._code_stale:
                    self._code_stale = False
                    uc.ctl_flush_tb()
            elif not self.on:
                return self._sleep()
            if self._hooks_dirty or self._rearm:
                self._rearm = False
                self._apply_hooks()
            taken = self._sync_irq()
            if isinstance(taken, Exit):
                return taken
            if taken and step:  # entry cleared PSTATE.SS: the step exception comes before the vector's first
                return Exit(ExitReason.DEBUG, esr=ESR_SOFTSTEP_PENDING, far=self._far)
            self._pending = None
            self._guest_exc = None
            self._journal_pc = -1
            self._journal_key = b""
            self._journal.clear()
            self._snapshot = None
            # the guest single-steps itself (MDSCR_EL1.SS) only while nothing debugs it: KVM's external
            # MDSCR drops the guest's SS.  Python then runs once per instruction, as in a debugger's step.
            guest_step = self._control == 0 and self._guest.step_armed()
            one = step or guest_step
            if one and not self._last_was_step:
                uc.ctl_flush_tb()  # blocks translated without unicorn's instruction counter run on past 1
            self._last_was_step = one
            pc = uc.reg_read(A.UC_ARM64_REG_PC)
            self._emulated = False
            entries_before = self._exceptions
            active, eret_ss, entries = False, None, 0
            if guest_step:
                stepped = self._guest_step_prologue(pc)
                if isinstance(stepped, Exit):
                    return stepped
                if stepped is None:  # took the pending step exception instead of running
                    if self._was_kicked():
                        return Exit(ExitReason.INTERRUPTED, far=self._far)
                    continue
                active, eret_ss = stepped
                entries = self._exceptions
            self._fault_fetch = None  # (a lookup outside the run, e.g. unicorn's cache removal, does not count)
            try:
                uc.emu_start(pc, _NEVER, count=1 if one else quantum)
            except UcError as e:
                if self._pending is None and self._guest_exc is None:
                    if not self._took_translation_fault(e):
                        return self._fault(e)
                    if step:  # the abort's entry to the vectors cleared PSTATE.SS: the step ends there
                        return Exit(ExitReason.DEBUG, esr=ESR_SOFTSTEP_PENDING, far=self._far)
                    if self._was_kicked():
                        return Exit(ExitReason.INTERRUPTED, far=self._far)
                    continue
            ex = self._pending
            if ex is None and self._irq_poll and not (one and uc.reg_read(A.UC_ARM64_REG_PC) != pc):
                if self._was_kicked():  # stopped for an IRQ before the next instruction: the loop takes it
                    return Exit(ExitReason.INTERRUPTED, far=self._far)
                continue
            if ex is None and sched is None and not one and self._after_wfi():
                if not self._wait_for_interrupt():
                    return Exit(ExitReason.INTERRUPTED, far=self._far)
                continue
            if ex is None and self._off_request:  # PSCI CPU_OFF: sleep (next turn) until CPU_ON or a kick
                self._off_request = False
                with self._lock:
                    self.on = False
                continue
            if ex is None and self._guest_exc is not None:
                failed = self._deliver_guest_exception()
                if failed is not None:
                    return failed
                if self._was_kicked():
                    return Exit(ExitReason.INTERRUPTED, far=self._far)
                continue
            if ex is None and guest_step:
                if self._exceptions == entries:  # exception entry clears PSTATE.SS by itself
                    pstate = uc.reg_read(A.UC_ARM64_REG_PSTATE) & ~PSTATE_SS
                    if eret_ss is not None:  # ERET copies SPSR_EL1.SS into PSTATE.SS
                        uc.reg_write(A.UC_ARM64_REG_PSTATE, pstate | eret_ss)
                    elif active:  # one instruction done: the step exception is taken now, even after an
                        # instruction that masked debug exceptions (msr daifset): QEMU's IMPDEF choice,
                        # and what arm64 KVM shows on it (the emulated host's step at a6_start + 12)
                        uc.reg_write(A.UC_ARM64_REG_PSTATE, pstate)
                        if not self._take_exception(step_esr(pstate), uc.reg_read(A.UC_ARM64_REG_PC)):
                            detail = f"software step at {pc:#x}, no vectors"
                            return Exit(ExitReason.FAULT, signal=SIGTRAP, far=self._far, detail=detail)
                if self._was_kicked():
                    return Exit(ExitReason.INTERRUPTED, far=self._far)
                continue
            if ex is None and (self._rearm or sched is not None) and not step:
                if not self._was_kicked():
                    continue  # stopped only to load new hooks (a busy page, the guest's own points), or turn over
            break
        if ex is not None and ex.reason is ExitReason.DEBUG and ex.ec == EC_WATCHPT_LOW:
            self._undo_access()
        if ex is None:
            if step:
                # KVM's step after an instruction it emulated (kvm_incr_pc), or one that entered the
                # guest's vectors, is taken from active-pending state: ISS.ISV = 0 (hsr 0xca000022)
                pending = self._emulated or self._exceptions != entries_before
                return Exit(ExitReason.DEBUG, esr=ESR_SOFTSTEP_PENDING if pending else ESR_SOFTSTEP, far=self._far)
            return Exit(ExitReason.INTERRUPTED, far=self._far)
        return ex

    def _was_kicked(self) -> bool:
        with self._lock:
            return self._kicked

    # ---- the IRQ input (KVM_IRQ_LINE type CPU: no interrupt controller) -------------------------------
    def set_irq_line(self, level: bool) -> None:
        """Any thread: a rising line stops a running vCPU (as a kick does, with one vCPU; with several, at
        the end of its turn) so that its run loop takes the IRQ; a vCPU waiting in WFI wakes up."""
        with self._lock:
            if self._irq == level:
                return
            self._irq = level
            if not level:
                return
            self._irq_poll = True
            self._lock.notify_all()
            stop = self._running and self._sched is None
        if stop:
            self._stop_soon()

    def _sync_irq(self) -> bool | Exit:
        """At the top of each pass of the run loop: follow the line with the block hook (which notices the
        guest unmasking IRQs: MSR DAIFClr, MSR DAIF and ERET end a translated block), and take the IRQ if
        it is high and PSTATE.I clear: SPSR_EL1/ELR_EL1 (the next instruction), PC = VBAR_EL1 + 0x280
        (0x480 from EL0, 0x80 on SP_EL0), DAIF masked."""
        with self._lock:
            self._irq_poll = False
            line = self._irq
        uc = self._uc
        if line != (self._irq_hook is not None):
            if self._irq_hook is None:
                self._irq_hook = uc.hook_add(UC_HOOK_BLOCK, self._on_block_irq)
            else:
                uc.hook_del(self._irq_hook)
                self._irq_hook = None
            uc.ctl_flush_tb()  # unicorn decides at translation time which blocks call hooks
        if not line or uc.reg_read(A.UC_ARM64_REG_PSTATE) & _PSTATE_I:
            return False
        pc = uc.reg_read(A.UC_ARM64_REG_PC)
        if not self._take_exception(None, pc, kind=_VECTOR_IRQ):
            return Exit(ExitReason.FAULT, signal=SIGILL, far=self._far, detail=f"IRQ at {pc:#x} with no vectors")
        if self._control & GUESTDBG_SINGLESTEP:  # KVM stepping runs the guest with PSTATE.SS = 1: an IRQ
            # taken before the stepped instruction saves it (SPSR_EL1.SS = 1), so the ERET steps it again
            uc.reg_write(A.UC_ARM64_REG_CP_REG, (*_SPSR_EL1, self._get_extra("spsr_el1") | PSTATE_SS))
        return True

    def _on_block_irq(self, uc: Uc, addr: int, size: int, _ud: object) -> None:
        """Block hook while the line is high: once PSTATE.I is clear, stop before the block runs."""
        if not uc.reg_read(A.UC_ARM64_REG_PSTATE) & _PSTATE_I:
            self._irq_poll = True
            uc.emu_stop()

    def _after_wfi(self) -> bool:
        """Did an uncounted emu_start (one vCPU running freely) return because of a WFI?  Unicorn halts
        there with PC after it, and nothing else stops without a reason.  A WFI completes at once while
        stepping (the debugger's or the guest's own: what arm64 KVM on the emulated host's CPU shows, an
        architecturally allowed early wake-up) and with several vCPUs (a turn ends, the others run)."""
        if self._rearm or self._off_request or self._guest_exc is not None:
            return False
        uc = self._uc
        try:
            return int.from_bytes(self._read_va(uc.reg_read(A.UC_ARM64_REG_PC) - 4, 4), "little") == _WFI
        except (UcError, GuestMemoryError):
            return False

    def _wait_for_interrupt(self) -> bool:
        """WFI as KVM does it (kvm_vcpu_wfi): sleep until the IRQ line is high (True; masked or not, it
        wakes the WFI) or a kick (False: KVM_RUN returns EINTR, PC after the WFI)."""
        with self._lock:
            while not (self._irq or self._kicked):
                self._lock.wait()
            return self._irq

    def _sleep(self) -> Exit:
        """The only vCPU powered itself off (PSCI CPU_OFF): like KVM_RUN, sleep until a signal (a kick)."""
        with self._lock:
            while not self._kicked:
                self._lock.wait()
        return Exit(ExitReason.INTERRUPTED, far=self._far)

    def _guest_step_prologue(self, pc: int) -> tuple[bool, int | None] | Exit | None:
        """Software step of the guest's own (architecture 3.6): with PSTATE.SS = 0 (active-pending) the
        step exception is taken before any instruction (None); otherwise one instruction runs, and the
        caller needs whether the step was active and, for an ERET, the SPSR_EL1.SS it restores."""
        uc = self._uc
        pstate = uc.reg_read(A.UC_ARM64_REG_PSTATE)
        active = self._guest.step_active(pstate)
        if active and not pstate & PSTATE_SS:
            if not self._take_exception(step_esr(pstate), pc):
                detail = f"software step at {pc:#x}, no vectors"
                return Exit(ExitReason.FAULT, signal=SIGTRAP, far=self._far, detail=detail)
            return None
        try:
            eret = int.from_bytes(self._read_va(pc, 4), "little") == _ERET
        except (UcError, GuestMemoryError):
            eret = False
        eret_ss = self._get_extra("spsr_el1") & PSTATE_SS if eret else None
        return active, eret_ss

    def _deliver_guest_exception(self) -> Exit | None:
        """Enter the guest's vectors with the debug exception its own registers raised."""
        assert self._guest_exc is not None
        esr, far = self._guest_exc
        self._guest_exc = None
        if (esr >> 26) & 0x3E == EC_WATCHPT_LOW:
            self._undo_access()  # taken before the access, as on hardware: ELR is the load/store
        pc = self._uc.reg_read(A.UC_ARM64_REG_PC)
        if self._take_exception(esr, pc, far):
            return None
        return Exit(ExitReason.FAULT, signal=SIGTRAP, far=self._far, detail=f"debug exception at {pc:#x}, no vectors")

    def _undo_access(self) -> None:
        """A watchpoint is taken before the access: put back what the instruction changed."""
        if self._snapshot is not None:
            self._uc.context_restore(self._snapshot)
        if self._journal_regs:  # a load opened the journal: registers as they were before it
            for reg, value in zip(_REG_IDS, self._journal_regs, strict=True):
                self._uc.reg_write(reg, value)
        for addr, old in reversed(self._journal):
            self._uc.mem_write(addr, old)
        self._uc.reg_write(A.UC_ARM64_REG_PC, self._journal_pc)

    def _fault(self, e: UcError) -> Exit:
        pc = self._uc.reg_read(A.UC_ARM64_REG_PC)
        if e.errno in (UC_ERR_READ_UNMAPPED, UC_ERR_WRITE_UNMAPPED, UC_ERR_READ_PROT, UC_ERR_WRITE_PROT):
            return Exit(ExitReason.FAULT, signal=SIGSEGV, far=self._far, detail=f"data abort at pc {pc:#x}: {e}")
        if e.errno in (UC_ERR_FETCH_UNMAPPED, UC_ERR_FETCH_PROT):
            return Exit(ExitReason.FAULT, signal=SIGSEGV, far=self._far, detail=f"instruction abort at {pc:#x}: {e}")
        if e.errno in (UC_ERR_INSN_INVALID, UC_ERR_EXCEPTION):
            return Exit(ExitReason.FAULT, signal=SIGILL, far=self._far, detail=f"undefined instruction at {pc:#x}")
        return Exit(ExitReason.FAULT, signal=SIGBUS, far=self._far, detail=f"{e} at {pc:#x}")

    def kick(self) -> None:
        """Stop a running run() soon; emu_stop is retried until run() has seen it (closes the start race).

        With several vCPUs the kick takes effect at the end of the vCPU's turn (at most a quantum away),
        never through emu_stop: unicorn may honour an asynchronous stop inside a store and leave PC at the
        store it already made, which would make the store happen twice around the other vCPUs' turns."""
        sched = self._sched
        with self._lock:
            self._kicked = True
            running = self._running
            if sched is not None:
                sched.kicked(self.index)
                return
            self._lock.notify_all()  # the vCPU sleeping after CPU_OFF
        if running:
            self._stop_soon()

    def _stop_soon(self) -> None:
        self._uc.emu_stop()
        with self._lock:
            if self._retrier is None:  # one long-lived thread: starting one per kick costs ~0.1 ms
                self._retrier = threading.Thread(target=self._kick_retry, daemon=True, name="sim-kick")
                self._retrier.start()
        self._retry.set()

    def _kick_retry(self) -> None:
        """Repeat emu_stop while a kick (or a rising IRQ line) is unseen: one that lands just before
        emu_start is lost."""
        while True:
            self._retry.wait()
            self._retry.clear()
            for _ in range(5000):
                time.sleep(0.002)
                with self._lock:
                    if not ((self._kicked or self._irq_poll) and self._running):
                        break
                self._uc.emu_stop()


class _Scheduler:
    """Several vCPUs share the host CPU by turns: a deterministic round-robin (state guarded by the machine's
    lock, which the caller holds except in take_turn).

    A turn is one pass of a vCPU's run loop: one emu_start of at most ``quantum`` instructions (one while
    single-stepping), or less when a hook stops it.  The next turn goes to the first vCPU after the last
    turn's, in index order, that is powered on, inside run() and not kicked: only it executes, so the guest
    sees sequentially consistent memory and every unicorn instance runs only in its turn.

    Turns are handed out only while every powered-on vCPU is inside run(), or once no vCPU entered or left
    run() for ``gather`` seconds (a vCPU the debugger single-steps does not wait).  When one vCPU exits (a
    breakpoint, a fault), the others thus stop at the end of their last turn until the VMM kicks them
    (all-stop: a state independent of when the kicks land) or goes on without it; and when a VMM resumes
    every vCPU, the schedule does not depend on the order in which its threads enter run()."""

    def __init__(self, cores: list[_Core], lock: threading.Lock, quantum: int, gather: float) -> None:
        self.cores = cores
        self.quantum = quantum
        self.gather = gather
        self._lock = lock
        self._turns = [threading.Condition(lock) for _ in cores]  # one waiting thread each
        self._inside = [False] * len(cores)
        self._owner: int | None = None  # the vCPU whose turn it is (executing, or between two of its turns)
        self._last = len(cores) - 1  # the vCPU of the last turn: vCPU 0 goes first
        self._changed = time.monotonic()  # when a vCPU last entered or left run()

    def enter(self, k: int) -> None:
        self._inside[k] = True
        self._changed = time.monotonic()
        self._dispatch()

    def leave(self, k: int) -> None:
        self._inside[k] = False
        self._changed = time.monotonic()
        if self._owner == k:
            self._owner, self._last = None, k
        self._dispatch()

    def kicked(self, k: int) -> None:
        """vCPU k was kicked: wake it if it waits for its turn (its turn, if it has one, ends as usual)."""
        self._turns[k].notify()

    def take_turn(self, k: int) -> bool:
        """End vCPU k's turn if it has one and wait for its next; False if it was kicked meanwhile."""
        with self._lock:
            if self._owner == k:
                self._owner, self._last = None, k
            core = self.cores[k]
            while True:
                if core._kicked:
                    self._dispatch()
                    return False
                nxt, wait = self._next()
                if nxt == k:
                    self._owner = k
                    return True
                if nxt is not None:
                    self._turns[nxt].notify()
                self._turns[k].wait(wait)

    def _next(self) -> tuple[int | None, float | None]:
        """Whose turn it is now, or None and for how long (None: until something changes) to wait."""
        if self._owner is not None:
            return None, None
        cores, inside, n = self.cores, self._inside, len(self.cores)
        order = ((self._last + i) % n for i in range(1, n + 1))  # the last turn's vCPU comes last
        ready = [j for j in order if inside[j] and cores[j].on and not cores[j]._kicked]
        if not ready:
            return None, None
        if any(c.on and not inside[j] for j, c in enumerate(cores)):  # gather: wait a little for it
            wait = self._changed + self.gather - time.monotonic()
            if wait > 0:
                # ...but a vCPU the debugger single-steps goes at once: a step over a breakpoint, or with
                # gdb's scheduler-locking, runs it alone (and its one instruction exits again)
                for j in ready:
                    if cores[j]._control & GUESTDBG_SINGLESTEP:
                        return j, None
                return None, wait
        return ready[0], None

    def _dispatch(self) -> None:
        nxt, wait = self._next()
        if nxt is not None:
            self._turns[nxt].notify()
        elif wait is not None:
            for turn in self._turns:  # everyone waiting re-waits with the gathering's deadline
                turn.notify()


class SimBackend:
    """An arm64 machine on unicorn: 1..8 vCPUs (one unicorn instance each) sharing one guest RAM, with the
    KVM guest-debug interface of backends.api for each vCPU.

    vCPU 0 starts at the image entry, the others powered off until the guest starts them with PSCI CPU_ON
    (``hvc #0``/``smc #0``, KVM's in-kernel PSCI 0.2).  run() is called from one thread per vCPU, as KVM_RUN;
    with several vCPUs they take deterministic turns (_Scheduler), a vCPU that is off sleeps in run() until
    CPU_ON or a kick.  One vCPU runs as a single core always did: no turns, no instruction counting."""

    def __init__(
        self,
        image: Image | None = None,
        *,
        ram_base: int = RAM_BASE,
        ram_size: int = 128 << 20,
        brps: int = 6,
        wrps: int = 4,
        far_policy: FarPolicy = FarPolicy.WATCHED,
        console: ConsoleSink | None = None,
        guest_debug_flags: int = GUESTDBG_VALID_MASK,
        cpus: int = 1,
    ) -> None:
        if not 2 <= brps <= MAX_DBG_REGS or not 2 <= wrps <= MAX_DBG_REGS:
            raise BackendError("BRP and WRP counts must be 2..16")
        if ram_size <= 0 or ram_size % 0x1000:
            raise BackendError("RAM size must be a positive multiple of 4 KiB")
        if not 1 <= cpus <= MAX_CPUS:
            raise BackendError(f"vCPU count must be 1..{MAX_CPUS}")
        self.ram_base, self.ram_size = ram_base, ram_size
        self.brps, self.wrps = brps, wrps
        self.far_policy = far_policy
        if guest_debug_flags & ~GUESTDBG_VALID_MASK or not guest_debug_flags & GUESTDBG_ENABLE:
            raise BackendError(f"guest-debug control mask {guest_debug_flags:#x}: ENABLE and a subset of 0x30003")
        self.guest_debug_flags = guest_debug_flags  # KVM_CAP_SET_GUEST_DEBUG2's answer (KVM_GUESTDBG_VALID_MASK)
        self._console = console
        self._ram = mmap.mmap(-1, ram_size)
        self._ram_view = memoryview(self._ram)
        host = ctypes.addressof(ctypes.c_char.from_buffer(self._ram))
        lock = threading.Lock()
        self._cv = threading.Condition(lock)
        self._cores = [_Core(self, i, host) for i in range(cpus)]
        self._sched = _Scheduler(self._cores, lock, SMP_QUANTUM, SMP_GATHER) if cpus > 1 else None
        for core in self._cores:
            core._sched = self._sched
            if cpus > 1:  # one vCPU's own stores to code are seen by unicorn; another's need an IC
                core._sys_hook = core._uc.hook_add(UC_HOOK_INSN, core._on_sys, None, 1, 0, A.UC_ARM64_INS_SYS)
        self._uart_line = bytearray()
        if image is not None:
            self.load(image)

    # ---- set-up -------------------------------------------------------------------------------
    def load(self, image: Image) -> None:
        for seg in image.segments:
            if seg.addr < self.ram_base or seg.addr + seg.memsize > self.ram_base + self.ram_size:
                raise BackendError(
                    f"segment at {seg.addr:#x}+{seg.memsize:#x} lies outside guest RAM "
                    f"{self.ram_base:#x}+{self.ram_size:#x}"
                )
        boot = self._cores[0]
        for seg in image.segments:
            data = seg.data + bytes(seg.memsize - len(seg.data))
            boot._uc.mem_write(seg.addr, data)
            for core in self._cores[1:]:
                core._uc.ctl_remove_cache(seg.addr, seg.addr + len(data))
        boot._uc.reg_write(A.UC_ARM64_REG_PC, image.entry)
        boot._uc.reg_write(A.UC_ARM64_REG_PSTATE, 0x3C5)  # EL1h, DAIF masked: KVM's vcpu reset state

    def capabilities(self) -> Capabilities:
        dfr0 = self.id_aa64dfr0()  # KVM_CAP_GUEST_DEBUG_HW_BPS/WPS: the ID register's fields + 1
        notes: tuple[str, ...] = (
            "simulated core (unicorn): the debugger's breakpoints BT=0000 unlinked address match, "
            "watchpoints WT=0 (linked types are accepted and never fire); the guest's own also "
            "linked (BT=0001 to the context-aware BRPs, the highest CTX_CMPs+1), OS lock, software step",
            "configurable: BRP/WRP counts (so ID_AA64DFR0_EL1), FAR policy, guest-debug control mask",
        )
        if len(self._cores) > 1:
            notes += (
                f"{len(self._cores)} vCPUs (PSCI 0.2 CPU_ON/CPU_OFF), run by turns of {SMP_QUANTUM} instructions "
                "in a deterministic round-robin; code one vCPU writes reaches the others after an IC invalidate",
            )
        return Capabilities(
            arch="aarch64",
            hw_breakpoints=((dfr0 >> 12) & 0xF) + 1,
            hw_watchpoints=((dfr0 >> 20) & 0xF) + 1,
            guest_debug_flags=self.guest_debug_flags,
            vcpus=len(self._cores),
            debug_id=dfr0,
            far_policy=self.far_policy.value,
            irq_line=True,
            notes=notes,
        )

    def id_aa64dfr0(self) -> int:
        """ID_AA64DFR0_EL1 as the guest would read it: DebugVer 8.2, BRPs/WRPs fields hold count-1."""
        return 0x8 | (self.brps - 1) << 12 | (self.wrps - 1) << 20 | 1 << 28

    def _core(self, vcpu: int) -> _Core:
        if not 0 <= vcpu < len(self._cores):
            raise BackendError(f"no vCPU {vcpu}: the machine has {len(self._cores)}")
        return self._cores[vcpu]

    # ---- memory and registers ------------------------------------------------------------------
    def _check_range(self, addr: int, size: int) -> None:
        if size < 0 or addr < self.ram_base or addr + size > self.ram_base + self.ram_size:
            raise GuestMemoryError(f"{addr:#x}+{size:#x} is outside guest memory")

    def read_memory(self, addr: int, size: int) -> bytes:
        self._check_range(addr, size)
        off = addr - self.ram_base
        return bytes(self._ram_view[off : off + size])

    def write_memory(self, addr: int, data: bytes) -> None:
        self._check_range(addr, len(data))
        self._cores[0]._uc.mem_write(addr, bytes(data))
        if data:  # unicorn keeps translated code: drop any block built from the old bytes, on every vCPU
            for core in self._cores:
                core._uc.ctl_remove_cache(addr, addr + len(data))

    def translate(self, addr: int, vcpu: int = 0) -> int:
        return self._core(vcpu).translate(addr)

    def get_regs(self, vcpu: int = 0) -> dict[str, int]:
        return self._core(vcpu).get_regs()

    def get_reg(self, name: str, vcpu: int = 0) -> int:
        return self._core(vcpu).get_reg(name)

    def set_regs(self, regs: dict[str, int], vcpu: int = 0) -> None:
        self._core(vcpu).set_regs(regs)

    # ---- guest debug ---------------------------------------------------------------------------
    def set_guest_debug(self, control: int, regs: DebugRegs | X86DebugRegs | None = None, vcpu: int = 0) -> None:
        """KVM_SET_GUEST_DEBUG on one vCPU: the others keep their own."""
        core = self._core(vcpu)
        if regs is not None and not isinstance(regs, DebugRegs):
            raise BackendError("an arm64 core takes arm64 debug registers (DebugRegs)")
        if control & ~self.guest_debug_flags:
            raise BackendError(f"invalid guest-debug control bits {control & ~self.guest_debug_flags:#x} (EINVAL)")
        core.set_guest_debug(control, regs)

    # ---- PSCI (called by a vCPU's hook, in its turn) ---------------------------------------------
    def _find_mpidr(self, mpidr: int) -> _Core | None:
        for core in self._cores:
            if core.mpidr & _MPIDR_HWID_BITMASK == mpidr:
                return core
        return None

    def _cpu_on(self, mpidr: int, entry: int, context_id: int) -> int:
        """PSCI CPU_ON as KVM's kvm_psci_vcpu_on: the target by MPIDR affinity, reset at ``entry``."""
        target = None if mpidr & ~_MPIDR_HWID_BITMASK else self._find_mpidr(mpidr)
        if target is None:
            return PSCI_RET_INVALID_PARAMS
        with self._cv:
            if target.on:
                return PSCI_RET_ALREADY_ON
            target.power_on(entry, context_id)  # it is not executing: it is off
        return PSCI_RET_SUCCESS

    def _affinity_info(self, affinity: int, level: int) -> int:
        """PSCI AFFINITY_INFO: 0 (ON) if any vCPU of the affinity instance is on, else 1 (OFF)."""
        if level > 3:
            return PSCI_RET_INVALID_PARAMS
        mask = _MPIDR_HWID_BITMASK & ~((1 << (8 * level if level < 3 else 32)) - 1)
        on = any(c.on and c.mpidr & mask == affinity & mask for c in self._cores)
        return 0 if on else 1

    def _system_off(self, caller: _Core) -> None:
        """PSCI SYSTEM_OFF/RESET: the other vCPUs stop for good (KVM powers them off); the caller exits."""
        with self._cv:
            for core in self._cores:
                if core is not caller:
                    core.on = False

    # ---- run -----------------------------------------------------------------------------------
    def run(self, vcpu: int = 0) -> Exit:
        return self._core(vcpu).run()

    def kick(self, vcpu: int = 0) -> None:
        self._core(vcpu).kick()

    def set_irq_line(self, level: bool, vcpu: int = 0) -> None:
        self._core(vcpu).set_irq_line(bool(level))

    def close(self) -> None:
        """Unmaps the guest; the backend is unusable afterwards."""
        for core in self._cores:
            core._uc.mem_unmap(self.ram_base, self.ram_size)
        self._ram_view.release()
        self._ram.close()
