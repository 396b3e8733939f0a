# A client that disconnects without detaching: the next one finds the guest halted and intact,
# with the first client's breakpoints gone.
break fill_buffer
hbreak read_counter
continue
set $x5 = 0x1234
set var counter = 77
disconnect
eval "target remote 127.0.0.1:%d", $port
p/x $pc
p/x $x5
p counter
stepi
p/x $pc
