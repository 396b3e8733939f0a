# Software breakpoints (Z0, BRK #0): several, continue between them, delete, memory reads hide them.
break add_one
break fill_buffer
continue
x/i $pc
continue
continue
p counter
info breakpoints
delete 1
continue
p counter
