// debug_exceptions.S - the guest of the "guest owns its debug registers" scenarios (tests/scenarios/).
//
// Bare-metal arm64 at EL1, MMU off, linked at 0x40000000 (guests/README.md).  Modelled on what the
// kernel's KVM selftest arm64/debug-exceptions.c checks (kvm-hw-debug.md 7.A and 7.B), written anew.
//
// Every global label `aN_*`, `b_*`, `c*_*` is a scenario entry: the driver points PC at it and runs.
// Each one sets up a stack, its vector table and a clean debug state (`setup`), does its test, and
// powers off through PSCI SYSTEM_OFF (`done`).  The guest's exception handler records what it saw in
// `results` (layout below), which the driver reads afterwards:
//
//   0x00 brk_count   0x08 brk_elr        EC 0x3c: ELR += 4 (skip the brk)
//   0x10 bp_count    0x18 bp_elr         EC 0x30/0x31: SPSR.D = 1 (the instruction runs on return)
//   0x20 wp_count    0x28 wp_elr   0x30 wp_far   EC 0x34/0x35: SPSR.D = 1 (the access is re-done)
//   0x38 svc_count   0x40 svc_elr        EC 0x15
//   0x48 ss_count    0x50 ss_elr[4]      EC 0x32/0x33: SPSR.SS = 1 (step one more instruction)
//   0x70 unexpected  (the first ESR of any other exception; its instruction is skipped)
//   0x78 value0      0x80 value1         scenario-specific values the guest read back
//   0x88 log_n       0x90 log[8]         the EC of every exception, in order
//   0xd0 irq_count   0xd8 irq_elr  0xe0 irq_spsr   IRQ (VBAR_EL1 + 0x280): SPSR.I = 1 (return masked)
//
// `brk #0x5501` (SIGNAL) in the b_/c*_ scenarios is a signal to a debugger that has set guest debug:
// the BRK exits to userspace (MDCR_EL2.TDE) and the driver moves PC past it.

    .equ    PSCI_SYSTEM_OFF, 0x84000008
    .equ    SIGNAL, 0x5501
    .equ    BCR_EL1, 0x1e3              // E | PMC = EL1 | BAS = 0xf
    .equ    WCR_EL1_RW, 0x1ffb          // E | PAC = EL1 | LSC = load+store | BAS = 0xff
    .equ    BT_LINKED_ADDR, 0x1 << 20
    .equ    BT_LINKED_CTX, 0x3 << 20
    .equ    WT_LINKED, 0x1 << 20
    .equ    CTX, 0xabcdef
    .equ    MDSCR_SS, 0x1
    .equ    MDSCR_KDE, 0x2000
    .equ    MDSCR_MDE, 0x8000
    .equ    SPSR_D, 0x200
    .equ    SPSR_SS, 0x200000
    .equ    SPSR_I, 0x80

    .equ    BRK_COUNT, 0x00
    .equ    BRK_ELR, 0x08
    .equ    BP_COUNT, 0x10
    .equ    BP_ELR, 0x18
    .equ    WP_COUNT, 0x20
    .equ    WP_ELR, 0x28
    .equ    WP_FAR, 0x30
    .equ    SVC_COUNT, 0x38
    .equ    SVC_ELR, 0x40
    .equ    SS_COUNT, 0x48
    .equ    SS_ELR, 0x50
    .equ    UNEXPECTED, 0x70
    .equ    VALUE0, 0x78
    .equ    VALUE1, 0x80
    .equ    LOG_N, 0x88
    .equ    LOG, 0x90
    .equ    IRQ_COUNT, 0xd0
    .equ    IRQ_ELR, 0xd8
    .equ    IRQ_SPSR, 0xe0
    .equ    RESULTS_SIZE, 0xe8

    .macro  adr_l reg, sym
    adrp    \reg, \sym
    add     \reg, \reg, :lo12:\sym
    .endm

    .macro  scenario name
    .globl  \name
    .type   \name, %function
