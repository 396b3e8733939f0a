# server: guests/build/debug_unit.elf
# elf: guests/build/debug_unit.elf
# debug_unit from its entry: prints its banner on the UART and powers off (PSCI SYSTEM_OFF over HVC).
continue
