# kill: the server stays, and so does the guest, for the next client.
stepi
kill
eval "target remote 127.0.0.1:%d", $port
p/x $pc
