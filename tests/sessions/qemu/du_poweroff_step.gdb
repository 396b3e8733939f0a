# server: guests/build/debug_unit.elf
# elf: guests/build/debug_unit.elf
# A hardware breakpoint on the power-off `hvc #0`: gdb steps over it at the next continue, and the step
# powers the guest off.
hbreak case_hvc
continue
p/x $x0
continue
