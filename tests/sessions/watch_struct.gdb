# A 16-byte struct: one MASK WRP; both members' stores are seen.
watch point
continue
continue
continue
