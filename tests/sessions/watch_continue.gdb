# Many continues after watch hits, a stepi after a hit, and a watch removed mid-way.
watch counter
continue
stepi
continue
continue
continue
delete
hbreak fill_buffer
continue
