# Registers: every register, gdb's p/set on general, vector and status registers.
info registers
info all-registers
p $x0
set $x1 = 5
p $x1
set $v3.d.u[1] = 0x1122334455667788
p/x $v3.d.u
set $cpsr = 0x600003c5
p/x $cpsr
set $fpcr = 0x3000000
p/x $fpcr
set $pc = 0x40000008
p/x $pc
