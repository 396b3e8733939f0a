# server: --wrps 2
# 9 bytes at point.y get an approximate 32-byte cover; the store to point.x (padding) stays invisible.
watch counter
watch *(unsigned char(*)[9])((char*)&point + 8)
continue
continue
continue
monitor slots
