# server: guests/build/debug_unit.elf
# elf: guests/build/debug_unit.elf
# Watchpoints covering only part of a 4-byte access that straddles an 8-byte boundary (straddle_buf + 6):
# a write watch on the upper half, then a read watch on the lower half.
watch *(unsigned short *)((char *)&straddle_buf + 8)
set $pc = case_str_w_straddle
set $x0 = (char *)&straddle_buf + 6
set $x1 = 0x11223344
continue
x/2gx &straddle_buf
delete
rwatch *(unsigned short *)((char *)&straddle_buf + 6)
set $pc = case_ldr_w_straddle
continue
p/x $x1
