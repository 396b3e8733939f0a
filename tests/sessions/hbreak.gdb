# Hardware breakpoints (Z1): a hit is reported as hwbreak:, stepi and continue make progress.
hbreak fill_buffer
continue
p counter
stepi
p/x $pc
continue
p counter
