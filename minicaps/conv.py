"""2-D convolution as one matrix product over im2col columns.

im2col and col2im move data with kh*kw strided slices (no scatter-add), so the same code
runs on NumPy and CuPy. Columns are laid out (C, kh, kw, oh, ow, B), batch last: each slice
then copies runs of B contiguous numbers instead of runs of ow (6 for the paper's primary
capsules), which made col2im 3-4 times faster on the CPU. The forward pass is a single
GEMM, weights (O, C*kh*kw) times columns (C*kh*kw, oh*ow*B).
"""
from .backend import get_array_module


def output_size(size, kernel, stride, pad):
    """Output length of a convolution along one axis."""
    return (size + 2 * pad - kernel) // stride + 1


def im2col(x, kh, kw, *, stride=1, pad=0):
    """Patches of x (B, C, H, W) as columns (C, kh, kw, oh, ow, B)."""
    xp = get_array_module(x)
    B, C, H, W = x.shape
    oh, ow = output_size(H, kh, stride, pad), output_size(W, kw, stride, pad)
    xt = xp.ascontiguousarray(x.transpose(1, 2, 3, 0))  # (C, H, W, B)
    if pad:
        xt = xp.pad(xt, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    cols = xp.empty((C, kh, kw, oh, ow, B), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, i, j] = xt[:, i:i + stride * oh:stride, j:j + stride * ow:stride]
    return cols


def col2im(cols, x_shape, *, stride=1, pad=0):
    """The adjoint of im2col: sums every column entry back onto the pixel it came from."""
    xp = get_array_module(cols)
    C, kh, kw, oh, ow, B = cols.shape
    _, _, H, W = x_shape
    xt = xp.zeros((C, H + 2 * pad, W + 2 * pad, B), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            xt[:, i:i + stride * oh:stride, j:j + stride * ow:stride] += cols[:, i, j]
    if pad:
        xt = xt[:, pad:pad + H, pad:pad + W]
    return xp.ascontiguousarray(xt.transpose(3, 0, 1, 2))  # (B, C, H, W)


def conv2d_forward(x, w, b, *, stride=1, pad=0):
    """out[b, o] = sum over c, kh, kw of w[o, c] * patch + b[o].

    x (B, C, H, W), w (O, C, kh, kw), b (O,) -> out (B, O, oh, ow).
    """
    O, C, kh, kw = w.shape
    cols = im2col(x, kh, kw, stride=stride, pad=pad)  # (C, kh, kw, oh, ow, B)
    _, _, _, oh, ow, B = cols.shape
    out = w.reshape(O, -1) @ cols.reshape(C * kh * kw, -1)  # (O, oh*ow*B)
    out = out.reshape(O, oh, ow, B).transpose(3, 0, 1, 2) + b.reshape(1, O, 1, 1)
    return out, (cols, x.shape, w, stride, pad)


def conv2d_backward(dout, cache, *, need_dx=True):
    """dx, dw, db for dout (B, O, oh, ow). dx is None when need_dx is False (the input
    layer needs no gradient, and col2im is a fifth of the backward pass)."""
    cols, x_shape, w, stride, pad = cache
    O = w.shape[0]
    xp = get_array_module(dout)
    dout_t = xp.ascontiguousarray(dout.transpose(1, 2, 3, 0)).reshape(O, -1)  # (O, oh*ow*B)
    cols_2d = cols.reshape(-1, dout_t.shape[1])  # (C*kh*kw, oh*ow*B)
    dw = (dout_t @ cols_2d.T).reshape(w.shape)
    db = dout_t.sum(axis=1)
    dx = None
    if need_dx:
        dcols = (w.reshape(O, -1).T @ dout_t).reshape(cols.shape)
        dx = col2im(dcols, x_shape, stride=stride, pad=pad)
    return dx, dw, db
