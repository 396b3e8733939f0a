# server: guests/build/debug_unit.elf
# elf: guests/build/debug_unit.elf
# Stores hitting a watched doubleword that is not their first: stp (16 bytes), str pre-index writeback, and
# DC ZVA (a 64-byte store) on a doubleword inside the zeroed block.
watch *(long *)((char *)&pair_buf + 8)
set $pc = case_stp
set $x0 = &pair_buf
set $x1 = 0x1111
set $x2 = 0x2222
continue
x/2gx &pair_buf
delete
watch *(long *)((char *)&u64_var + 8)
set $pc = case_str_writeback
set $x0 = &u64_var
set $x1 = 0x3333
continue
p/x $x0 - (long)&u64_var
delete
watch *(long *)((char *)&mask_area + 64 + 40)
set $pc = case_dc_zva
set $x0 = (char *)&mask_area + 64 + 8
continue
x/2gx (char *)&mask_area + 64 + 32
