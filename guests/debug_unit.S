// debug_unit.S - the guest of the backend conformance tests (tests/sim/).
//
// Bare-metal arm64 at EL1, MMU off, linked at 0x40000000 like every guest
// (guests/README.md).  Build with scripts/build-guests.
//
// _start sets up a stack, prints "debug_unit\n" on the UART and powers off
// through PSCI SYSTEM_OFF (falls into case_hvc_off).
//
// Every other global label in .text is one test case: a single instruction
// under test (the label is its address), taking its operands from the
// registers named in its comment, followed by `brk #DONE` (0xd0d), so that a
// run that is not stopped by a watchpoint or breakpoint ends in a BRK64 exit
// (hsr 0xf2000d0d) with PC at case+4.  Tests set PC to a case label and the
// operand registers explicitly, then run or step.
//
// The data symbols are scratch areas whose contents the tests write before
// use; each starts a 64-byte block (`hot_page` a 4 KiB page of its own).

    .equ    UART0_DR, 0x09000000
    .equ    PSCI_SYSTEM_OFF, 0x84000008
    .equ    DONE, 0xd0d                 // brk immediate ending every case

    .macro  case name
    .globl  \name
    .type   \name, %function
\name:
    .endm

    .macro  endcase name
    brk     #DONE
    .size   \name, . - \name
    .endm

// ---------------------------------------------------------------- code
    .text
    .balign 4

    .globl  _start
    .type   _start, %function
_start:
    adrp    x0, stack_top
    add     x0, x0, :lo12:stack_top
    mov     sp, x0
    adrp    x19, banner
    add     x19, x19, :lo12:banner
    mov     x20, #UART0_DR
.Lputs:
    ldrb    w1, [x19], #1
    cbz     w1, case_hvc_off
    str     w1, [x20]
    b       .Lputs
    .size   _start, . - _start

// x0 = PSCI_SYSTEM_OFF (set here); hvc #0: the guest powers off.
    case    case_hvc_off
    movz    x0, #(PSCI_SYSTEM_OFF & 0xffff)
    movk    x0, #(PSCI_SYSTEM_OFF >> 16), lsl #16
    .globl  case_hvc
case_hvc:                               // hvc #0 with the caller's x0
    hvc     #0
    b       .
    .size   case_hvc_off, . - case_hvc_off

// [x0] = x1 (8 bytes)
    case    case_str
    str     x1, [x0]
    endcase case_str

// x1 = [x0] (8 bytes)
    case    case_ldr
    ldr     x1, [x0]
    endcase case_ldr

// [x0] = x1, [x0 + 8] = x2
    case    case_stp
    stp     x1, x2, [x0]
    endcase case_stp

// x1 = [x0], x2 = [x0 + 8]
    case    case_ldp
    ldp     x1, x2, [x0]
    endcase case_ldp

// [x0] = w1 (1 byte; x0 may be any address)
    case    case_strb_unaligned
    strb    w1, [x0]
    endcase case_strb_unaligned

// zero the 64-byte block at x0 (DC ZVA; DCZID_EL0 gives 64 bytes on this core)
    case    case_dc_zva
    dc      zva, x0
    endcase case_dc_zva

// [x0] = w1 (4 bytes; the tests use an address = 6 mod 8)
    case    case_str_w_straddle
    str     w1, [x0]
    endcase case_str_w_straddle

// w1 = [x0] (4 bytes; the tests use an address = 6 mod 8)
    case    case_ldr_w_straddle
    ldr     w1, [x0]
    endcase case_ldr_w_straddle

// [x0] = q0, [x0 + 16] = q1 (32 bytes)
    case    case_stp_q
    stp     q0, q1, [x0]
    endcase case_stp_q

// q0 = [x0], q1 = [x0 + 16] (32 bytes)
    case    case_ldp_q
    ldp     q0, q1, [x0]
    endcase case_ldp_q

// [x0] = q0 (16 bytes)
    case    case_str_q
    str     q0, [x0]
    endcase case_str_q

// x0 += 8, then [x0] = x1 (pre-index writeback)
    case    case_str_writeback
    str     x1, [x0, #8]!
    endcase case_str_writeback

// sttr: an unprivileged (EL0) store executed at EL1: [x0] = x1
    case    case_sttr
    sttr    x1, [x0]
    endcase case_sttr

    case    case_brk
    brk     #0x42
    endcase case_brk

// a nop: hardware breakpoint target
    case    case_nop_bp
    nop
    endcase case_nop_bp

// [x0] = w1 (4 bytes): with x0 = UART0_DR this prints the byte w1
    case    case_mmio
    str     w1, [x0]
    endcase case_mmio

// an undefined instruction (0x00000000 is UDF #0)
    case    case_udf
    .word   0
    endcase case_udf

// svc #0x77 (exception entry to the guest's own vectors)
    case    case_svc
    svc     #0x77
    endcase case_svc

// a vector table for tests that set VBAR_EL1 to it: every vector spins on itself, so a test can see
// which one was entered (vectors + 0x200: synchronous, current EL with SP_ELx)
    .balign 2048
    .globl  vectors
    .type   vectors, %function
vectors:
    .rept   16
    b       .
    .balign 128
    .endr
    .size   vectors, . - vectors

// an endless loop (kick() target)
    case    case_spin
    b       case_spin
    .size   case_spin, . - case_spin

// for x1 = x1 .. 1: [x0] = x2, x0 += 8 (one store instruction, x1 >= 1)
    case    case_fill_loop
1:  str     x2, [x0], #8
    subs    x1, x1, #1
    b.ne    1b
    endcase case_fill_loop

// Make a page busy, then continue at x14:
// for x11 = x11 .. 1: [x10] = x12; [x15] += 1   (x11 >= 1)
// x13 is clobbered; x0-x9 and v0-v31 are untouched, so x14 may be any case.
    case    case_hot_loop
1:  str     x12, [x10]
    ldr     x13, [x15]
    add     x13, x13, #1
    str     x13, [x15]
    subs    x11, x11, #1
    b.ne    1b
    br      x14
    .size   case_hot_loop, . - case_hot_loop

// ---------------------------------------------------------------- rodata
    .section .rodata
    .balign 8
banner:
    .asciz  "debug_unit\n"

// ---------------------------------------------------------------- data
    .data

    .macro  datum name, size
    .balign 64
    .globl  \name
    .type   \name, %object
\name:
    .fill   \size, 1, 0xa5
    .size   \name, \size
    .endm

    datum   u64_var, 16                 // C4/C5: a u64 (and the writeback target at +8)
    datum   pair_buf, 32                // C6: stp/ldp (base +0 or +8)
    datum   quad_buf, 64                // C6: stp q / str q
    datum   straddle_buf, 16            // C6: a 4-byte store at +6 straddles two doublewords
    datum   byte_buf, 16                // strb at any lane
    datum   mask_area, 192              // C7: mask_area + 64 is a 64-byte aligned buffer
    datum   fill_buf, 64                // case_fill_loop

    .balign 4096
    .globl  hot_page
    .type   hot_page, %object
hot_page:                               // a page of its own for the hot-page tests
    .fill   4096, 1, 0
    .size   hot_page, 4096

// ---------------------------------------------------------------- bss
    .bss
    .balign 16
stack:
    .skip   4096
    .globl  stack_top
stack_top:

    .section .note.GNU-stack,"",%progbits
