# An access watchpoint (Z4): reads and writes.
awatch point.y
continue
continue
continue
