// smp.S - the SMP test guest: CPU 0 starts every other CPU with PSCI CPU_ON, then all of them loop.
//
// Bare-metal arm64 at EL1, MMU off, linked at 0x40000000 (guests/README.md); runs on any number of
// vCPUs from 1 to MAX_CPUS (CPU_ON for a CPU that does not exist returns an error, recorded and ignored).
//
// Every CPU k (k = MPIDR_EL1.Aff0, the PSCI target id KVM uses) runs cpu_loop for ever:
//   per_cpu + 64*k (8 bytes): CPU k's own counter, +1 per iteration (a watchpoint there stops only CPU k)
//   shared (8 bytes): +1 per iteration by every CPU (not atomic: its value is not an exact sum)
// `cpu_work` is the first instruction of every iteration on every CPU (an hbreak there is hit by all).
// `cpu_on_result + 8*k`: what CPU_ON returned for CPU k (0 = SUCCESS, -2 = INVALID_PARAMETERS: no CPU k).
// `started + 8*k`: 1 once CPU k reached cpu_loop.

    .equ    MAX_CPUS, 8
    .equ    PSCI_CPU_ON, 0xc4000003     // SMC64/HVC64 CPU_ON: x1 = target MPIDR, x2 = entry, x3 = context
    .equ    STACK_SIZE, 4096

    .macro  adr_l reg, sym
    adrp    \reg, \sym
    add     \reg, \reg, :lo12:\sym
    .endm

    .text
    .balign 4
    .globl  _start
    .type   _start, %function
_start:
    mov     x19, #0                     // CPU 0
    bl      set_stack
    mov     x22, #1                     // for k = 1 .. MAX_CPUS - 1: CPU_ON(k, secondary, k)
    adr_l   x23, cpu_on_result
1:  movz    x0, #(PSCI_CPU_ON & 0xffff)
    movk    x0, #(PSCI_CPU_ON >> 16), lsl #16
    mov     x1, x22
    adr_l   x2, secondary
    mov     x3, x22
    hvc     #0
    str     x0, [x23, x22, lsl #3]
    add     x22, x22, #1
    cmp     x22, #MAX_CPUS
    b.ne    1b
    b       cpu_loop
    .size   _start, . - _start

// a secondary CPU: x0 = the context id CPU_ON passed (its index)
    .globl  secondary
    .type   secondary, %function
secondary:
    mov     x19, x0
    bl      set_stack
    b       cpu_loop
    .size   secondary, . - secondary

// sp = stack_top - x19 * STACK_SIZE
set_stack:
    adr_l   x0, stack_top
    mov     x1, #STACK_SIZE
    msub    x0, x19, x1, x0
    mov     sp, x0
    ret

    .globl  cpu_loop
    .type   cpu_loop, %function
cpu_loop:
    adr_l   x20, per_cpu
    add     x20, x20, x19, lsl #6       // this CPU's own 64-byte slot
    adr_l   x21, shared
    adr_l   x0, started
    mov     x1, #1
    str     x1, [x0, x19, lsl #3]
    .globl  cpu_work
cpu_work:
    ldr     x0, [x20]
    add     x0, x0, #1
    str     x0, [x20]
    ldr     x1, [x21]
    add     x1, x1, #1
    str     x1, [x21]
    b       cpu_work
    .size   cpu_loop, . - cpu_loop

// ---------------------------------------------------------------- data
    .data
    .balign 64
    .globl  per_cpu
    .type   per_cpu, %object
per_cpu:
    .fill   64 * MAX_CPUS, 1, 0
    .size   per_cpu, 64 * MAX_CPUS

    .balign 64
    .globl  shared
    .type   shared, %object
shared:
    .quad   0
    .size   shared, 8

    .balign 64
    .globl  cpu_on_result
    .type   cpu_on_result, %object
cpu_on_result:
    .fill   8 * MAX_CPUS, 1, 0
    .size   cpu_on_result, 8 * MAX_CPUS

    .globl  started
    .type   started, %object
started:
    .fill   8 * MAX_CPUS, 1, 0
    .size   started, 8 * MAX_CPUS

// ---------------------------------------------------------------- bss
    .bss
    .balign 16
stacks:
    .skip   STACK_SIZE * MAX_CPUS
    .globl  stack_top
stack_top:

    .section .note.GNU-stack,"",%progbits
