# The connect handshake alone (target remote is done by the recorder), then where the guest is.
info registers pc
