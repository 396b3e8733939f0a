# demo.S - the x86-64 demo guest for gdb sessions on the KVM backend (backends/kvm/x86.py).
#
# Bare metal, 64-bit long mode (CPL 0, identity mapped, interrupts off), linked at 1 MiB.
# COM1's data port 0x3f8 prints (the backend logs it).  Plain GNU as source, AT&T syntax:
# build with scripts/build-x86-guests (as -g gives gdb the line table of this file; the DWARF at
# the end gives it the C types of the globals and the functions' bounds and return types).
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
    .text                                 # one section, _start first: the DWARF covers it as one range
.Ltext_start:
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
.L_start_end:
    .size   _start, . - _start

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
.Lmain_loop_end:
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
.Ladd_one_end:
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
.Lupdate_point_end:
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
.Lfill_buffer_end:
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
.Lread_counter_end:
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
.Lputs_end:
    .size   puts, . - puts
.Ltext_end:

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

    .section .note.GNU-stack, "", @progbits

# ---------------------------------------------------------------- DWARF 5
# gas -g writes .debug_line for this file; because the file has its own .debug_info, gas adds none,
# and the compile unit below points at the line table (DW_AT_stmt_list).  Types: unsigned long,
# struct point { unsigned long x, y; }, unsigned long[8].

    .section .debug_line, "", @progbits
.Lline_table:

    .section .debug_abbrev, "", @progbits
.Labbrev:
    .uleb128 1, 0x11                      # 1: DW_TAG_compile_unit
    .byte    1                            #    has children
    .uleb128 0x25, 0x08                   #    DW_AT_producer, DW_FORM_string
    .uleb128 0x13, 0x05                   #    DW_AT_language, DW_FORM_data2
    .uleb128 0x03, 0x08                   #    DW_AT_name, DW_FORM_string
    .uleb128 0x1b, 0x08                   #    DW_AT_comp_dir, DW_FORM_string
    .uleb128 0x11, 0x01                   #    DW_AT_low_pc, DW_FORM_addr
    .uleb128 0x12, 0x07                   #    DW_AT_high_pc, DW_FORM_data8 (a length)
    .uleb128 0x10, 0x17                   #    DW_AT_stmt_list, DW_FORM_sec_offset
    .uleb128 0, 0
    .uleb128 2, 0x24                      # 2: DW_TAG_base_type
    .byte    0
    .uleb128 0x03, 0x08                   #    DW_AT_name
    .uleb128 0x3e, 0x0b                   #    DW_AT_encoding, DW_FORM_data1
    .uleb128 0x0b, 0x0b                   #    DW_AT_byte_size, DW_FORM_data1
    .uleb128 0, 0
    .uleb128 3, 0x13                      # 3: DW_TAG_structure_type
    .byte    1
    .uleb128 0x03, 0x08                   #    DW_AT_name
    .uleb128 0x0b, 0x0b                   #    DW_AT_byte_size
    .uleb128 0, 0
    .uleb128 4, 0x0d                      # 4: DW_TAG_member
    .byte    0
    .uleb128 0x03, 0x08                   #    DW_AT_name
    .uleb128 0x49, 0x13                   #    DW_AT_type, DW_FORM_ref4
    .uleb128 0x38, 0x0b                   #    DW_AT_data_member_location, DW_FORM_data1
    .uleb128 0, 0
    .uleb128 5, 0x01                      # 5: DW_TAG_array_type
    .byte    1
    .uleb128 0x49, 0x13                   #    DW_AT_type
    .uleb128 0, 0
    .uleb128 6, 0x21                      # 6: DW_TAG_subrange_type
    .byte    0
    .uleb128 0x2f, 0x0b                   #    DW_AT_upper_bound, DW_FORM_data1
    .uleb128 0, 0
    .uleb128 7, 0x34                      # 7: DW_TAG_variable
    .byte    0
    .uleb128 0x03, 0x08                   #    DW_AT_name
    .uleb128 0x49, 0x13                   #    DW_AT_type
    .uleb128 0x3f, 0x19                   #    DW_AT_external, DW_FORM_flag_present
    .uleb128 0x02, 0x18                   #    DW_AT_location, DW_FORM_exprloc
    .uleb128 0, 0
    .uleb128 8, 0x2e                      # 8: DW_TAG_subprogram, no return value
    .byte    0
    .uleb128 0x03, 0x08                   #    DW_AT_name
    .uleb128 0x3f, 0x19                   #    DW_AT_external
    .uleb128 0x27, 0x19                   #    DW_AT_prototyped, DW_FORM_flag_present
    .uleb128 0x11, 0x01                   #    DW_AT_low_pc
    .uleb128 0x12, 0x07                   #    DW_AT_high_pc (length)
    .uleb128 0x40, 0x18                   #    DW_AT_frame_base, DW_FORM_exprloc
    .uleb128 0, 0
    .uleb128 9, 0x2e                      # 9: DW_TAG_subprogram returning a value
    .byte    0
    .uleb128 0x03, 0x08                   #    DW_AT_name
    .uleb128 0x49, 0x13                   #    DW_AT_type
    .uleb128 0x3f, 0x19                   #    DW_AT_external
    .uleb128 0x27, 0x19                   #    DW_AT_prototyped
    .uleb128 0x11, 0x01                   #    DW_AT_low_pc
    .uleb128 0x12, 0x07                   #    DW_AT_high_pc (length)
    .uleb128 0x40, 0x18                   #    DW_AT_frame_base
    .uleb128 0, 0
    .uleb128 0                            # end of the abbreviations

