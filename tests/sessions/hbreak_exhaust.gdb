# Seven hardware breakpoints for six BRPs: refused at continue; deleting one frees its slot.
hbreak add_one
hbreak update_point
hbreak touch_unaligned
hbreak fill_buffer
hbreak read_counter
hbreak puts
hbreak uart_putc
continue
delete 7
continue
continue
