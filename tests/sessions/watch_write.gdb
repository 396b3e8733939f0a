# A write watchpoint (Z2): old/new values after each store, continue makes progress.
watch counter
continue
continue
continue
