# A 64-byte aligned buffer: one MASK=6 WRP; each of the 8 stores is a separate hit.
watch buffer
continue
continue
continue
monitor slots
