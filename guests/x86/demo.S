# demo.S - the x86-64 demo guest for gdb sessions on the KVM backend (backends/kvm/x86.py).
#
# Bare metal, 64-bit long mode (CPL 0, identity mapped, interrupts off), linked at 1 MiB.
# COM1's data port 0x3f8 prints (the backend logs it).  Plain GNU as source, AT&T syntax:
# build with scripts/build-x86-guests (as -g gives gdb the line table of this file).
#
# _start sets up a stack, prints a banner and enters main_loop, which on every iteration calls
# add_one, update_point, fill_buffer and read_counter, and prints "tick" every 2^20 iterations.
# Each function is an ordinary SysV function with CFI, so gdb can break, step, finish and
# backtrace anywhere.  The globals (each in its own 64-byte block):
#   counter   unsigned long, +1 per iteration (add_one)
#   point     struct { unsigned long x, y }: x = counter, y = 2 * counter (update_point)
#   buffer    unsigned long[8], 64-byte aligned, every element = counter (fill_buffer)
# read_counter returns counter and also reads point.y (for rwatch/awatch).

    .equ    COM1, 0x3f8
    .equ    COM1_LSR, 0x3fd

    .cfi_sections .debug_frame            # CFI goes to .debug_frame (not loaded)
    .code64

# ---------------------------------------------------------------- code
    .section .text.boot, "ax"
    .globl  _start
    .type   _start, @function
_start:
    .cfi_startproc
    .cfi_undefined rip                    # outermost frame: no caller
    lea     stack_top(%rip), %rsp         # 16 KiB stack in .bss
    xor     %ebp, %ebp                    # terminate the frame-pointer chain
    lea     banner(%rip), %rdi
    call    puts
    call    main_loop                     # never returns
.Lhang:
    hlt
    jmp     .Lhang
    .cfi_endproc
    .size   _start, . - _start

    .text
# void main_loop(void): runs forever.
    .globl  main_loop
    .type   main_loop, @function
main_loop:
    .cfi_startproc
    push    %rbp
    .cfi_def_cfa_offset 16
    .cfi_offset rbp, -16
    mov     %rsp, %rbp
    .cfi_def_cfa_register rbp
.Lloop:
    call    add_one
    call    update_point
    call    fill_buffer
    call    read_counter                  # rax = counter
    test    $0xfffff, %eax
    jnz     .Lloop                        # no tick this time
    lea     tick_msg(%rip), %rdi
    call    puts
    jmp     .Lloop
    .cfi_endproc
    .size   main_loop, . - main_loop

# unsigned long add_one(void): counter += 1; returns the new value.
    .globl  add_one
    .type   add_one, @function
add_one:
    .cfi_startproc
    mov     counter(%rip), %rax
    add     $1, %rax
    mov     %rax, counter(%rip)           # the write `watch counter` sees
    ret
    .cfi_endproc
    .size   add_one, . - add_one

# void update_point(void): point.x = counter; point.y = 2 * counter.
    .globl  update_point
    .type   update_point, @function
update_point:
    .cfi_startproc
    mov     counter(%rip), %rax
    mov     %rax, point(%rip)             # point.x
    add     %rax, %rax
    mov     %rax, point+8(%rip)           # point.y: `watch point.y`
    ret
    .cfi_endproc
    .size   update_point, . - update_point

# void fill_buffer(void): buffer[i] = counter for i in 0..7.
    .globl  fill_buffer
    .type   fill_buffer, @function
fill_buffer:
    .cfi_startproc
    mov     counter(%rip), %rax
    lea     buffer(%rip), %rdx
    xor     %ecx, %ecx
.Lfill:
    mov     %rax, (%rdx,%rcx,8)
    inc     %ecx
    cmp     $8, %ecx
    jb      .Lfill
    ret
    .cfi_endproc
    .size   fill_buffer, . - fill_buffer

# unsigned long read_counter(void): returns counter; also reads point.y (rwatch point.y).
    .globl  read_counter
    .type   read_counter, @function
read_counter:
    .cfi_startproc
    mov     point+8(%rip), %rdx           # the read `rwatch point.y` sees
    mov     counter(%rip), %rax
    ret
    .cfi_endproc
    .size   read_counter, . - read_counter

# void puts(const char *rdi): writes the NUL-terminated string to COM1, polling LSR.THRE.
    .globl  puts
    .type   puts, @function
puts:
    .cfi_startproc
.Lputs_next:
    movzbl  (%rdi), %ecx
    test    %cl, %cl
    jz      .Lputs_done
    mov     $COM1_LSR, %dx
.Lputs_wait:
    in      %dx, %al
    test    $0x20, %al                    # transmitter holding register empty
    jz      .Lputs_wait
    mov     $COM1, %dx
    mov     %cl, %al
    out     %al, %dx
    inc     %rdi
    jmp     .Lputs_next
.Lputs_done:
    ret
    .cfi_endproc
    .size   puts, . - puts

# ---------------------------------------------------------------- data
    .section .rodata
banner:
    .asciz  "x86 demo guest started\n"
tick_msg:
    .asciz  "tick\n"

    .data
    .balign 64
    .globl  counter
    .type   counter, @object
counter:
    .quad   0
    .size   counter, 8

    .balign 64
    .globl  point
    .type   point, @object
point:
    .quad   0, 0                          # x, y
    .size   point, 16

    .bss
    .balign 64
    .globl  buffer
    .type   buffer, @object
buffer:
    .skip   64
    .size   buffer, 64

    .balign 16
    .globl  stack
    .type   stack, @object
stack:
    .skip   16384
    .size   stack, 16384
    .globl  stack_top
stack_top:
