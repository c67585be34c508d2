"""The command line's edge: the click group, the options every command shares, and the one Console that renders."""
