# server: guests/build/spin.elf
# elf: guests/build/spin.elf
# Ctrl-C while the guest runs (gdb gets SIGINT from a timer and sends 0x03): a SIGINT stop.
# The guest is first brought to its one-instruction spin loop, so where it stops does not depend on when.
break spin
continue
delete
python import os, signal, threading; threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
continue
p/x $pc
p/x $x0
