# Memory: reads, writes through gdb variables and raw addresses, and a read outside guest RAM.
x/16gx 0x40000000
x/8xb &counter
set var counter = 3
p counter
set {unsigned long}&buffer = 0x5555aaaa
x/2gx &buffer
set var point.y = 42
p point
x/2gx 0x3ffffff8
x/4i $pc
