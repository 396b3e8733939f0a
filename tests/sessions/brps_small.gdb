# server: --brps 2
# A core with two BRPs: the third hbreak is refused.
hbreak add_one
hbreak update_point
hbreak fill_buffer
continue
delete 3
continue
monitor caps
