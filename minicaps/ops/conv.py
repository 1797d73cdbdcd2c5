"""2-D convolution as matrix products over im2col columns.

Weights are (C, kh, kw, O): input channels and kernel offsets first, output channels last,
as the linear layers' (in, out). (PyTorch's (O, C, kh, kw) is the same numbers with O
moved to the front.) The weight matrix (C*kh*kw, O) of any range of input channels is
then a block of contiguous rows of w, on both devices, and so is its gradient, which
the weight-gradient product writes in place: as columns @ dout^T, the form OpenBLAS runs
at 181-188 GFLOP/s on the development machine, against 160-172 for dout @ columns^T with
(O, ...) weights, which also needed each group's gradient copied into dw (README, "On the
CPU").

The portable im2col copies a strided view of the input, its windows (_windows: the
columns as a view, nothing copied), once per thread; col2im adds the columns back through
the same view, a kernel offset at a time (kh*kw strided slices: the windows of one offset
do not overlap, those of neighbouring offsets do). No scatter-add, so the same code runs on
NumPy and CuPy. Columns are laid out (C, kh, kw, oh, ow, B): the weights' own order, so
that nothing is reordered; and batch last, so that the copies move runs of B contiguous
numbers instead of runs of ow (6 for the paper's primary capsules), which made col2im 3-4
times faster on the CPU. One copy of the whole view built the columns in half the time of
kh*kw slice copies at batch 32 (each slice a Python call and a pass of its own).

The columns of a whole batch are big (95 MB for the paper's primary capsules at batch 32,
380 MB at 128): the largest part of a training step's memory when kept for backward. So
the convolution works through the input channels in groups, building only that group's
columns, and backward rebuilds them instead of keeping them: one more im2col's worth of
copying for a memory ceiling of COLUMN_BYTES per group, or an eighth of the whole columns
where that takes more than MAX_GROUPS groups (the primary capsules from batch 40 on). Each
group is still one large matrix product (for the primary capsules at batch 32, 42 channels
make 3402 terms), and every weight's gradient is computed over the whole batch at once, so
nothing is accumulated across chunks. Each group's columns are freed before the next
group's (and, in backward, before their own gradient) are made.

On the GPU the columns and their adjoint are built by fused kernels (minicaps/kernels.py),
one launch each per group.

The primary capsules ask for the spectral path (`spectral=True`): through the DFT
(minicaps/spectral.py), which for their 9x9 kernels over 256 channels needs under a third of the
multiply-adds and none of the columns, and which the CPU takes where it pays (from batch
24 for the paper's network); this module's im2col stays the path for everything else.
"""
import numpy as np

from ..fast import kernels
from ..fast import spectral as spectral_conv
from ..backend import get_array_module
from ..fast.parallel import in_parts, transposed

COLUMN_BYTES = 16 * 2 ** 20  # a group's columns, the same on both devices
# Each group costs some fixed work (Python, and on the GPU a few launches of ~10 us): past
# this many groups the columns of one group are small next to the step's activations, so
# a large batch lets its groups grow past COLUMN_BYTES rather than multiply.
MAX_GROUPS = 8


def output_size(size, kernel, stride, pad):
    """Output length of a convolution along one axis."""
    return (size + 2 * pad - kernel) // stride + 1


def to_batch_last(x, pad=0):
    """x (B, C, H, W) as (C, H + 2 pad, W + 2 pad, B), zero-padded."""
    xp = get_array_module(x)
    xt = transposed(x, (1, 2, 3, 0))
    return xp.pad(xt, ((0, 0), (pad, pad), (pad, pad), (0, 0))) if pad else xt


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


def _groups(xt, kh, kw, oh, ow):
    """channel_groups of xt (C, H, W, B) for a kh x kw kernel with oh x ow outputs."""
    C, _, _, B = xt.shape
    return channel_groups(C, kh * kw * oh * ow * B * xt.dtype.itemsize)


