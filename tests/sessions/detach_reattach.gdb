# server: guests/build/spin.elf
# elf: guests/build/spin.elf
# detach lets the guest run on; the next client halts it where it is (spinning on one instruction).
break spin
continue
delete
stepi
detach
eval "target remote 127.0.0.1:%d", $port
p/x $pc
info breakpoints
