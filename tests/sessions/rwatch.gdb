# A read watchpoint (Z3).
rwatch point.y
continue
continue