\name:
    adr_l   x0, stack_top
    mov     sp, x0
    bl      setup
    .endm

    .macro  mov32 reg, imm
    movz    \reg, #((\imm) & 0xffff)
    movk    \reg, #(((\imm) >> 16) & 0xffff), lsl #16
    .endm

    .macro  incr off
    ldr     x0, [x16, #\off]
    add     x0, x0, #1
    str     x0, [x16, #\off]
    .endm

    .macro  set_spsr bits
    mrs     x0, spsr_el1
    orr     x0, x0, #\bits
    msr     spsr_el1, x0
    .endm

    // unmask debug exceptions at EL1 and set MDSCR_EL1 bits (KDE|MDE, or KDE|SS)
    .macro  enable_debug bits
    msr     daifclr, #8
    mrs     x0, mdscr_el1
    mov     x1, #(\bits)
    orr     x0, x0, x1
    msr     mdscr_el1, x0
    isb
    .endm

// ---------------------------------------------------------------- code
    .text
    .balign 4

    .globl  _start
    .type   _start, %function
_start:                                 // no scenario: power off
    b       done
    .size   _start, . - _start

// clean state, as the selftest's reset_debug_state(): OS lock and double lock off, MDSCR 0, context
// 0, the breakpoints and watchpoints the scenarios use cleared; results zeroed; x16 = results.
setup:
    adr_l   x0, vectors
    msr     vbar_el1, x0
    adr_l   x16, results
    mov     x0, #0
1:  str     xzr, [x16, x0]
    add     x0, x0, #8
    cmp     x0, #RESULTS_SIZE
    b.ne    1b
    msr     osdlr_el1, xzr
    msr     oslar_el1, xzr
    msr     mdscr_el1, xzr
    msr     contextidr_el1, xzr
    msr     dbgbcr0_el1, xzr
    msr     dbgbvr0_el1, xzr
    msr     dbgbcr1_el1, xzr
    msr     dbgbvr1_el1, xzr
    msr     dbgwcr0_el1, xzr
    msr     dbgwvr0_el1, xzr
    msr     dbgwcr1_el1, xzr
    msr     dbgwvr1_el1, xzr
    mov     x9, x30
    bl      ctx_bp_index
    mov     x0, #0
    mov     x3, #0
    bl      set_bp
    isb
    ret     x9

// x2 = the highest-numbered breakpoint, which is context-aware (ID_AA64DFR0_EL1.BRPs: the context-aware
// ones are the last CTX_CMPs + 1)
ctx_bp_index:
    mrs     x2, id_aa64dfr0_el1
    ubfx    x2, x2, #12, #4
    ret

// DBGBCR<x2>_EL1 = x0, DBGBVR<x2>_EL1 = x3 (MSR names its register: one table entry per n)
set_bp:
    adr     x4, 1f
    add     x4, x4, x2, lsl #4
    br      x4
    .balign 16
1:
    .irp    n, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15
    msr     dbgbvr\n\()_el1, x3
    msr     dbgbcr\n\()_el1, x0
    ret
    nop
    .endr

    .globl  done
    .type   done, %function
done:
    movz    x0, #(PSCI_SYSTEM_OFF & 0xffff)
    movk    x0, #(PSCI_SYSTEM_OFF >> 16), lsl #16
    hvc     #0
    b       .
    .size   done, . - done

// ---- A: the guest owns its debug registers -------------------------------------------------------

// A1: its own BRK goes to its EC 0x3c handler with ELR = the brk
    scenario a1_brk
    .globl  a1_insn
a1_insn:
    brk     #0
    b       done

// A2: a hardware breakpoint on a nop: EC 0x31, ELR = the nop; the nop then runs (SPSR.D)
    scenario a2_hw_bp
    adr_l   x0, a2_nop
    msr     dbgbvr0_el1, x0
    mov     x0, #BCR_EL1
    msr     dbgbcr0_el1, x0
    isb
    enable_debug (MDSCR_KDE|MDSCR_MDE)
    .globl  a2_nop
a2_nop:
    nop
    b       done

// A3: a breakpoint on svc fires first (ELR = svc), then the SVC (ELR = svc + 4)
    scenario a3_bp_svc
    adr_l   x0, a3_svc
    msr     dbgbvr0_el1, x0
    mov     x0, #BCR_EL1
    msr     dbgbcr0_el1, x0
    isb
    enable_debug (MDSCR_KDE|MDSCR_MDE)
    .globl  a3_svc
a3_svc:
    svc     #0
    b       done

// A4: a breakpoint on brk fires first, then the brk; both at the same PC
    scenario a4_bp_brk
    adr_l   x0, a4_brk
    msr     dbgbvr0_el1, x0
    mov     x0, #BCR_EL1
    msr     dbgbcr0_el1, x0
    isb
    enable_debug (MDSCR_KDE|MDSCR_MDE)
    .globl  a4_brk
a4_brk:
    brk     #0
    b       done

// A5: a watchpoint on a byte: EC 0x35 with FAR = &write_data; the store is then re-done
    scenario a5_wp
    adr_l   x0, write_data
    msr     dbgwvr0_el1, x0
    mov     x0, #WCR_EL1_RW
    msr     dbgwcr0_el1, x0
    isb
    enable_debug (MDSCR_KDE|MDSCR_MDE)
    adr_l   x2, write_data
    mov     w1, #'x'
    .globl  a5_store
a5_store:
    strb    w1, [x2]
    b       done

// A6: single step: step exceptions at a6_start, +4, +8; `msr daifset` (mask D) ends it
    scenario a6_ss
    enable_debug (MDSCR_KDE|MDSCR_SS)
    str     xzr, [x16, #SS_COUNT]       // the steps up to here do not count
    .globl  a6_start
a6_start:
    mrs     x0, esr_el1
    add     x0, x0, #1
    msr     daifset, #8
    b       done

// A7: the OS lock does not block BRK (and OSLSR_EL1.OSLK reads 1: value0)
    scenario a7_oslock_brk
    mov     x0, #1
    msr     oslar_el1, x0
    isb
    mrs     x0, oslsr_el1
    str     x0, [x16, #VALUE0]
    .globl  a7_brk
a7_brk:
    brk     #0
    b       done

// A8: the OS lock blocks the breakpoint, the watchpoint (the store lands) and single step
    scenario a8_oslock_blocks
    adr_l   x0, a8_nop
    msr     dbgbvr0_el1, x0
    mov     x0, #BCR_EL1
    msr     dbgbcr0_el1, x0
    adr_l   x0, write_data
    msr     dbgwvr0_el1, x0
    mov     x0, #WCR_EL1_RW
    msr     dbgwcr0_el1, x0
    mov     x0, #1
    msr     oslar_el1, x0
    isb
    enable_debug (MDSCR_KDE|MDSCR_MDE)
    .globl  a8_nop
a8_nop:
    nop
    adr_l   x2, write_data
    mov     w1, #'x'
    strb    w1, [x2]
    enable_debug (MDSCR_KDE|MDSCR_MDE|MDSCR_SS)
    nop
    nop
    b       done

// A9: an address breakpoint linked to a context breakpoint (the highest-numbered) fires only while CONTEXTIDR_EL1 matches:
// two passes over a9_nop, the first with CONTEXTIDR = CTX, the second with 0
    scenario a9_linked_bp
    bl      ctx_bp_index                // x2 = the context breakpoint
    mov32   x3, CTX
    mov32   x0, (BCR_EL1|BT_LINKED_CTX)
    bl      set_bp
    adr_l   x0, a9_nop
    msr     dbgbvr0_el1, x0
    mov32   x0, (BCR_EL1|BT_LINKED_ADDR)
    orr     x0, x0, x2, lsl #16         // LBN = the context breakpoint
    msr     dbgbcr0_el1, x0
    isb
    enable_debug (MDSCR_KDE|MDSCR_MDE)
    mov     x2, #2
1:  msr     daifclr, #8                 // the handler masked D for the return
    cmp     x2, #2
    csel    x0, x3, xzr, eq
    msr     contextidr_el1, x0
    isb
    .globl  a9_nop
a9_nop:
    nop
    subs    x2, x2, #1
    b.ne    1b
    b       done

// A10: a watchpoint linked to a context breakpoint: fires (FAR = &write_data) only while CONTEXTIDR
// matches: two stores, 'x' with CONTEXTIDR = CTX, then 'y' with 0
    scenario a10_linked_wp
    bl      ctx_bp_index
    mov32   x3, CTX
    mov32   x0, (BCR_EL1|BT_LINKED_CTX)
    bl      set_bp
    adr_l   x0, write_data
    msr     dbgwvr0_el1, x0
    mov32   x0, (WCR_EL1_RW|WT_LINKED)
    orr     x0, x0, x2, lsl #16
    msr     dbgwcr0_el1, x0
    isb
    enable_debug (MDSCR_KDE|MDSCR_MDE)
    adr_l   x4, write_data
    mov     w1, #'x'
    msr     contextidr_el1, x3
    isb
    .globl  a10_store
a10_store:
    strb    w1, [x4]
    msr     daifclr, #8
    msr     contextidr_el1, xzr
    isb
    mov     w1, #'y'
    strb    w1, [x4]
    b       done

// ---- B: a debugger single-steps over the guest's trapped debug-register accesses -----------------
// After the SIGNAL the debugger steps every instruction of [b_begin, b_end), each exit at PC + 4; it
// then runs on without stepping and the guest powers off.  value0/value1: DBGBVR0/DBGWVR0 read back
// after the loop (the last i << 2 written, 12).
    scenario b_steps
    mov     x5, #0
    .globl  b_signal
b_signal:
    brk     #SIGNAL
    .globl  b_begin
b_begin:
    .rept   4
    lsl     x1, x5, #2
    msr     dbgbvr0_el1, x1
    msr     dbgwvr0_el1, x1
    mrs     x2, dbgbvr0_el1
    add     x5, x5, #1
    .endr
    .globl  b_end
b_end:
    mrs     x2, dbgbvr0_el1
    str     x2, [x16, #VALUE0]
    mrs     x3, dbgwvr0_el1
    str     x3, [x16, #VALUE1]
    b       done

// ---- C: the host debugs while the guest has debug state of its own -------------------------------

// C12: the guest sets its OS lock; a host breakpoint on c12_nop still fires
    scenario c12_oslock
    mov     x0, #1
    msr     oslar_el1, x0
    isb
    .globl  c12_nop
c12_nop:
    nop
    b       done

// C13: the guest writes DBGBCR0 and MDSCR_EL1 while the host debugs it, signals, then reads them
// back into value0/value1: its own values (0x1e5, KDE|MDE), never the host's
    scenario c13_shadow
    mov     x0, #0x1e5
    msr     dbgbcr0_el1, x0
    mov     x0, #(MDSCR_KDE|MDSCR_MDE)
    msr     mdscr_el1, x0
    isb
    .globl  c13_signal
c13_signal:
    brk     #SIGNAL
    mrs     x2, dbgbcr0_el1
    str     x2, [x16, #VALUE0]
    mrs     x3, mdscr_el1
    str     x3, [x16, #VALUE1]
    b       done

// C14: stepping an svc lands on the guest's vector (VBAR_EL1 + 0x200) with ELR_EL1 = svc + 4
    scenario c14_step_svc
    .globl  c14_signal
c14_signal:
    brk     #SIGNAL
    .globl  c14_svc
c14_svc:
    svc     #0x14
    b       done

// C14: an IRQ pending (the VMM holds the vCPU's IRQ line high) while a step starts with PSTATE.I = 0 is
// taken first: the step exit lands on VBAR_EL1 + 0x280 with ELR_EL1 = the instruction not yet run
    scenario c14_step_irq
    msr     daifclr, #2
    .globl  c14_irq_signal
c14_irq_signal:
    brk     #SIGNAL
    .globl  c14_irq_insn
c14_irq_insn:
    add     x5, x5, #1
    b       done

// C14: with PSTATE.I = 1 the pending IRQ waits (a step moves one instruction); the guest unmasking it
// takes it at once (ELR_EL1 = the instruction after the msr)
    scenario c14_irq_masked
    .globl  c14_masked_signal
c14_masked_signal:
    brk     #SIGNAL
    .globl  c14_masked_insn
c14_masked_insn:
    add     x5, x5, #1
    msr     daifclr, #2
    .globl  c14_unmasked
c14_unmasked:
    add     x5, x5, #1
    b       done

// C14: WFI waits for the IRQ line (or a signal to the vCPU thread); IRQs stay masked here
    scenario c14_wait_wfi
    .globl  c14_wfi_signal
c14_wfi_signal:
    brk     #SIGNAL
    .globl  c14_wfi
c14_wfi:
    wfi
    b       done

// An IRQ raised from another thread while the guest spins with PSTATE.I = 0 is taken in the loop
    scenario c14_irq_spin
    msr     daifclr, #2
    .globl  c14_spin_signal
c14_spin_signal:
    brk     #SIGNAL
    .globl  c14_spin
c14_spin:
    ldr     x0, [x16, #IRQ_COUNT]
    cbz     x0, c14_spin
    b       done

// ---- the guest's exception handler ----------------------------------------------------------------
    .balign 2048
    .globl  vectors
    .type   vectors, %function
vectors:
    .rept   4                           // current EL with SP_EL0: not used
    b       .
    .balign 128
    .endr
    b       sync_handler                // + 0x200: current EL with SP_ELx, synchronous
    .balign 128
    b       irq_handler                 // + 0x280: current EL with SP_ELx, IRQ
    .balign 128
    .rept   2
    b       .
    .balign 128
    .endr
    b       sync_handler                // + 0x400: lower EL (AArch64), synchronous
    .balign 128
    .rept   7
    b       .
    .balign 128
    .endr
    .size   vectors, . - vectors

sync_handler:
    stp     x0, x1, [sp, #-16]!
    adr_l   x16, results
    mrs     x1, esr_el1
    lsr     x1, x1, #26                 // EC
    ldr     x17, [x16, #LOG_N]
    cmp     x17, #8
    b.hs    1f
    add     x0, x16, #LOG
    str     x1, [x0, x17, lsl #3]
    add     x17, x17, #1
    str     x17, [x16, #LOG_N]
1:  mrs     x17, elr_el1
    cmp     x1, #0x3c
    b.eq    on_brk
    cmp     x1, #0x31
    b.eq    on_bp
    cmp     x1, #0x30
    b.eq    on_bp
    cmp     x1, #0x35
    b.eq    on_wp
    cmp     x1, #0x34
    b.eq    on_wp
    cmp     x1, #0x33
    b.eq    on_ss
    cmp     x1, #0x32
    b.eq    on_ss
    cmp     x1, #0x15
    b.eq    on_svc
    ldr     x0, [x16, #UNEXPECTED]
    cbnz    x0, 2f
    mrs     x0, esr_el1
    str     x0, [x16, #UNEXPECTED]
2:  add     x17, x17, #4
    msr     elr_el1, x17
    b       out
on_brk:
    incr    BRK_COUNT
    str     x17, [x16, #BRK_ELR]
    add     x17, x17, #4
    msr     elr_el1, x17
    b       out
on_bp:
    incr    BP_COUNT
    str     x17, [x16, #BP_ELR]
    set_spsr SPSR_D
    b       out
on_wp:
    incr    WP_COUNT
    str     x17, [x16, #WP_ELR]
    mrs     x0, far_el1
    str     x0, [x16, #WP_FAR]
    set_spsr SPSR_D
    b       out
on_ss:
    ldr     x0, [x16, #SS_COUNT]
    cmp     x0, #4
    b.hs    3f
    add     x1, x16, #SS_ELR
    str     x17, [x1, x0, lsl #3]
3:  add     x0, x0, #1
    str     x0, [x16, #SS_COUNT]
    set_spsr SPSR_SS
    b       out
on_svc:
    incr    SVC_COUNT
    str     x17, [x16, #SVC_ELR]
out:
    ldp     x0, x1, [sp], #16
    eret

// the IRQ line is level-sensitive and only the VMM lowers it: return with IRQs masked, or it comes back
irq_handler:
    stp     x0, x1, [sp, #-16]!
    adr_l   x16, results
    incr    IRQ_COUNT
    mrs     x0, elr_el1
    str     x0, [x16, #IRQ_ELR]
    mrs     x0, spsr_el1
    str     x0, [x16, #IRQ_SPSR]
    set_spsr SPSR_I
    ldp     x0, x1, [sp], #16
    eret

// ---------------------------------------------------------------- data
    .data
    .balign 64
    .globl  results
    .type   results, %object
results:
    .fill   RESULTS_SIZE, 1, 0
    .size   results, RESULTS_SIZE

    .balign 64
    .globl  write_data
    .type   write_data, %object
write_data:
    .quad   0
    .size   write_data, 8

// ---------------------------------------------------------------- bss
    .bss
    .balign 16
stack:
    .skip   4096
    .globl  stack_top
stack_top:

    .section .note.GNU-stack,"",%progbits
