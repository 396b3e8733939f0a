# Malformed and unknown packets from a client: errors or empty replies, nothing changes, the session goes on.
maint packet mzz,4
maint packet m
maint packet m40000000
maint packet mffffffffffffffff,10
maint packet Z9,0,0
maint packet Z1,40000001,4
maint packet Z2,40001000,0
maint packet z2,40001000,8
maint packet qUnknownThing
maint packet vUnknown
maint packet Hg99
maint packet T5
maint packet p999
maint packet P0=12
maint packet X40001000,4:ab
maint packet M40001000,2:zz
maint packet vCont;q
maint packet G00
p counter
p/x $pc
