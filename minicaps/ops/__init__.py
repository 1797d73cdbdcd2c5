"""The reference maths: forward/backward pairs, each proven against finite differences.

`out, cache = name_forward(x, ...)` and `dx, ... = name_backward(dout, cache)`. Nothing here
imports from above this folder except the backend and the error type, and nothing here
knows the fast paths. An op built from smaller ops (the convolution from its columns, the
primary capsules from a convolution and squash, routing from softmax and squash) takes
them as keyword arguments, this folder's own by default: minicaps/fast/dispatch.py is the
one caller that hands in others. adam.py holds the optimizer's arithmetic, which has fast
paths of its own.
"""
