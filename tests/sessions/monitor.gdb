# monitor (qRcmd) commands.
monitor help
monitor caps
monitor slots
monitor bogus
hbreak add_one
continue
monitor slots
