# smp.S - the x86-64 SMP test guest: every vCPU runs the same loop on its own counter and a shared one.
#
# Bare metal, 64-bit long mode as backends/kvm/x86.py sets it up (CPL 0, first 4 GiB identity mapped,
# interrupts off, no IDT), linked at 1 MiB.  Plain GNU as source (AT&T syntax): scripts/build-x86-guests.
#
# SMP start-up is the backend's, not INIT/SIPI: every vCPU enters _start at once, in the same long-mode
# state, with rdi = its vCPU index (0..N-1).  rdi is never changed afterwards (a debugger can read it).
# A vCPU with an index >= MAX_CPUS halts (Exit SHUTDOWN "guest halted").
#
# Every vCPU k runs cpu_work for ever:
#   per_cpu + 64*k (8 bytes): vCPU k's own counter, +1 per iteration (a watchpoint there stops only vCPU k)
#   shared (8 bytes): +1 per iteration by every vCPU (not atomic: its value is not an exact sum)
# `cpu_work` is the first instruction of every iteration on every vCPU (a breakpoint there is hit by all).
# `started + 8*k`: 1 once vCPU k reached its loop.  Each vCPU has its own 4 KiB stack (stack_top - 4096*k).

    .equ    MAX_CPUS, 8
    .equ    STACK_SIZE, 4096

    .code64
    .section .text.boot, "ax"
    .globl  _start
    .type   _start, @function
_start:
    cmp     $MAX_CPUS, %rdi
    jae     .Lhang
    mov     %rdi, %rax
    shl     $12, %rax                     # STACK_SIZE * k
    lea     stack_top(%rip), %rsp
    sub     %rax, %rsp
    mov     %rdi, %rbx
    shl     $6, %rbx                      # 64 * k
    lea     per_cpu(%rip), %rax
    add     %rax, %rbx                    # rbx = this vCPU's own slot
    lea     shared(%rip), %rbp            # rbp = the shared counter
    lea     started(%rip), %rax
    movq    $1, (%rax,%rdi,8)
    .globl  cpu_work
cpu_work:
    mov     (%rbx), %rax
    add     $1, %rax
    mov     %rax, (%rbx)                  # the write a watchpoint on per_cpu + 64*k sees
    .globl  after_write
after_write:                              # where that (trap-like) data breakpoint reports
    mov     (%rbp), %rcx
    add     $1, %rcx
    mov     %rcx, (%rbp)
    jmp     cpu_work
.Lhang:
    hlt
    jmp     .Lhang
    .size   _start, . - _start

# ---------------------------------------------------------------- data
    .data
    .balign 64
    .globl  per_cpu
    .type   per_cpu, @object
per_cpu:
    .fill   64 * MAX_CPUS, 1, 0
    .size   per_cpu, 64 * MAX_CPUS

    .balign 64
    .globl  shared
    .type   shared, @object
shared:
    .quad   0
    .size   shared, 8

    .balign 64
    .globl  started
    .type   started, @object
started:
    .fill   8 * MAX_CPUS, 1, 0
    .size   started, 8 * MAX_CPUS

# ---------------------------------------------------------------- bss
    .bss
    .balign 16
stacks:
    .skip   STACK_SIZE * MAX_CPUS
    .globl  stack_top
stack_top:

    .section .note.GNU-stack, "", @progbits
