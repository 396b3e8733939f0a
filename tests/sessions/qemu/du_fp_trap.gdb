# server: guests/build/debug_unit.elf
# elf: guests/build/debug_unit.elf
# An FP/SIMD store at EL1 by a guest that never enabled FP/SIMD (CPACR_EL1.FPEN left at its reset value).
set $pc = case_str_q
set $x0 = &quad_buf
stepi
p/x $pc
