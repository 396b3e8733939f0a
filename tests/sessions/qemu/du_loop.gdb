# server: guests/build/debug_unit.elf
# elf: guests/build/debug_unit.elf
# A store loop (4 iterations): a watchpoint on the third store, a hardware breakpoint on the loop's branch,
# stepi through the taken branch and the next store.
set $pc = case_fill_loop
set $x0 = &fill_buf
set $x1 = 4
set $x2 = 0x5a
watch *(long *)((char *)&fill_buf + 16)
continue
info registers x0 x1
delete
hbreak *(case_fill_loop + 8)
continue
stepi
stepi
info registers x0 x1 pc
x/4gx &fill_buf
