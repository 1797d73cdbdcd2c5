"""2-D convolution as matrix products over im2col columns.

Weights are (C, kh, kw, O): input channels and kernel offsets first, output channels last,
as the linear layers' (in, out). (PyTorch's (O, C, kh, kw) is the same numbers with O
moved to the front.) The weight matrix (C*kh*kw, O) of any range of input channels is
then a block of contiguous rows of w, on both devices, and so is its gradient, which the
weight-gradient product writes in place.

im2col copies a strided view of the input, its windows (`windows`: the columns as a view,
nothing copied); col2im adds the columns back through the same view, a kernel offset at a
time (kh*kw strided slices: the windows of one offset do not overlap, those of
neighbouring offsets do). No scatter-add, so the same code runs on NumPy and CuPy. Columns
are laid out (C, kh, kw, oh, ow, B): the weights' own order, so that nothing is reordered;
and batch last, so that the copies move runs of B contiguous numbers instead of runs of ow
(6 for the paper's primary capsules).

The columns of a whole batch are big: the largest part of a training step's memory when
kept for backward. So the convolution works through the input channels in groups,
building only that group's columns, and backward rebuilds them instead of keeping them:
one more im2col's worth of copying for a memory ceiling of COLUMN_BYTES per group, or an
eighth of the whole columns where that takes more than MAX_GROUPS groups. Each group is
still one large matrix product, and every weight's gradient is computed over the whole
batch at once, so nothing is accumulated across chunks. Each group's columns are freed
before the next group's (and, in backward, before their own gradient) are made.

The batch-last convolution takes the two column functions as keyword arguments, this
module's by default (minicaps/fast/dispatch.py passes threaded or fused ones).
"""
from ..backend import get_array_module

COLUMN_BYTES = 16 * 2 ** 20  # a group's columns, the same on both devices
# Each group costs some fixed work (Python, and on the GPU a few launches): past this many
# groups the columns of one group are small next to the step's activations, so a large
# batch lets its groups grow past COLUMN_BYTES rather than multiply.
MAX_GROUPS = 8


def output_size(size, kernel, stride, pad):
    """Output length of a convolution along one axis."""
    return (size + 2 * pad - kernel) // stride + 1


def to_batch_last(x):
    """x (B, C, H, W) as a contiguous (C, H, W, B)."""
    return get_array_module(x).ascontiguousarray(x.transpose(1, 2, 3, 0))


def to_batch_first(xt):
    """xt (C, H, W, B) as a contiguous (B, C, H, W)."""
    return get_array_module(xt).ascontiguousarray(xt.transpose(3, 0, 1, 2))


def pad_spatial(xt, pad):
    """xt (C, H, W, B) with `pad` zeros on each side of H and W."""
    if not pad:
        return xt
    return get_array_module(xt).pad(xt, ((0, 0), (pad, pad), (pad, pad), (0, 0)))


