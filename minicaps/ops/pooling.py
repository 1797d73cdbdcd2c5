"""Max pooling, the CNN baseline's answer to translation that capsules argue against.

Windows of size x size with the same stride (non-overlapping, as in the classic CNNs); an
input whose height or width is not a multiple of the window loses its last rows/columns,
as with PyTorch's default (floor) mode.
"""
from ..backend import get_array_module


def maxpool_forward(x, *, size=2):
    """x (B, C, H, W) -> out (B, C, H // size, W // size), the max of each window.

    Ties: the gradient goes to the first maximum in the window (row-major), so it is a
    valid subgradient; where two entries tie the max is not differentiable."""
    xp = get_array_module(x)
    B, C, H, W = x.shape
    oh, ow = H // size, W // size
    windows = x[:, :, :oh * size, :ow * size].reshape(B, C, oh, size, ow, size)
    windows = windows.transpose(0, 1, 2, 4, 3, 5).reshape(B, C, oh, ow, size * size)
    arg = windows.argmax(axis=-1)  # (B, C, oh, ow)
    out = xp.take_along_axis(windows, arg[..., None], axis=-1)[..., 0]
    return out, (arg, x.shape, size)


def maxpool_backward(dout, cache):
    """Each window's gradient flows to its maximum; the rest of the window gets 0."""
    xp = get_array_module(dout)
    arg, x_shape, size = cache
    B, C, H, W = x_shape
    oh, ow = dout.shape[2:]
    dwin = (xp.arange(size * size) == arg[..., None]) * dout[..., None]  # (B,C,oh,ow,s*s)
    dwin = dwin.reshape(B, C, oh, ow, size, size).transpose(0, 1, 2, 4, 3, 5)
    dx = xp.zeros(x_shape, dtype=dout.dtype)
    dx[:, :, :oh * size, :ow * size] = dwin.reshape(B, C, oh * size, ow * size)
    return dx
