# server: guests/build/debug_unit.elf
# elf: guests/build/debug_unit.elf
# Unaligned accesses that do not touch the watched bytes: no hit, the hardware breakpoint after the access
# stops the guest.  An access watch on u64_var and a store at straddle_buf + 6 (same page); a read watch on
# straddle_buf + 10 and a load of the 4 bytes at straddle_buf + 6.
awatch *(long *)&u64_var
hbreak *(case_str_w_straddle + 4)
set $pc = case_str_w_straddle
set $x0 = (char *)&straddle_buf + 6
set $x1 = 0x11223344
continue
p/x $pc
delete
rwatch *(char *)((char *)&straddle_buf + 10)
hbreak *(case_ldr_w_straddle + 4)
set $pc = case_ldr_w_straddle
continue
p/x $pc
