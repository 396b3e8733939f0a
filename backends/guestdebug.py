"""The guest's own debug state in the simulated core: what KVM keeps in vcpu_debug_state.

KVM traps the guest's MRS/MSR to the debug registers (MDCR_EL2.TDA, TDOSA) whenever the host owns
them, and always emulates the OS lock; the guest then reads back exactly what it wrote, never the
host's values nor the MDE/KDE/SS bits KVM forces into the external MDSCR_EL1.  The simulated core
traps every access and keeps this copy, so the guest's view is the same whoever owns the hardware;
``SimBackend`` loads the guest's breakpoints and watchpoints into its hooks only while nothing
debugs the guest (KVM's world switch) and asks this module whether each hit is enabled.

Registers are named by their encoding (op0, op1, CRn, CRm, op2), as MRS/MSR and unicorn give them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from backends.api import MAX_DBG_REGS, DebugRegs

SysReg = tuple[int, int, int, int, int]  # (op0, op1, CRn, CRm, op2)

MDSCR_EL1: SysReg = (2, 0, 0, 2, 2)
OSLAR_EL1: SysReg = (2, 0, 1, 0, 4)
OSLSR_EL1: SysReg = (2, 0, 1, 1, 4)
OSDLR_EL1: SysReg = (2, 0, 1, 3, 4)
MDCCINT_EL1: SysReg = (2, 0, 0, 2, 0)
ID_AA64DFR0_EL1: SysReg = (3, 0, 0, 5, 0)
CONTEXTIDR_EL1: SysReg = (3, 0, 13, 0, 1)
_KIND_OF_OP2 = {4: "bvr", 5: "bcr", 6: "wvr", 7: "wcr"}  # DBG{B,W}{V,C}R<n>_EL1 = (2, 0, 0, n, op2)

MDSCR_SS = 1 << 0
MDSCR_KDE = 1 << 13
MDSCR_MDE = 1 << 15
OSLSR_OSLM = 1 << 3  # OSLM = 0b10: the OS lock is implemented
OSLSR_OSLK = 1 << 1
PSTATE_SS = 1 << 21
PSTATE_D = 1 << 9

# Exception classes of the debug exceptions the guest takes itself (from EL0 = "lower", EL1 = "current").
EC_BREAKPT_CUR = 0x31
EC_SOFTSTP_CUR = 0x33
EC_WATCHPT_CUR = 0x35
_IL = 1 << 25
_DFSC_DEBUG = 0x22


def debug_reg(key: SysReg) -> tuple[str, int] | None:
    """("bcr", n) etc. for DBGBCR<n>_EL1 and friends, else None."""
    op0, op1, crn, crm, op2 = key
    if op0 == 2 and op1 == 0 and crn == 0 and op2 in _KIND_OF_OP2:
        return _KIND_OF_OP2[op2], crm
    return None


def debug_reg_names() -> dict[str, SysReg]:
    """ONE_REG-style names of the trapped registers (``dbgbcr0_el1``, ``mdscr_el1``...)."""
    names = {f"dbg{kind}{n}_el1": (2, 0, 0, n, op2) for op2, kind in _KIND_OF_OP2.items() for n in range(16)}
    names.update({"mdscr_el1": MDSCR_EL1, "oslsr_el1": OSLSR_EL1, "osdlr_el1": OSDLR_EL1, "mdccint_el1": MDCCINT_EL1})
    return names


def esr(ec: int, iss: int) -> int:
    return (ec << 26) | _IL | iss


@dataclass
class GuestDebugState:
    """KVM's vcpu_debug_state plus the OS-lock and MDSCR_EL1 registers it emulates, as reset by KVM
    (everything zero, the OS lock implemented and unlocked)."""

    regs: DebugRegs = field(default_factory=DebugRegs)
    mdscr: int = 0
    oslsr: int = OSLSR_OSLM
    osdlr: int = 0
    mdccint: int = 0
    ctx_first: int = 0  # the first context-aware breakpoint: only those match CONTEXTIDR_EL1

    # ---- trapped MRS/MSR ---------------------------------------------------------------------
    def handles(self, key: SysReg) -> bool:
        return debug_reg(key) is not None or key in (MDSCR_EL1, OSLAR_EL1, OSLSR_EL1, OSDLR_EL1, MDCCINT_EL1)

    def read(self, key: SysReg) -> int:
        reg = debug_reg(key)
        if reg is not None:
            kind, n = reg
            return int(getattr(self.regs, kind)[n])
        return {MDSCR_EL1: self.mdscr, OSLSR_EL1: self.oslsr, OSDLR_EL1: self.osdlr, MDCCINT_EL1: self.mdccint}.get(
            key, 0
        )  # OSLAR_EL1 is write-only: reads as 0 here (UNDEFINED on hardware)

    def write(self, key: SysReg, value: int) -> bool:
        """Store a guest MSR; True if it changed a breakpoint or watchpoint (the hooks must follow)."""
        reg = debug_reg(key)
        if reg is not None:
            kind, n = reg
            values = getattr(self.regs, kind)
            value &= (1 << 64) - 1 if kind.endswith("vr") else (1 << 32) - 1
            changed = values[n] != value
            values[n] = value
            return bool(changed)
        if key == MDSCR_EL1:
            self.mdscr = value & 0xFFFF_FFFF
        elif key == OSLAR_EL1:
            self.oslsr = (self.oslsr & ~OSLSR_OSLK) | (OSLSR_OSLK if value & 1 else 0)
        elif key == OSDLR_EL1:
            self.osdlr = value & 1
        elif key == MDCCINT_EL1:
            self.mdccint = value & 0xFFFF_FFFF
        return False

    # ---- the architecture's gates ---------------------------------------------------------
    @property
    def os_locked(self) -> bool:
        return bool(self.oslsr & OSLSR_OSLK)

    def enabled_at(self, pstate: int) -> bool:
        """Debug exceptions targeting EL1 from the current state: blocked by the OS lock (and the
        double lock), always on from EL0, and from EL1 only with MDSCR.KDE set and PSTATE.D clear."""
        if self.os_locked or self.osdlr & 1:
            return False
        if (pstate >> 2) & 3 == 0:
            return True
        return bool(self.mdscr & MDSCR_KDE) and not pstate & PSTATE_D

    def step_armed(self) -> bool:
        """MDSCR_EL1.SS: the guest single-steps itself (the core then runs it one instruction at a time)."""
        return bool(self.mdscr & MDSCR_SS)

    def _context_matches(self, lbn: int, contextidr: int) -> bool:
        """A linked address breakpoint or watchpoint fires only while breakpoint LBN, an enabled
        linked context-ID match (BT=0b0011), matches CONTEXTIDR_EL1."""
        if not self.ctx_first <= lbn < MAX_DBG_REGS:
            return False
        bcr = self.regs.bcr[lbn]
        return bool(bcr & 1) and (bcr >> 20) & 0xF == 0b0011 and self.regs.bvr[lbn] & 0xFFFF_FFFF == contextidr

    @staticmethod
    def _privilege_ok(ctrl: int, pstate: int) -> bool:
        pmc = (ctrl >> 1) & 0b11  # bit 0: EL1, bit 1: EL0
        return bool(pmc & (0b01 if (pstate >> 2) & 3 else 0b10))

    def breakpoint_fires(self, n: int, pstate: int, contextidr: int) -> bool:
        """Breakpoint n (whose address matched) generates an exception now."""
        bcr = self.regs.bcr[n]
        if not (self.mdscr & MDSCR_MDE and self.enabled_at(pstate) and bcr & 1 and self._privilege_ok(bcr, pstate)):
            return False
        bt = (bcr >> 20) & 0xF
        if bt == 0b0000:
            return True
        return bt == 0b0001 and self._context_matches((bcr >> 16) & 0xF, contextidr)

    def watchpoint_fires(self, n: int, pstate: int, contextidr: int) -> bool:
        """Watchpoint n (whose bytes and access kind matched) generates an exception now."""
        wcr = self.regs.wcr[n]
        if not (self.mdscr & MDSCR_MDE and self.enabled_at(pstate) and wcr & 1 and self._privilege_ok(wcr, pstate)):
            return False
        return not (wcr >> 20) & 1 or self._context_matches((wcr >> 16) & 0xF, contextidr)

    def step_active(self, pstate: int) -> bool:
        return self.step_armed() and self.enabled_at(pstate)


def exception_class(cur: int, pstate: int) -> int:
    """EC for a debug exception taken to EL1: the "current EL" class from EL1, the "lower EL" one from EL0."""
    return cur if (pstate >> 2) & 3 else cur - 1


def breakpoint_esr(pstate: int) -> int:
    return esr(exception_class(EC_BREAKPT_CUR, pstate), _DFSC_DEBUG)


def watchpoint_esr(pstate: int, write: bool) -> int:
    return esr(exception_class(EC_WATCHPT_CUR, pstate), (0x40 if write else 0) | _DFSC_DEBUG)


def step_esr(pstate: int) -> int:
    return esr(exception_class(EC_SOFTSTP_CUR, pstate), (1 << 24) | _DFSC_DEBUG)  # ISV=1, EX=0
