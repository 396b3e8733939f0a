# server: --wrps 2
# Three watches that take one WRP each, for two WRPs: refused at continue; delete one and go on.
watch counter
watch point.y
watch buffer
continue
delete 3
continue
continue