# A global variable at a fixed address: DW_OP_addr (0x03) SYMBOL, 9 bytes of expression.
    .macro  dw_variable name, type
    .uleb128 7
    .asciz  "\name"
    .4byte  \type - .Lcu
    .uleb128 9
    .byte   0x03
    .8byte  \name
    .endm

# A function [name, .Lname_end); its frame base is the CFA (DW_OP_call_frame_cfa, 0x9c).
    .macro  dw_function name, type=
    .ifb    \type
    .uleb128 8
    .asciz  "\name"
    .else
    .uleb128 9
    .asciz  "\name"
    .4byte  \type - .Lcu
    .endif
    .8byte  \name
    .8byte  .L\name\()_end - \name
    .uleb128 1
    .byte   0x9c
    .endm

    .section .debug_info, "", @progbits
.Lcu:
    .4byte  .Lcu_end - .Lcu_header        # unit_length
.Lcu_header:
    .2byte  5                             # DWARF version
    .byte   1                             # DW_UT_compile
    .byte   8                             # address size
    .4byte  .Labbrev
    .uleb128 1                            # the compile unit
    .asciz  "hand-written DWARF 5 (guests/x86/demo.S)"
    .2byte  0x8001                        # DW_LANG_Mips_Assembler: gdb shows asm, parses C expressions
    .asciz  "guests/x86/demo.S"
    .asciz  "."
    .8byte  .Ltext_start
    .8byte  .Ltext_end - .Ltext_start
    .4byte  .Lline_table
.Lulong:
    .uleb128 2
    .asciz  "unsigned long"
    .byte   0x08                          # DW_ATE_unsigned
    .byte   8
.Lpoint:
    .uleb128 3
    .asciz  "point"
    .byte   16
    .uleb128 4
    .asciz  "x"
    .4byte  .Lulong - .Lcu
    .byte   0
    .uleb128 4
    .asciz  "y"
    .4byte  .Lulong - .Lcu
    .byte   8
    .byte   0                             # end of struct point
.Lulong8:
    .uleb128 5
    .4byte  .Lulong - .Lcu
    .uleb128 6
    .byte   7                             # upper bound: 8 elements
    .byte   0                             # end of the array type
    dw_variable counter, .Lulong
    dw_variable point, .Lpoint
    dw_variable buffer, .Lulong8
    dw_function _start
    dw_function main_loop
    dw_function add_one, .Lulong
    dw_function update_point
    dw_function fill_buffer
    dw_function read_counter, .Lulong
    dw_function puts
    .byte   0                             # end of the compile unit's children
.Lcu_end:
