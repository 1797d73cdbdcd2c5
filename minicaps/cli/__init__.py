"""The command line, a thin click layer over the library: the group with evaluate and
predict (main.py), train (train.py), the measuring and picture tools (tools.py), and the
option types and declarations they share (options.py). The library never imports click."""
