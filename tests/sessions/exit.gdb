# server: guests/build/bench_loop.elf
# elf: guests/build/bench_loop.elf
# The guest powers off (PSCI SYSTEM_OFF): gdb sees it exit.
set *(long *)&loop_iterations = 3
continue
