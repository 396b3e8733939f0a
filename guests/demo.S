// demo.S - the demo guest shipped with gdbstub (gdbstub/data/demo.elf).
//
// Bare-metal arm64 at EL1, MMU off (virtual == physical).  RAM starts at
// 0x40000000; a PL011-style UART data register sits at 0x09000000.
// Plain GNU as source (no C preprocessor): build with scripts/build-guests.
//
// _start sets up a stack, prints a banner and enters main_loop, which on
// every iteration calls add_one, update_point, touch_unaligned, fill_buffer
// and read_counter, and prints "tick" every 2^20 iterations.  Each function
// is an ordinary AAPCS64 function with CFI, so gdb can break, step, finish
// and backtrace anywhere.  The hand-written DWARF at the end of the file
// gives gdb the C types of the globals.

    .equ    UART0_DR, 0x09000000        // PL011 data register (write a byte)

    .cfi_sections .debug_frame          // CFI goes to .debug_frame (not loaded)

// ---------------------------------------------------------------- code
    .text
    .balign 4
.Ltext_start:

// Entry point: the first instruction of .text, at 0x40000000.
    .globl  _start
    .type   _start, %function
_start:
    .cfi_startproc
    .cfi_undefined x30                  // outermost frame: no caller
    adrp    x0, stack_top
    add     x0, x0, :lo12:stack_top
    mov     sp, x0                      // 16 KiB stack in .bss
    mov     x29, #0                     // terminate the frame-pointer chain
    mov     x30, #0
    adrp    x0, banner
    add     x0, x0, :lo12:banner
    bl      puts
    bl      main_loop                   // never returns
.Lhang:
    b       .Lhang
    .cfi_endproc
.Lstart_end:
    .size   _start, . - _start

// void main_loop(void): runs forever.
    .globl  main_loop
    .type   main_loop, %function
