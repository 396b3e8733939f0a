# The vCPU as gdb thread 1.
info threads
thread 1
thread
p $_thread
