// mmu.S - a guest that turns its MMU on and runs in the upper half of the address space, as a kernel does.
//
// Linked with guests/mmu.ld: the start-up code runs at its physical address (RAM at 0x40000000, MMU off);
// .hitext and .hidata are linked at HI_VA (0xffffff8000200000) and HI_VA + 4 KiB and loaded at _hi_lma.
// Stage 1, 4 KiB granule, 39-bit virtual addresses on both halves (Linux's VA_BITS=39 layout; the
// simulated core's CPU faults on walks that start at level 0, so 48 bits would not run there):
//   TTBR0_EL1: RAM identity-mapped by one 1 GiB block (0x40000000..0x7fffffff), so the start-up code,
//              `done` and every physical address stay reachable;
//   TTBR1_EL1: HI_VA -> _hi_lma (code) and HI_VA + 4 KiB -> _hi_lma + 4 KiB (data) through all three
//              levels (L1[0] -> L2[1] -> L3[0], L3[1]); nothing else in the upper half is mapped.
// Then `mmu_on` (brk #SIGNAL, a signal to a debugger that set guest debug; see debug_exceptions.S) and a
// jump to hi_loop, which counts in hi_counter (through its upper-half address) LOOPS times and powers off.
// `faults` (entered by a driver once the MMU is on) takes four translation faults through its own vectors:
// a load and a store to an unmapped upper-half page, a load outside both halves, and a call into the
// unmapped page.  Its handler logs ESR_EL1, FAR_EL1 and ELR_EL1 of each in `fault_log` (3 x 8 bytes each)
// and goes on after the instruction (after the call, for the call), then `faults_done` signals again.

    .equ    PSCI_SYSTEM_OFF, 0x84000008
    .equ    SIGNAL, 0x5501
    .equ    LOOPS, 1000
    .equ    PAGE, 4096
    .equ    TABLE, 0x3                  // valid | table (levels 0-2); valid | page (level 3)
    .equ    BLOCK, 0x1                  // valid | block
    .equ    NORMAL, 0x700               // AttrIndx 0 (MAIR attr0: normal write-back), SH inner, AF
    // TCR_EL1: T0SZ = T1SZ = 25, TG0 4 KiB (00), TG1 4 KiB (10), inner/outer WB, inner shareable, IPS 40 bits
    .equ    TCR, 25 | 1 << 8 | 1 << 10 | 3 << 12 | 25 << 16 | 1 << 24 | 1 << 26 | 3 << 28 | 2 << 30 | 2 << 32
    .equ    SCTLR_MCI, 1 | 1 << 2 | 1 << 12

    .macro  adr_l reg, sym
    adrp    \reg, \sym
    add     \reg, \reg, :lo12:\sym
    .endm

    .macro  mov64 reg, imm
    movz    \reg, #((\imm) & 0xffff)
    movk    \reg, #(((\imm) >> 16) & 0xffff), lsl #16
    movk    \reg, #(((\imm) >> 32) & 0xffff), lsl #32
    movk    \reg, #(((\imm) >> 48) & 0xffff), lsl #48
    .endm

    // \table[\index] = \value (x9 scratch)
    .macro  entry table, index, value
    adr_l   x9, \table
    str     \value, [x9, #(\index) * 8]
    .endm

    .text
    .balign 4
    .globl  _start
    .type   _start, %function
_start:
    adr_l   x0, tables                  // clean tables (a reset vCPU's RAM may hold anything)
    adr_l   x1, tables_end
1:  stp     xzr, xzr, [x0], #16
    cmp     x0, x1
    b.lo    1b
    // TTBR0: L1[1] = the 1 GiB block at 0x40000000
    mov64   x0, 0x40000000 | NORMAL | BLOCK
    entry   l1_lo, 1, x0
    // TTBR1: HI_VA = 0xffffff8000200000: L1 index 0, L2 index 1, L3 index 0 (and 1)
    adr_l   x0, l2_hi
    orr     x0, x0, #TABLE
    entry   l1_hi, 0, x0
    adr_l   x0, l3_hi
    orr     x0, x0, #TABLE
    entry   l2_hi, 1, x0
    adr_l   x0, _hi_lma
    mov     x1, #(NORMAL | TABLE)
    orr     x0, x0, x1
    entry   l3_hi, 0, x0
    add     x0, x0, #PAGE
    entry   l3_hi, 1, x0
    dsb     ish
    // MAIR attr0 = normal WB; TCR; TTBRs; then the MMU and caches on
    mov     x0, #0xff
    msr     mair_el1, x0
    mov64   x0, TCR
    msr     tcr_el1, x0
    adr_l   x0, l1_lo
    msr     ttbr0_el1, x0
    adr_l   x0, l1_hi
    msr     ttbr1_el1, x0
    isb
    tlbi    vmalle1
    dsb     nsh
    isb
    mrs     x0, sctlr_el1
    mov64   x1, SCTLR_MCI
    orr     x0, x0, x1
    msr     sctlr_el1, x0
    isb
    .globl  mmu_on
mmu_on:
    brk     #SIGNAL
    ldr     x20, =hi_counter            // its upper-half address
    mov     x21, #LOOPS
    ldr     x0, =hi_loop
    br      x0
    .size   _start, . - _start

    .globl  faults
    .type   faults, %function
faults:
    adr_l   x0, vectors
    msr     vbar_el1, x0
    adr_l   x0, stack_top
    mov     sp, x0
    isb
    mov64   x2, 0xffffff8000300000      // the upper-half page after .hidata: not mapped
    mov64   x3, 0x0000008000000000      // 1 << 39: outside TTBR0's 39-bit range
    .globl  fault_load
fault_load:
    ldr     x1, [x2, #8]
    .globl  fault_store
fault_store:
    str     x1, [x2, #0x10]
    .globl  fault_range
fault_range:
    ldr     x1, [x3]
    .globl  fault_call
fault_call:
    blr     x2
    .globl  faults_done
faults_done:
    brk     #SIGNAL
    b       done
    .size   faults, . - faults

    .balign 2048
    .globl  vectors
vectors:
    .rept   4
    b       .
    .balign 128
    .endr
    b       on_fault                    // + 0x200: current EL with SP_ELx, synchronous
    .balign 128
    .rept   11
    b       .
    .balign 128
    .endr

on_fault:
    stp     x0, x1, [sp, #-16]!
    stp     x2, x3, [sp, #-16]!
    adr_l   x0, fault_log
    adr_l   x1, fault_n
    ldr     x2, [x1]
    add     x3, x2, #1
    str     x3, [x1]
    mov     x3, #24
    madd    x0, x2, x3, x0              // &fault_log[n]
    mrs     x2, esr_el1
    str     x2, [x0]
    mrs     x2, far_el1
    str     x2, [x0, #8]
    mrs     x2, elr_el1
    str     x2, [x0, #16]
    mrs     x2, esr_el1
    lsr     x2, x2, #26
    cmp     x2, #0x21                   // an instruction abort: back to the caller
    b.ne    1f
    msr     elr_el1, x30
    b       2f
1:  mrs     x2, elr_el1                 // a data abort: the next instruction
    add     x2, x2, #4
    msr     elr_el1, x2
2:  ldp     x2, x3, [sp], #16
    ldp     x0, x1, [sp], #16
    eret

    .globl  done
    .type   done, %function
done:
    movz    x0, #(PSCI_SYSTEM_OFF & 0xffff)
    movk    x0, #(PSCI_SYSTEM_OFF >> 16), lsl #16
    hvc     #0
    b       .
    .size   done, . - done
    .ltorg

// ---- the upper half ---------------------------------------------------------------------------------
    .section .hitext, "ax"
    .globl  hi_loop
    .type   hi_loop, %function
hi_loop:
    ldr     x1, [x20]
    add     x1, x1, #1
    .globl  hi_store
hi_store:
    str     x1, [x20]
    .globl  hi_after_store
hi_after_store:
    subs    x21, x21, #1
    b.ne    hi_loop
    ldr     x0, =done
    br      x0
    .ltorg
    .size   hi_loop, . - hi_loop

    .section .hidata, "aw"
    .balign 8
    .globl  hi_counter
    .type   hi_counter, %object
hi_counter:
    .quad   0
    .size   hi_counter, 8

    .data
    .balign 8
    .globl  fault_n
fault_n:
    .quad   0
    .globl  fault_log
fault_log:
    .fill   4 * 24, 1, 0

// ---- page tables ------------------------------------------------------------------------------------
    .bss
    .balign PAGE
tables:
l1_lo:  .skip   PAGE
l1_hi:  .skip   PAGE
l2_hi:  .skip   PAGE
l3_hi:  .skip   PAGE
tables_end:
    .balign 16
    .skip   4096
stack_top:

    .section .note.GNU-stack,"",%progbits