def channel_groups(channels, channel_bytes):
    """Slices of range(channels), of near-equal sizes, whose columns (channel_bytes per
    channel) fit in COLUMN_BYTES: at least one channel each, at most MAX_GROUPS groups."""
    per_group = max(1, COLUMN_BYTES // channel_bytes)
    n = min(MAX_GROUPS, -(-channels // per_group))
    bounds = [channels * g // n for g in range(n + 1)]
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]


def largest_group(channels, channel_bytes):
    """Channels in the largest of channel_groups' groups (the planner sizes memory by it)."""
    return max(group.stop - group.start for group in channel_groups(channels, channel_bytes))


def groups(xt, kh, kw, oh, ow):
    """channel_groups of xt (C, H, W, B) for a kh x kw kernel with oh x ow outputs."""
    C, _, _, B = xt.shape
    return channel_groups(C, kh * kw * oh * ow * B * xt.dtype.itemsize)


def windows(xt, kh, kw, oh, ow, stride):
    """xt (C, H, W, B) seen as its columns (C, kh, kw, oh, ow, B), without a copy: entry
    [c, i, j, y, x, b] is xt[c, i + stride*y, j + stride*x, b]. Windows overlap, so only
    one kernel offset [:, i, j] of it may be written at a time."""
    xp = get_array_module(xt)
    C, _, _, B = xt.shape
    sc, sh, sw, sb = xt.strides
    return xp.lib.stride_tricks.as_strided(
        xt, (C, kh, kw, oh, ow, B), (sc, sh, sw, stride * sh, stride * sw, sb))


def columns(xt, kh, kw, oh, ow, stride):
    """Columns (C, kh, kw, oh, ow, B) of xt (C, H, W, B): one copy of the window view."""
    return get_array_module(xt).ascontiguousarray(windows(xt, kh, kw, oh, ow, stride))


def add_columns(dxt, dcols, stride):
    """The adjoint of `columns`: add dcols (C, kh, kw, oh, ow, B) into dxt (C, H, W, B),
    offset by offset (one offset's windows do not overlap)."""
    _, kh, kw, oh, ow, _ = dcols.shape
    view = windows(dxt, kh, kw, oh, ow, stride)
    for i in range(kh):
        for j in range(kw):
            view[:, i, j] += dcols[:, i, j]


def im2col(x, kh, kw, *, stride=1, pad=0):
    """Patches of x (B, C, H, W) as columns (C, kh, kw, oh, ow, B)."""
    _, _, H, W = x.shape
    oh, ow = output_size(H, kh, stride, pad), output_size(W, kw, stride, pad)
    return columns(pad_spatial(to_batch_last(x), pad), kh, kw, oh, ow, stride)


def col2im(cols, x_shape, *, stride=1, pad=0):
    """The adjoint of im2col: sums every column entry back onto the pixel it came from."""
    xp = get_array_module(cols)
    C, kh, kw, oh, ow, B = cols.shape
    _, _, H, W = x_shape
    dxt = xp.zeros((C, H + 2 * pad, W + 2 * pad, B), dtype=cols.dtype)
    add_columns(dxt, cols, stride)
    return to_batch_first(dxt[:, pad:pad + H, pad:pad + W])


def group_weights(w, group):
    """The (g*kh*kw, O) weight matrix of input channels `group`: contiguous rows of w
    (C, kh, kw, O), a view."""
    return w[group].reshape(-1, w.shape[-1])


def conv2d_forward_batch_last(xt, w, b, *, stride=1, pad=0, columns=columns):
    """The convolution on batch-last arrays: xt (C, H, W, B) -> out (O, oh, ow, B).

    The capsule network keeps its feature maps batch-last from conv1 to the primary
    capsules, which saves transposing copies of conv1's output in every step."""
    xt = pad_spatial(xt, pad)
    C, kh, kw, O = w.shape
    _, H, W, B = xt.shape
    oh, ow = output_size(H, kh, stride, 0), output_size(W, kw, stride, 0)
    out = None
    for group in groups(xt, kh, kw, oh, ow):
        cols = columns(xt[group], kh, kw, oh, ow, stride)  # (g, kh, kw, oh, ow, B)
        w_group = group_weights(w, group)  # (g*kh*kw, O)
        part = w_group.T @ cols.reshape(w_group.shape[0], -1)  # (O, oh*ow*B)
        del cols  # before the next group's columns are built
        if out is None:
            out = part
        else:
            out += part
    out = out.reshape(O, oh, ow, B)
    out += b.reshape(O, 1, 1, 1)
    return out, (xt, w, stride, pad)


def conv2d_backward_batch_last(dout, cache, *, need_dx=True, columns=columns,
                               add_columns=add_columns):
    """dxt (C, H, W, B) or None, dw, db from dout (O, oh, ow, B). dxt is None when need_dx
    is False (the input layer needs no gradient, and col2im is a large part of backward)."""
    xt, w, stride, pad = cache
    xp = get_array_module(dout)
    C, kh, kw, O = w.shape
    _, oh, ow, _ = dout.shape
    dout_2d = dout.reshape(O, -1)  # (O, oh*ow*B)
    dw = xp.empty(w.shape, dtype=w.dtype)  # C order, whatever w's: its groups' rows are views
    dxt = xp.zeros_like(xt) if need_dx else None
    for group in groups(xt, kh, kw, oh, ow):
        cols = columns(xt[group], kh, kw, oh, ow, stride)
        cols_shape = cols.shape
        cols_2d = cols.reshape(-1, dout_2d.shape[1])  # (g*kh*kw, oh*ow*B)
        xp.matmul(cols_2d, dout_2d.T, out=group_weights(dw, group))  # in place: a view
        del cols, cols_2d  # freed before the columns' gradient, as large, is made
        if need_dx:
            dcols = group_weights(w, group) @ dout_2d  # (g*kh*kw, oh*ow*B)
            add_columns(dxt[group], dcols.reshape(cols_shape), stride)
            del dcols  # before the next group's columns are built
    if need_dx and pad:
        dxt = dxt[:, pad:-pad, pad:-pad]
    return dxt, dw, dout_2d.sum(axis=1)


def conv2d_forward(x, w, b, *, stride=1, pad=0):
    """out[b, o] = sum over c, i, j of w[c, i, j, o] * patch[c, i, j] + b[o].

    x (B, C, H, W), w (C, kh, kw, O), b (O,) -> out (B, O, oh, ow).
    """
    out, cache = conv2d_forward_batch_last(to_batch_last(x), w, b, stride=stride, pad=pad)
    return out.transpose(3, 0, 1, 2), cache


def conv2d_backward(dout, cache, *, need_dx=True):
    """dx, dw, db for dout (B, O, oh, ow); dx is None when need_dx is False."""
    dxt, dw, db = conv2d_backward_batch_last(to_batch_last(dout), cache, need_dx=need_dx)
    return (None if dxt is None else to_batch_first(dxt)), dw, db
