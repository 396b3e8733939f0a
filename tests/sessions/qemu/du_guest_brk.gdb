# server: guests/build/debug_unit.elf
# elf: guests/build/debug_unit.elf
# The guest's own `brk #0x42` (not a gdb breakpoint), stepped over and run into; a hardware breakpoint on
# the EL1 synchronous exception vector (VBAR_EL1 = 0 at reset: 0x200) catches the exception if it is taken.
hbreak *0x200
set $pc = case_brk
stepi
p/x $pc
set $pc = case_brk
continue
p/x $pc
