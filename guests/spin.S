// spin: a guest that prints a banner and then spins on one instruction forever, so that where an
// interrupt (Ctrl-C) or a detach leaves it is the same on every run: the recorded-session corpus
// uses it for the sessions whose stop point would otherwise depend on timing.
    .equ    UART, 0x09000000

    .text
    .balign 4
    .globl  _start
    .type   _start, %function
_start:
    movz    x0, #0x1234
    adrp    x1, banner
    add     x1, x1, :lo12:banner
    movz    x2, #(UART >> 16), lsl #16
1:  ldrb    w3, [x1], #1
    cbz     w3, spin
    str     w3, [x2]
    b       1b
    .size   _start, . - _start

    .globl  spin
    .type   spin, %function
spin:
    b       spin
    .size   spin, . - spin

    .section .rodata
banner:
    .asciz  "spin guest\n"
