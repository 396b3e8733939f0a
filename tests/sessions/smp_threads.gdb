# server: guests/build/smp.elf --cpus 4
# elf: guests/build/smp.elf
# Four vCPUs as gdb threads: CPU 0 starts the others (PSCI CPU_ON); a breakpoint every CPU hits, a watch on
# one CPU's counter, and a step of one vCPU with scheduler locking.
info threads
hbreak cpu_work
continue
continue
continue
continue
info threads
delete
watch *(long *)((char *)&per_cpu + 128)
continue
p $_thread
delete
set scheduler-locking step
thread 2
stepi
p/x $pc
thread apply all p/x $x19
