"""2-D convolution as matrix products over im2col columns.

The portable im2col and col2im move data with kh*kw strided slices (no scatter-add), so
the same code runs on NumPy and CuPy. Columns are laid out (kh, C, kw, oh, ow, B): kernel
row first, so that one (row, column) offset of the kernel is one contiguous block of the
columns, and batch last, so that each slice copies runs of B contiguous numbers instead of
runs of ow (6 for the paper's primary capsules), which made col2im 3-4 times faster on the
CPU.

The columns of a whole batch are big (95 MB for the paper's primary capsules at batch 32,
380 MB at 128): the largest part of a training step's memory when kept for backward. So
the convolution works through the kernel's rows in groups, building only that group's
columns, and backward rebuilds them instead of keeping them: one more im2col's worth of
copying for a memory ceiling of COLUMN_BYTES. Each group is still one large matrix product
(for the primary capsules a row alone has C*kw = 2304 terms), and every weight row's
gradient is computed over the whole batch at once, so nothing is accumulated across chunks.
Forward puts the weights in the columns' order once, (O, kh, C, kw), so that each group's
weight matrix is a view (NumPy multiplies it in place; CuPy copies a matrix whose rows are
not adjacent, so there a group of fewer than kh rows still costs a copy); backward instead
reorders each group's rows on their own, so that it never holds the reordered weights whole
beside their gradient (21 MB each for the primary capsules, a quarter of a step's peak at
batch 32).

On the GPU the columns and their adjoint are built by fused kernels (minicaps/kernels.py),
one launch per group instead of kh*kw slice copies, and the ceiling is the CPU's: a group
of the paper's primary capsules is then one kernel row from batch 32 up (at 128 a matrix
product of 256 x 2304 x 4608, still enough to keep the GPU busy), and the columns take a
ninth of the memory that the whole kernel's would. Each group's columns are freed before
the next group's (and, in backward, before their own gradient) are made.
"""
from . import kernels
from .backend import get_array_module
from .parallel import in_parts

COLUMN_BYTES = 16 * 2 ** 20  # the same on both devices (see above)


def output_size(size, kernel, stride, pad):
    """Output length of a convolution along one axis."""
    return (size + 2 * pad - kernel) // stride + 1


def to_batch_last(x, pad=0):
    """x (B, C, H, W) as (C, H + 2 pad, W + 2 pad, B), zero-padded."""
    xp = get_array_module(x)
    xt = xp.ascontiguousarray(x.transpose(1, 2, 3, 0))
    return xp.pad(xt, ((0, 0), (pad, pad), (pad, pad), (0, 0))) if pad else xt


def _columns(xt, rows, kw, oh, ow, stride):
    """Columns (len(rows), C, kw, oh, ow, B) of kernel rows `rows` from xt (C, H', W', B)."""
    if kernels.fused(xt):
        return kernels.columns(xt, rows, kw, oh, ow, stride)
    xp = get_array_module(xt)
    C, _, _, B = xt.shape
    cols = xp.empty((len(rows), C, kw, oh, ow, B), dtype=xt.dtype)

    def copy(c0, c1):
        for n, i in enumerate(rows):
            for j in range(kw):
                cols[n, c0:c1, j] = xt[c0:c1, i:i + stride * oh:stride, j:j + stride * ow:stride]

    in_parts(xt, xt.shape[0], copy)  # channel ranges in parallel threads
    return cols


def _add_columns(dxt, dcols, rows, stride):
    """The adjoint of _columns: add dcols (len(rows), C, kw, oh, ow, B) into dxt."""
    if kernels.fused(dxt):
        kernels.add_columns(dxt, dcols, rows, stride)
        return
    _, _, kw, oh, ow, _ = dcols.shape

    def add(c0, c1):
        for n, i in enumerate(rows):
            for j in range(kw):
                dxt[c0:c1, i:i + stride * oh:stride, j:j + stride * ow:stride] += dcols[n, c0:c1, j]

    in_parts(dxt, dxt.shape[0], add)


def im2col(x, kh, kw, *, stride=1, pad=0):
    """Patches of x (B, C, H, W) as columns (kh, C, kw, oh, ow, B)."""
    _, _, H, W = x.shape
    oh, ow = output_size(H, kh, stride, pad), output_size(W, kw, stride, pad)
    return _columns(to_batch_last(x, pad), range(kh), kw, oh, ow, stride)


def col2im(cols, x_shape, *, stride=1, pad=0):
    """The adjoint of im2col: sums every column entry back onto the pixel it came from."""
    xp = get_array_module(cols)
    kh, C, kw, oh, ow, B = cols.shape
    _, _, H, W = x_shape
    dxt = xp.zeros((C, H + 2 * pad, W + 2 * pad, B), dtype=cols.dtype)
    _add_columns(dxt, cols, range(kh), stride)
    return xp.ascontiguousarray(dxt[:, pad:pad + H, pad:pad + W].transpose(3, 0, 1, 2))


def _row_groups(xt, kh, kw, oh, ow):
    """Kernel rows in groups whose columns fit in COLUMN_BYTES (at least one row each)."""
    C, _, _, B = xt.shape
    row_bytes = C * kw * oh * ow * B * xt.dtype.itemsize
    size = max(1, min(kh, COLUMN_BYTES // row_bytes))
    return [range(i, min(kh, i + size)) for i in range(0, kh, size)]


def by_kernel_row(w):
    """w (O, C, kh, kw) in the columns' order, (O, kh, C, kw), contiguous."""
    return get_array_module(w).ascontiguousarray(w.transpose(0, 2, 1, 3))


def _row_weights(w_by_row, rows):
    """The (O, g*C*kw) weight matrix of kernel rows `rows`: a view of w_by_row."""
    return w_by_row[:, rows.start:rows.stop].reshape(w_by_row.shape[0], -1)


def _kernel_rows(w, rows):
    """The (O, C, g, kw) part of w (O, C, kh, kw) that holds kernel rows `rows`."""
    return w[:, :, rows.start:rows.stop]


def conv2d_forward_batch_last(xt, w, b, *, stride=1, pad=0):
    """The convolution on batch-last arrays: xt (C, H, W, B) -> out (O, oh, ow, B).

    The capsule network keeps its feature maps batch-last from conv1 to the primary
    capsules, which saves four transposing copies of conv1's output per training step."""
    O, C, kh, kw = w.shape
    if pad:
        xt = get_array_module(xt).pad(xt, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    _, H, W, B = xt.shape
    oh, ow = output_size(H, kh, stride, 0), output_size(W, kw, stride, 0)
    w_by_row = by_kernel_row(w)
    out = None
    for rows in _row_groups(xt, kh, kw, oh, ow):
        cols = _columns(xt, rows, kw, oh, ow, stride)  # (g, C, kw, oh, ow, B)
        w_rows = _row_weights(w_by_row, rows)  # (O, g*C*kw)
        part = w_rows @ cols.reshape(w_rows.shape[1], -1)  # (O, oh*ow*B)
        del cols  # before the next group's columns are built
        if out is None:
            out = part
        else:
            out += part
    out = out.reshape(O, oh, ow, B)
    out += b.reshape(O, 1, 1, 1)
    return out, (xt, w, stride, pad)


def conv2d_backward_batch_last(dout, cache, *, need_dx=True):
    """dxt (C, H, W, B) or None, dw, db from dout (O, oh, ow, B)."""
    xt, w, stride, pad = cache
    xp = get_array_module(dout)
    O, C, kh, kw = w.shape
    _, oh, ow, _ = dout.shape
    dout_2d = dout.reshape(O, -1)  # (O, oh*ow*B)
    dw = xp.empty_like(w)
    dxt = xp.zeros_like(xt) if need_dx else None
    for rows in _row_groups(xt, kh, kw, oh, ow):
        cols = _columns(xt, rows, kw, oh, ow, stride)
        cols_shape = cols.shape
        cols_2d = cols.reshape(-1, dout_2d.shape[1])  # (g*C*kw, oh*ow*B)
        dw_rows = (dout_2d @ cols_2d.T).reshape(O, len(rows), C, kw)
        _kernel_rows(dw, rows)[...] = dw_rows.transpose(0, 2, 1, 3)
        del cols, cols_2d, dw_rows  # freed before the columns' gradient, as large, is made
        if need_dx:
            w_rows = by_kernel_row(_kernel_rows(w, rows)).reshape(O, -1)  # (O, g*C*kw)
            _add_columns(dxt, (w_rows.T @ dout_2d).reshape(cols_shape), rows, stride)
            del w_rows  # before the next group's columns are built
    if need_dx and pad:
        dxt = dxt[:, pad:-pad, pad:-pad]
    return dxt, dw, dout_2d.sum(axis=1)


def conv2d_forward(x, w, b, *, stride=1, pad=0):
    """out[b, o] = sum over c, kh, kw of w[o, c] * patch + b[o].

    x (B, C, H, W), w (O, C, kh, kw), b (O,) -> out (B, O, oh, ow).
    """
    out, cache = conv2d_forward_batch_last(to_batch_last(x, pad), w, b, stride=stride)
    return out.transpose(3, 0, 1, 2), (cache, pad)


def conv2d_backward(dout, cache, *, need_dx=True):
    """dx, dw, db for dout (B, O, oh, ow). dx is None when need_dx is False (the input
    layer needs no gradient, and col2im is a fifth of the backward pass)."""
    cache, pad = cache
    xp = get_array_module(dout)
    dxt, dw, db = conv2d_backward_batch_last(
        xp.ascontiguousarray(dout.transpose(1, 2, 3, 0)), cache, need_dx=need_dx)
    if dxt is None:
        return None, dw, db
    if pad:
        dxt = dxt[:, pad:-pad, pad:-pad]
    return xp.ascontiguousarray(dxt.transpose(3, 0, 1, 2)), dw, db
