// bench_loop.S - the guest of `scripts/bench mips`: a tight load/store loop
// with an exactly known instruction count, then PSCI SYSTEM_OFF.
//
// Bare-metal arm64 at EL1, MMU off, linked at 0x40000000 like every guest
// (guests/README.md).  Build with scripts/build-guests.
//
// Executed instructions, with N = the quad at `loop_iterations` (10,000,000
// as built; the benchmark may patch it before `continue`):
//     _start setup ......  8   (adrp, add, mov sp, adrp, add, adrp, ldr, mov)
//     loop ..............  10 per iteration, 10 * N
//     done ..............  3   (movz, movk, smc: the smc ends the run)
//     total ............. 10 * N + 11  = 100,000,011 for N = 10,000,000
// The loop body has 2 loads and 2 stores per iteration, all to the first two
// doublewords of `loop_data`; nothing else in RAM is touched (no stack use).
//
// Symbols for the benchmark:
//     loop             the loop head (one iteration: loop .. the b.ne)
//     done             the exit path (x0 = PSCI SYSTEM_OFF, smc #0)
//
// PSCI goes through SMC: the simulated core has no EL2, so HVC is UNDEFINED
// there (unicorn raises it as an undefined instruction: SIGILL, not an exit).
//     unused_code      64 nops, never executed: hardware breakpoint targets
//     loop_iterations  N (one quad, on a page of its own, read once)
//     loop_data        the 4 KiB page the loop reads and writes
//     loop_data_spare  a doubleword on loop_data's page, 2 KiB away from the
//                      loop's accesses, never read or written
//     loop_data_near   the doubleword right after the two the loop updates,
//                      never read or written
//     far_data         a 4 KiB page the guest never touches
//     stack_top        top of a 4 KiB stack (set up, unused)

    .equ    PSCI_SYSTEM_OFF, 0x84000008

    .cfi_sections .debug_frame

// ---------------------------------------------------------------- code
    .text
    .balign 4

    .globl  _start
    .type   _start, %function
_start:
    .cfi_startproc
    .cfi_undefined x30                  // outermost frame: no caller
    adrp    x0, stack_top
    add     x0, x0, :lo12:stack_top
    mov     sp, x0
    adrp    x1, loop_data
    add     x1, x1, :lo12:loop_data     // x1 = &loop_data
    adrp    x2, loop_iterations
    ldr     x2, [x2, :lo12:loop_iterations]   // x2 = N (must be >= 1)
    mov     x3, #0                      // x3 = iteration number

    .globl  loop
loop:                                   // 10 instructions per iteration
    ldr     x4, [x1]                    // loop_data[0] += 1
    add     x4, x4, #1
    str     x4, [x1]
    ldr     x5, [x1, #8]                // loop_data[1] += loop_data[0]
    add     x5, x5, x4
    str     x5, [x1, #8]
    add     x3, x3, #1
    eor     x6, x3, x5                  // keeps a data dependency; result unused
    subs    x2, x2, #1
    b.ne    loop

    .globl  done
done:
    movz    x0, #(PSCI_SYSTEM_OFF & 0xffff)
    movk    x0, #(PSCI_SYSTEM_OFF >> 16), lsl #16
    smc     #0                          // the sim reports SYSTEM_OFF: gdb sees W00
.Lhang:
    b       .Lhang
    .cfi_endproc
    .size   _start, . - _start

// Never executed: addresses for `hbreak` that must never fire.
    .globl  unused_code
    .type   unused_code, %function
unused_code:
    .rept   64
    nop
    .endr
    ret
    .size   unused_code, . - unused_code

// ---------------------------------------------------------------- data
    .data
    .balign 4096

    .globl  loop_iterations
    .type   loop_iterations, %object
loop_iterations:
    .quad   10000000
    .size   loop_iterations, 8

    .balign 4096
    .globl  loop_data
    .type   loop_data, %object
loop_data:
    .quad   0, 0                        // the two doublewords the loop updates
    .globl  loop_data_near
    .type   loop_data_near, %object
loop_data_near:
    .quad   0                           // right next to them, never accessed
    .size   loop_data_near, 8
    .space  2048 - 24
    .globl  loop_data_spare
    .type   loop_data_spare, %object
loop_data_spare:
    .quad   0
    .size   loop_data_spare, 8
    .space  4096 - 2048 - 8
    .size   loop_data, 4096

    .globl  far_data
    .type   far_data, %object
far_data:
    .space  4096
    .size   far_data, 4096

// ---------------------------------------------------------------- stack
    .bss
    .balign 16
stack:
    .space  4096
    .globl  stack_top
stack_top:
