# Software and hardware breakpoints and a watchpoint together.
break read_counter
hbreak touch_unaligned
watch point.y
continue
continue
continue
continue
info breakpoints
