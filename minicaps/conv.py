"""2-D convolution as matrix products over im2col columns.

im2col and col2im move data with kh*kw strided slices (no scatter-add), so the same code
runs on NumPy and CuPy. Columns are laid out (C, kh, kw, oh, ow, B), batch last: each slice
then copies runs of B contiguous numbers instead of runs of ow (6 for the paper's primary
capsules), which made col2im 3-4 times faster on the CPU.

The columns of a whole batch are big (95 MB for the paper's primary capsules at batch 32,
380 MB at 128): the largest part of a training step's memory when kept for backward. So
the convolution works through the kernel's rows in groups, building only that group's
columns, and backward rebuilds them instead of keeping them: one more im2col's worth of
copying for a memory ceiling of COLUMN_BYTES. Each group is still one large matrix product
(for the primary capsules a row alone has C*kw = 2304 terms), and every weight row's
gradient is computed over the whole batch at once, so nothing is accumulated across chunks.
"""
from .backend import get_array_module

COLUMN_BYTES = {"numpy": 16 * 2 ** 20, "cupy": 1024 * 2 ** 20}


def output_size(size, kernel, stride, pad):
    """Output length of a convolution along one axis."""
    return (size + 2 * pad - kernel) // stride + 1


def _batch_last(x, pad):
    """x (B, C, H, W) as (C, H + 2 pad, W + 2 pad, B), zero-padded."""
    xp = get_array_module(x)
    xt = xp.ascontiguousarray(x.transpose(1, 2, 3, 0))
    return xp.pad(xt, ((0, 0), (pad, pad), (pad, pad), (0, 0))) if pad else xt


def _columns(xt, rows, kw, oh, ow, stride):
    """Columns (C, len(rows), kw, oh, ow, B) of kernel rows `rows` from xt (C, H', W', B)."""
    xp = get_array_module(xt)
    C, _, _, B = xt.shape
    cols = xp.empty((C, len(rows), kw, oh, ow, B), dtype=xt.dtype)
    for n, i in enumerate(rows):
        for j in range(kw):
            cols[:, n, j] = xt[:, i:i + stride * oh:stride, j:j + stride * ow:stride]
    return cols


def _add_columns(dxt, dcols, rows, stride):
    """The adjoint of _columns: add dcols (C, len(rows), kw, oh, ow, B) into dxt."""
    _, _, kw, oh, ow, _ = dcols.shape
    for n, i in enumerate(rows):
        for j in range(kw):
            dxt[:, i:i + stride * oh:stride, j:j + stride * ow:stride] += dcols[:, n, j]


def im2col(x, kh, kw, *, stride=1, pad=0):
    """Patches of x (B, C, H, W) as columns (C, kh, kw, oh, ow, B)."""
    _, _, H, W = x.shape
    oh, ow = output_size(H, kh, stride, pad), output_size(W, kw, stride, pad)
    return _columns(_batch_last(x, pad), range(kh), kw, oh, ow, stride)


def col2im(cols, x_shape, *, stride=1, pad=0):
    """The adjoint of im2col: sums every column entry back onto the pixel it came from."""
    xp = get_array_module(cols)
    C, kh, kw, oh, ow, B = cols.shape
    _, _, H, W = x_shape
    dxt = xp.zeros((C, H + 2 * pad, W + 2 * pad, B), dtype=cols.dtype)
    _add_columns(dxt, cols, range(kh), stride)
    return xp.ascontiguousarray(dxt[:, pad:pad + H, pad:pad + W].transpose(3, 0, 1, 2))


def _row_groups(xt, w, oh, ow):
    """Kernel rows in groups whose columns fit in COLUMN_BYTES (at least one row each)."""
    xp = get_array_module(xt)
    C, _, _, B = xt.shape
    kh, kw = w.shape[2:]
    row_bytes = C * kw * oh * ow * B * xt.dtype.itemsize
    size = max(1, min(kh, COLUMN_BYTES[xp.__name__] // row_bytes))
    return [range(i, min(kh, i + size)) for i in range(0, kh, size)]


def conv2d_forward(x, w, b, *, stride=1, pad=0):
    """out[b, o] = sum over c, kh, kw of w[o, c] * patch + b[o].

    x (B, C, H, W), w (O, C, kh, kw), b (O,) -> out (B, O, oh, ow).
    """
    xp = get_array_module(x)
    O, C, kh, kw = w.shape
    B, _, H, W = x.shape
    oh, ow = output_size(H, kh, stride, pad), output_size(W, kw, stride, pad)
    xt = _batch_last(x, pad)  # (C, H', W', B)
    out = None
    for rows in _row_groups(xt, w, oh, ow):
        cols = _columns(xt, rows, kw, oh, ow, stride)  # (C, g, kw, oh, ow, B)
        w_rows = w[:, :, rows.start:rows.stop].reshape(O, -1)  # (O, C*g*kw)
        part = w_rows @ cols.reshape(w_rows.shape[1], -1)  # (O, oh*ow*B)
        out = part if out is None else out + part
    out = out.reshape(O, oh, ow, B).transpose(3, 0, 1, 2) + b.reshape(1, O, 1, 1)
    return out, (xt, x.shape, w, stride, pad)


def conv2d_backward(dout, cache, *, need_dx=True):
    """dx, dw, db for dout (B, O, oh, ow). dx is None when need_dx is False (the input
    layer needs no gradient, and col2im is a fifth of the backward pass)."""
    xt, x_shape, w, stride, pad = cache
    xp = get_array_module(dout)
    O, C, kh, kw = w.shape
    B, _, oh, ow = dout.shape
    _, _, H, W = x_shape
    dout_2d = xp.ascontiguousarray(dout.transpose(1, 2, 3, 0)).reshape(O, -1)  # (O, oh*ow*B)
    dw = xp.empty_like(w)
    dxt = xp.zeros_like(xt) if need_dx else None
    for rows in _row_groups(xt, w, oh, ow):
        cols = _columns(xt, rows, kw, oh, ow, stride)
        cols_2d = cols.reshape(-1, dout_2d.shape[1])  # (C*g*kw, oh*ow*B)
        dw[:, :, rows.start:rows.stop] = (dout_2d @ cols_2d.T).reshape(O, C, len(rows), kw)
        if need_dx:
            w_rows = w[:, :, rows.start:rows.stop].reshape(O, -1)
            _add_columns(dxt, (w_rows.T @ dout_2d).reshape(cols.shape), rows, stride)
    dx = None
    if need_dx:
        dx = xp.ascontiguousarray(dxt[:, pad:pad + H, pad:pad + W].transpose(3, 0, 1, 2))
    return dx, dw, dout_2d.sum(axis=1)
