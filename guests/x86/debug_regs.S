# debug_regs.S - x86-64 guest for the KVM guest-debug scenarios (kvm-hw-debug.md 7.D, after
# tools/testing/selftests/kvm/x86/debug_regs.c), driven by tests/kvm/test_x86_scenarios.py.
#
# Bare metal, 64-bit long mode as backends/kvm/x86.py sets it up (CPL 0, first 4 GiB identity
# mapped, interrupts off, no IDT).  COM1 data port 0x3f8 prints; a write to port 0xf4 ends the run.
# Plain GNU as source (AT&T syntax, no C preprocessor): build with scripts/build-x86-guests.
#
# The main path, _start to finish, is what runs with guest debugging off (D6): banner, then every
# scenario site in order, then "done" and `out` GUEST_DONE to port 0xf4.  The int3 site (D1) and the
# spin loop (kick test) are off the main path: the tests enter them by setting rip.

    .equ    COM1, 0x3f8
    .equ    COM1_LSR, 0x3fd
    .equ    EXIT_PORT, 0xf4
    .equ    GUEST_DONE, 0x2a              # the status the backend reports for a clean finish
    .equ    MSR_IA32_TSC_DEADLINE, 0x6e0
    .equ    MMIO_ADDR, 0xd0000000         # past RAM, inside the identity map: an MMIO exit

    .code64
    .section .text.boot, "ax"
    .globl  _start
    .type   _start, @function
_start:
    lea     stack_top(%rip), %rsp
    lea     banner(%rip), %rsi
    call    puts

# D2: instruction breakpoints on a nop (fault-like: rip stays on it until userspace skips it)
    .globl  hw_bp
hw_bp:
    nop

# D3: data breakpoint on a 4-byte write; the trap reports the next instruction
    .globl  write_data
write_data:
    mov     %rax, guest_value(%rip)       # 7 bytes
    .globl  after_write
after_write:

# D4: six single steps; cpuid and wrmsr are emulated by KVM, sti opens an interrupt shadow
    .globl  ss_start
ss_start:
    sti                                   # 1 byte
    xor     %eax, %eax                    # 2
    cpuid                                 # 2
    mov     $MSR_IA32_TSC_DEADLINE, %ecx  # 5
    wrmsr                                 # 2
    cli                                   # 1
    .globl  ss_end
ss_end:

# D5: DR7.GD makes this debug-register access trap before it executes
    .globl  gd_insn
gd_insn:
    mov     %dr0, %rax
    .globl  after_gd
after_gd:

# D7: single steps over port I/O and MMIO (each one an exit to userspace before the step completes)
    .globl  io_start
io_start:
    mov     $0x41, %al                    # 2 bytes
    .globl  io_out
io_out:
    out     %al, $0x80                    # 2: an ignored port (POST code)
    .globl  io_in
io_in:
    in      $0x61, %al                    # 2: reads all ones
    .globl  mmio_read
mmio_read:
    movabs  MMIO_ADDR, %al                # 9: an MMIO read, all ones
    .globl  mmio_write
mmio_write:
    movabs  %al, MMIO_ADDR                # 9: an MMIO write, ignored
    .globl  io_end
io_end:

    .globl  finish
finish:
    lea     done_msg(%rip), %rsi
    call    puts
    mov     $GUEST_DONE, %al
    .globl  exit_insn
exit_insn:
    out     %al, $EXIT_PORT
    .globl  after_exit
after_exit:
    hlt
    jmp     after_exit
    .size   _start, . - _start

# D1: a software breakpoint, off the main path
    .globl  sw_bp
    .type   sw_bp, @function
sw_bp:
    int3
    .globl  after_sw_bp
after_sw_bp:
    hlt
    .size   sw_bp, . - sw_bp

# kick(): a loop that never leaves the guest
    .globl  spin
    .type   spin, @function
spin:
    incq    spin_count(%rip)
    jmp     spin
    .size   spin, . - spin

# void puts(const char *rsi): writes the NUL-terminated string to COM1, polling LSR.THRE
    .globl  puts
    .type   puts, @function
puts:
1:  movb    (%rsi), %cl
    test    %cl, %cl
    jz      3f
    mov     $COM1_LSR, %dx
2:  in      %dx, %al
    test    $0x20, %al                    # transmitter holding register empty
    jz      2b
    mov     $COM1, %dx
    mov     %cl, %al
    out     %al, %dx
    inc     %rsi
    jmp     1b
3:  ret
    .size   puts, . - puts

    .section .rodata
banner:
    .asciz  "x86 debug guest\n"
done_msg:
    .asciz  "done\n"

    .data
    .balign 8
    .globl  guest_value
    .type   guest_value, @object
guest_value:
    .quad   0
    .size   guest_value, 8
    .globl  spin_count
    .type   spin_count, @object
spin_count:
    .quad   0
    .size   spin_count, 8

    .bss
    .balign 16
stack:
    .skip   4096
    .globl  stack_top
stack_top:
