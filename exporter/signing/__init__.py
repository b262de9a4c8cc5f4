"""Request signatures of the clouds we poll: pure functions, no I/O, no clocks of their own."""