def _windows(xt, kh, kw, oh, ow, stride):
    """xt (C, H, W, B) seen as its columns (C, kh, kw, oh, ow, B), without a copy: entry
    [c, i, j, y, x, b] is xt[c, i + stride*y, j + stride*x, b]. Windows overlap, so only
    one kernel offset [:, i, j] of it may be written at a time."""
    xp = get_array_module(xt)
    C, _, _, B = xt.shape
    sc, sh, sw, sb = xt.strides
    return xp.lib.stride_tricks.as_strided(
        xt, (C, kh, kw, oh, ow, B), (sc, sh, sw, stride * sh, stride * sw, sb))


def _columns(xt, kh, kw, oh, ow, stride):
    """Columns (C, kh, kw, oh, ow, B) of xt (C, H, W, B)."""
    if kernels.fused(xt):
        return kernels.columns(xt, kh, kw, oh, ow, stride)
    xp = get_array_module(xt)
    windows = _windows(xt, kh, kw, oh, ow, stride)
    cols = xp.empty(windows.shape, dtype=xt.dtype)

    def copy(c0, c1):  # one copy of the whole window view: a slice per kernel offset, each
        cols[c0:c1] = windows[c0:c1]  # a Python call, took twice as long on the CPU

    in_parts(xt, xt.shape[0], copy)  # channel ranges in parallel threads
    return cols


def _add_columns(dxt, dcols, stride):
    """The adjoint of _columns: add dcols (C, kh, kw, oh, ow, B) into dxt (C, H, W, B)."""
    if kernels.fused(dxt):
        kernels.add_columns(dxt, dcols, stride)
        return
    _, kh, kw, oh, ow, _ = dcols.shape
    windows = _windows(dxt, kh, kw, oh, ow, stride)

    def add(c0, c1):  # offset by offset: one offset's windows do not overlap
        for i in range(kh):
            for j in range(kw):
                windows[c0:c1, i, j] += dcols[c0:c1, i, j]

    in_parts(dxt, dxt.shape[0], add)


def im2col(x, kh, kw, *, stride=1, pad=0):
    """Patches of x (B, C, H, W) as columns (C, kh, kw, oh, ow, B)."""
    _, _, H, W = x.shape
    oh, ow = output_size(H, kh, stride, pad), output_size(W, kw, stride, pad)
    return _columns(to_batch_last(x, pad), kh, kw, oh, ow, stride)


def col2im(cols, x_shape, *, stride=1, pad=0):
    """The adjoint of im2col: sums every column entry back onto the pixel it came from."""
    xp = get_array_module(cols)
    C, kh, kw, oh, ow, B = cols.shape
    _, _, H, W = x_shape
    dxt = xp.zeros((C, H + 2 * pad, W + 2 * pad, B), dtype=cols.dtype)
    _add_columns(dxt, cols, stride)
    return transposed(dxt[:, pad:pad + H, pad:pad + W], (3, 0, 1, 2))


def _group_weights(w, group):
    """The (g*kh*kw, O) weight matrix of input channels `group`: contiguous rows of w
    (C, kh, kw, O), a view."""
    return w[group].reshape(-1, w.shape[-1])


def conv2d_forward_batch_last(xt, w, b, *, stride=1, pad=0, spectral=False):
    """The convolution on batch-last arrays: xt (C, H, W, B) -> out (O, oh, ow, B).

    The capsule network keeps its feature maps batch-last from conv1 to the primary
    capsules, which saves four transposing copies of conv1's output per training step.
    With `spectral`, the convolution goes through the DFT (minicaps.spectral) where that
    pays (spectral.pays: large kernels over many channels, from some batch size on)."""
    if pad:
        xt = get_array_module(xt).pad(xt, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    if spectral and uses_spectral(xt.shape, w.shape, stride,
                                  on_cpu=get_array_module(xt) is np):
        out, cache = spectral_conv.forward(xt, w, b, stride)
        return out, (spectral_conv.backward, cache, pad)
    out, cache = _im2col_forward(xt, w, b, stride)
    return out, (_im2col_backward, cache, pad)


def uses_spectral(xt_shape, w_shape, stride, *, on_cpu):
    """Whether conv2d_forward_batch_last(spectral=True) takes the spectral path for an
    input of xt_shape (C, H, W, B), already padded, on the CPU or the GPU (the planner
    asks too)."""
    _, H, W, B = xt_shape
    _, kh, kw, _ = w_shape
    return kh == kw <= min(H, W) and spectral_conv.pays(
        spectral_conv.geometry_of(xt_shape, w_shape, stride), B, on_cpu)


def conv2d_backward_batch_last(dout, cache, *, need_dx=True):
    """dxt (C, H, W, B) or None, dw, db from dout (O, oh, ow, B), by the path forward took."""
    backward, cache, pad = cache
    dxt, dw, db = backward(dout, cache, need_dx=need_dx)
    if dxt is not None and pad:
        dxt = dxt[:, pad:-pad, pad:-pad]
    return dxt, dw, db


def _im2col_forward(xt, w, b, stride):
    """conv2d_forward_batch_last through im2col columns, xt already padded."""
    C, kh, kw, O = w.shape
    _, H, W, B = xt.shape
    oh, ow = output_size(H, kh, stride, 0), output_size(W, kw, stride, 0)
    out = None
    for group in _groups(xt, kh, kw, oh, ow):
        cols = _columns(xt[group], kh, kw, oh, ow, stride)  # (g, kh, kw, oh, ow, B)
        w_group = _group_weights(w, group)  # (g*kh*kw, O)
        part = w_group.T @ cols.reshape(w_group.shape[0], -1)  # (O, oh*ow*B)
        del cols  # before the next group's columns are built
        if out is None:
            out = part
        else:
            out += part
    out = out.reshape(O, oh, ow, B)
    out += b.reshape(O, 1, 1, 1)
    return out, (xt, w, stride)


def _im2col_backward(dout, cache, *, need_dx=True):
    """The gradients of _im2col_forward: dxt (padded) or None, dw, db."""
    xt, w, stride = cache
    xp = get_array_module(dout)
    C, kh, kw, O = w.shape
    _, oh, ow, _ = dout.shape
    dout_2d = dout.reshape(O, -1)  # (O, oh*ow*B)
    dw = xp.empty(w.shape, dtype=w.dtype)  # C order, whatever w's: its groups' rows are views
    dxt = xp.zeros_like(xt) if need_dx else None
    for group in _groups(xt, kh, kw, oh, ow):
        cols = _columns(xt[group], kh, kw, oh, ow, stride)
        cols_shape = cols.shape
        cols_2d = cols.reshape(-1, dout_2d.shape[1])  # (g*kh*kw, oh*ow*B)
        xp.matmul(cols_2d, dout_2d.T, out=_group_weights(dw, group))  # in place: a view
        del cols, cols_2d  # freed before the columns' gradient, as large, is made
        if need_dx:
            dcols = _group_weights(w, group) @ dout_2d  # (g*kh*kw, oh*ow*B)
            _add_columns(dxt[group], dcols.reshape(cols_shape), stride)
            del dcols  # before the next group's columns are built
    return dxt, dw, dout_2d.sum(axis=1)


def conv2d_forward(x, w, b, *, stride=1, pad=0):
    """out[b, o] = sum over c, i, j of w[c, i, j, o] * patch[c, i, j] + b[o].

    x (B, C, H, W), w (C, kh, kw, O), b (O,) -> out (B, O, oh, ow).
    """
    out, cache = conv2d_forward_batch_last(to_batch_last(x, pad), w, b, stride=stride)
    return out.transpose(3, 0, 1, 2), (cache, pad)


def conv2d_backward(dout, cache, *, need_dx=True):
    """dx, dw, db for dout (B, O, oh, ow). dx is None when need_dx is False (the input
    layer needs no gradient, and col2im is a fifth of the backward pass)."""
    cache, pad = cache
    dxt, dw, db = conv2d_backward_batch_last(
        transposed(dout, (1, 2, 3, 0)), cache, need_dx=need_dx)
    if dxt is None:
        return None, dw, db
    if pad:
        dxt = dxt[:, pad:-pad, pad:-pad]
    return transposed(dxt, (3, 0, 1, 2)), dw, db
