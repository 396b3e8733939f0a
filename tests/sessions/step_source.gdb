# Source-level stepping in the assembly guest: step, next, finish, backtrace.
break update_point
continue
next
next
step
bt
finish
