"""The reference maths: forward/backward pairs, each proven against finite differences.

`out, cache = name_forward(x, ...)` and `dx, ... = name_backward(dout, cache)`. Nothing here
imports from above this folder except the backend and the error type.
"""
