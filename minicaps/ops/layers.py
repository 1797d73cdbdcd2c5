"""Fully connected layer and the two activations the decoder needs."""
from ..backend import get_array_module


def linear_forward(x, w, b):
    """x (B, N_in) @ w (N_in, N_out) + b (N_out,). Weights are (in, out)."""
    return x @ w + b, (x, w)


def linear_backward(dout, cache):
    x, w = cache
    return dout @ w.T, x.T @ dout, dout.sum(axis=0)


def relu_forward(x):
    """max(0, x). At exactly 0 the gradient is taken as 0 (the subgradient PyTorch uses)."""
    out = get_array_module(x).maximum(x, 0)
    return out, out


def relu_backward(dout, cache):
    out = cache
    return dout * (out > 0)


def sigmoid_forward(x):
    """1 / (1 + exp(-x)), written as 0.5 * (1 + tanh(x / 2)): no overflow for large |x|."""
    xp = get_array_module(x)
    out = 0.5 * (1 + xp.tanh(0.5 * x))
    return out, out


def sigmoid_backward(dout, cache):
    out = cache  # the derivative needs only the output: s (1 - s)
    return dout * out * (1 - out)
