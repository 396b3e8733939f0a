# Machine-level stepping: stepi, nexti over a call, stepi into a call.
stepi
stepi 3
p/x $pc
break add_one
continue
finish
nexti
p/x $pc
stepi
p/x $pc
info registers pc sp x29 x30