main_loop:
    .cfi_startproc
    stp     x29, x30, [sp, #-16]!
    .cfi_def_cfa_offset 16
    .cfi_offset x29, -16
    .cfi_offset x30, -8
    mov     x29, sp
    .cfi_def_cfa x29, 16
.Lloop:
    bl      add_one
    bl      update_point
    bl      touch_unaligned
    bl      fill_buffer
    bl      read_counter                // x0 = counter
    tst     x0, #0xfffff
    b.ne    .Lloop                      // no tick this time
    adrp    x0, tick_msg
    add     x0, x0, :lo12:tick_msg
    bl      puts
    b       .Lloop
    .cfi_endproc
.Lmain_loop_end:
    .size   main_loop, . - main_loop

// unsigned long add_one(void): counter += 1; returns the new value.
    .globl  add_one
    .type   add_one, %function
add_one:
    .cfi_startproc
    adrp    x1, counter
    add     x1, x1, :lo12:counter
    ldr     x0, [x1]
    add     x0, x0, #1
    str     x0, [x1]                    // the write `watch counter` sees
    ret
    .cfi_endproc
.Ladd_one_end:
    .size   add_one, . - add_one

// void update_point(void): point.x = counter; point.y = counter * 2.
    .globl  update_point
    .type   update_point, %function
update_point:
    .cfi_startproc
    adrp    x1, counter
    add     x1, x1, :lo12:counter
    ldr     x0, [x1]
    lsl     x2, x0, #1
    adrp    x3, point
    add     x3, x3, :lo12:point
    str     x0, [x3]                    // point.x
    str     x2, [x3, #8]                // point.y
    ret
    .cfi_endproc
.Lupdate_point_end:
    .size   update_point, . - update_point

// void touch_unaligned(void): unaligned_word = (u32)counter.
// unaligned_word is at an address = 6 mod 8: the store straddles two
// 8-byte granules.
    .globl  touch_unaligned
    .type   touch_unaligned, %function
touch_unaligned:
    .cfi_startproc
    adrp    x1, counter
    add     x1, x1, :lo12:counter
    ldr     x0, [x1]
    adrp    x2, unaligned_word
    add     x2, x2, :lo12:unaligned_word
    str     w0, [x2]                    // unaligned 4-byte store
    ret
    .cfi_endproc
.Ltouch_unaligned_end:
    .size   touch_unaligned, . - touch_unaligned

// void fill_buffer(void): buffer[i] = counter for i = 0..7 (8 stores).
    .globl  fill_buffer
    .type   fill_buffer, %function
fill_buffer:
    .cfi_startproc
    adrp    x1, counter
    add     x1, x1, :lo12:counter
    ldr     x0, [x1]
    adrp    x2, buffer
    add     x2, x2, :lo12:buffer
    str     x0, [x2, #0]
    str     x0, [x2, #8]
    str     x0, [x2, #16]
    str     x0, [x2, #24]
    str     x0, [x2, #32]
    str     x0, [x2, #40]
    str     x0, [x2, #48]
    str     x0, [x2, #56]
    ret
    .cfi_endproc
.Lfill_buffer_end:
    .size   fill_buffer, . - fill_buffer

// unsigned long read_counter(void): returns counter; also reads point.y
// (into x1), so `rwatch counter` and `rwatch point.y` both trigger here.
    .globl  read_counter
    .type   read_counter, %function
read_counter:
    .cfi_startproc
    adrp    x2, counter
    add     x2, x2, :lo12:counter
    ldr     x0, [x2]                    // read of counter
    adrp    x3, point
    add     x3, x3, :lo12:point
    ldr     x1, [x3, #8]                // read of point.y
    ret
    .cfi_endproc
.Lread_counter_end:
    .size   read_counter, . - read_counter

// void puts(const char *s): writes the NUL-terminated string s to the UART.
    .globl  puts
    .type   puts, %function
puts:
    .cfi_startproc
    stp     x29, x30, [sp, #-16]!
    .cfi_def_cfa_offset 16
    .cfi_offset x29, -16
    .cfi_offset x30, -8
    mov     x29, sp
    .cfi_def_cfa x29, 16
    stp     x19, x20, [sp, #-16]!       // x19 is callee-saved: keep s in it
    .cfi_offset x19, -32
    .cfi_offset x20, -24
    mov     x19, x0
.Lputs_next:
    ldrb    w0, [x19], #1
    cbz     w0, .Lputs_done
    bl      uart_putc
    b       .Lputs_next
.Lputs_done:
    ldp     x19, x20, [sp], #16
    .cfi_restore x19
    .cfi_restore x20
    ldp     x29, x30, [sp], #16
    .cfi_restore x29
    .cfi_restore x30
    .cfi_def_cfa sp, 0
    ret
    .cfi_endproc
.Lputs_end:
    .size   puts, . - puts

// void uart_putc(int c): writes the byte c to the UART data register.
    .globl  uart_putc
    .type   uart_putc, %function
uart_putc:
    .cfi_startproc
    mov     x1, #UART0_DR
    and     w0, w0, #0xff
    str     w0, [x1]                    // 32-bit store of the byte
    ret
    .cfi_endproc
.Luart_putc_end:
    .size   uart_putc, . - uart_putc
.Ltext_end:

// ---------------------------------------------------------------- rodata
    .section .rodata
    .balign 8
    .type   banner, %object
banner:
    .asciz  "demo guest started\n"
    .size   banner, . - banner

    .type   tick_msg, %object
tick_msg:
    .asciz  "tick\n"
    .size   tick_msg, . - tick_msg

// ---------------------------------------------------------------- data
// Each global starts its own 64-byte block, so a watchpoint on one is never
// triggered by an access to another.
    .data

    .balign 64
    .globl  counter
    .type   counter, %object
counter:                                // unsigned long counter
    .8byte  0
    .size   counter, 8

    .balign 64
    .globl  point
    .type   point, %object
point:                                  // struct point { unsigned long x, y; }
    .8byte  0                           // x
    .8byte  0                           // y
    .size   point, 16

    .balign 64
    .skip   6                           // unaligned_word = 6 (mod 8)
    .globl  unaligned_word
    .type   unaligned_word, %object
unaligned_word:                         // unsigned int unaligned_word
    .4byte  0
    .size   unaligned_word, 4

    .balign 64
    .globl  buffer
    .type   buffer, %object
buffer:                                 // unsigned long buffer[8]
    .fill   8, 8, 0
    .size   buffer, 64

// ---------------------------------------------------------------- bss
    .bss
    .balign 16
    .globl  stack
    .type   stack, %object
stack:
    .skip   16384
    .size   stack, 16384
    .globl  stack_top
stack_top:                              // initial sp (16-byte aligned)

    .section .note.GNU-stack,"",%progbits

// ---------------------------------------------------------------- DWARF
// gas -g generates .debug_line for this file (into the section labelled
// below) but no .debug_info because this file defines one: the compile unit
// points at the line table with DW_AT_stmt_list.

    .section .debug_line,"",%progbits
.Ldebug_line0:

    .section .debug_abbrev,"",%progbits
.Ldebug_abbrev0:
    .uleb128 1                          // compile unit
    .uleb128 0x11                       //   DW_TAG_compile_unit
    .byte    1                          //   DW_CHILDREN_yes
    .uleb128 0x25, 0x08                 //   DW_AT_producer   DW_FORM_string
    .uleb128 0x13, 0x05                 //   DW_AT_language   DW_FORM_data2
    .uleb128 0x03, 0x08                 //   DW_AT_name       DW_FORM_string
    .uleb128 0x1b, 0x08                 //   DW_AT_comp_dir   DW_FORM_string
    .uleb128 0x11, 0x01                 //   DW_AT_low_pc     DW_FORM_addr
    .uleb128 0x12, 0x07                 //   DW_AT_high_pc    DW_FORM_data8
    .uleb128 0x10, 0x17                 //   DW_AT_stmt_list  DW_FORM_sec_offset
    .uleb128 0, 0

    .uleb128 2                          // base type
    .uleb128 0x24                       //   DW_TAG_base_type
    .byte    0
    .uleb128 0x03, 0x08                 //   DW_AT_name       DW_FORM_string
    .uleb128 0x3e, 0x0b                 //   DW_AT_encoding   DW_FORM_data1
    .uleb128 0x0b, 0x0b                 //   DW_AT_byte_size  DW_FORM_data1
    .uleb128 0, 0

    .uleb128 3                          // struct
    .uleb128 0x13                       //   DW_TAG_structure_type
    .byte    1
    .uleb128 0x03, 0x08                 //   DW_AT_name       DW_FORM_string
    .uleb128 0x0b, 0x0b                 //   DW_AT_byte_size  DW_FORM_data1
    .uleb128 0, 0

    .uleb128 4                          // struct member
    .uleb128 0x0d                       //   DW_TAG_member
    .byte    0
    .uleb128 0x03, 0x08                 //   DW_AT_name       DW_FORM_string
    .uleb128 0x49, 0x13                 //   DW_AT_type       DW_FORM_ref4
    .uleb128 0x38, 0x0b                 //   DW_AT_data_member_location DW_FORM_data1
    .uleb128 0, 0

    .uleb128 5                          // array
    .uleb128 0x01                       //   DW_TAG_array_type
    .byte    1
    .uleb128 0x49, 0x13                 //   DW_AT_type       DW_FORM_ref4
    .uleb128 0, 0

    .uleb128 6                          // array bounds
    .uleb128 0x21                       //   DW_TAG_subrange_type
    .byte    0
    .uleb128 0x49, 0x13                 //   DW_AT_type       DW_FORM_ref4
    .uleb128 0x2f, 0x0b                 //   DW_AT_upper_bound DW_FORM_data1
    .uleb128 0, 0

    .uleb128 7                          // global variable
    .uleb128 0x34                       //   DW_TAG_variable
    .byte    0
    .uleb128 0x03, 0x08                 //   DW_AT_name       DW_FORM_string
    .uleb128 0x49, 0x13                 //   DW_AT_type       DW_FORM_ref4
    .uleb128 0x3f, 0x19                 //   DW_AT_external   DW_FORM_flag_present
    .uleb128 0x02, 0x18                 //   DW_AT_location   DW_FORM_exprloc
    .uleb128 0, 0

    .uleb128 8                          // void function
    .uleb128 0x2e                       //   DW_TAG_subprogram
    .byte    0
    .uleb128 0x03, 0x08                 //   DW_AT_name       DW_FORM_string
    .uleb128 0x3f, 0x19                 //   DW_AT_external   DW_FORM_flag_present
    .uleb128 0x27, 0x19                 //   DW_AT_prototyped DW_FORM_flag_present
    .uleb128 0x11, 0x01                 //   DW_AT_low_pc     DW_FORM_addr
    .uleb128 0x12, 0x07                 //   DW_AT_high_pc    DW_FORM_data8
    .uleb128 0x40, 0x18                 //   DW_AT_frame_base DW_FORM_exprloc
    .uleb128 0, 0

    .uleb128 9                          // function returning a value
    .uleb128 0x2e                       //   DW_TAG_subprogram
    .byte    0
    .uleb128 0x03, 0x08                 //   DW_AT_name       DW_FORM_string
    .uleb128 0x49, 0x13                 //   DW_AT_type       DW_FORM_ref4
    .uleb128 0x3f, 0x19                 //   DW_AT_external   DW_FORM_flag_present
    .uleb128 0x27, 0x19                 //   DW_AT_prototyped DW_FORM_flag_present
    .uleb128 0x11, 0x01                 //   DW_AT_low_pc     DW_FORM_addr
    .uleb128 0x12, 0x07                 //   DW_AT_high_pc    DW_FORM_data8
    .uleb128 0x40, 0x18                 //   DW_AT_frame_base DW_FORM_exprloc
    .uleb128 0, 0

    .uleb128 0                          // end of abbreviations

    .section .debug_info,"",%progbits
.Lcu:
    .4byte  .Lcu_end - .Lcu_version     // unit_length
.Lcu_version:
    .2byte  5                           // DWARF 5
    .byte   1                           // DW_UT_compile
    .byte   8                           // address_size
    .4byte  .Ldebug_abbrev0             // debug_abbrev_offset

    .uleb128 1                          // DW_TAG_compile_unit
    .asciz  "hand-written DWARF 5 (guests/demo.S)"
    .2byte  0x8001                      // DW_LANG_Mips_Assembler (gdb: asm, C syntax)
    .asciz  "guests/demo.S"
    .asciz  "."
    .8byte  .Ltext_start
    .8byte  .Ltext_end - .Ltext_start
    .4byte  .Ldebug_line0

.Ltype_ulong:
    .uleb128 2                          // unsigned long
    .asciz  "unsigned long"
    .byte   0x08                        // DW_ATE_unsigned
    .byte   8

.Ltype_uint:
    .uleb128 2                          // unsigned int
    .asciz  "unsigned int"
    .byte   0x08                        // DW_ATE_unsigned
    .byte   4

.Ltype_point:
    .uleb128 3                          // struct point
    .asciz  "point"
    .byte   16
    .uleb128 4
    .asciz  "x"
    .4byte  .Ltype_ulong - .Lcu
    .byte   0
    .uleb128 4
    .asciz  "y"
    .4byte  .Ltype_ulong - .Lcu
    .byte   8
    .byte   0                           // end of struct point

.Ltype_ulong_8:
    .uleb128 5                          // unsigned long [8]
    .4byte  .Ltype_ulong - .Lcu
    .uleb128 6
    .4byte  .Ltype_ulong - .Lcu
    .byte   7                           // upper bound
    .byte   0                           // end of array

    .uleb128 7
    .asciz  "counter"
    .4byte  .Ltype_ulong - .Lcu
    .uleb128 9                          // DW_OP_addr counter
    .byte   0x03
    .8byte  counter

    .uleb128 7
    .asciz  "point"
    .4byte  .Ltype_point - .Lcu
    .uleb128 9
    .byte   0x03
    .8byte  point

    .uleb128 7
    .asciz  "unaligned_word"
    .4byte  .Ltype_uint - .Lcu
    .uleb128 9
    .byte   0x03
    .8byte  unaligned_word

    .uleb128 7
    .asciz  "buffer"
    .4byte  .Ltype_ulong_8 - .Lcu
    .uleb128 9
    .byte   0x03
    .8byte  buffer

    // Functions.  DW_AT_frame_base is DW_OP_call_frame_cfa (0x9c).
    .uleb128 8
    .asciz  "_start"
    .8byte  _start
    .8byte  .Lstart_end - _start
    .uleb128 1
    .byte   0x9c

    .uleb128 8
    .asciz  "main_loop"
    .8byte  main_loop
    .8byte  .Lmain_loop_end - main_loop
    .uleb128 1
    .byte   0x9c

    .uleb128 9
    .asciz  "add_one"
    .4byte  .Ltype_ulong - .Lcu
    .8byte  add_one
    .8byte  .Ladd_one_end - add_one
    .uleb128 1
    .byte   0x9c

    .uleb128 8
    .asciz  "update_point"
    .8byte  update_point
    .8byte  .Lupdate_point_end - update_point
    .uleb128 1
    .byte   0x9c

    .uleb128 8
    .asciz  "touch_unaligned"
    .8byte  touch_unaligned
    .8byte  .Ltouch_unaligned_end - touch_unaligned
    .uleb128 1
    .byte   0x9c

    .uleb128 8
    .asciz  "fill_buffer"
    .8byte  fill_buffer
    .8byte  .Lfill_buffer_end - fill_buffer
    .uleb128 1
    .byte   0x9c

    .uleb128 9
    .asciz  "read_counter"
    .4byte  .Ltype_ulong - .Lcu
    .8byte  read_counter
    .8byte  .Lread_counter_end - read_counter
    .uleb128 1
    .byte   0x9c

    .uleb128 8
    .asciz  "puts"
    .8byte  puts
    .8byte  .Lputs_end - puts
    .uleb128 1
    .byte   0x9c

    .uleb128 8
    .asciz  "uart_putc"
    .8byte  uart_putc
    .8byte  .Luart_putc_end - uart_putc
    .uleb128 1
    .byte   0x9c

    .byte   0                           // end of compile unit children
.Lcu_end:
