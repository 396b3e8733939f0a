# Guest faults: an undefined instruction (SIGILL) and a fetch outside RAM (SIGSEGV); state is preserved.
set $pc = &stack
stepi
p/x $pc
set $pc = 0x1000
stepi
p/x $pc
set $pc = _start
stepi
p/x $pc
