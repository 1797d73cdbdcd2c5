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

A strided convolution first splits its input into stride x stride phases, (C, H, W, B) ->
(C, s, H/s, s, W/s, B) with pixel (h, w) at (h % s, h // s, w % s, w // s): every patch
offset then reads a contiguous run of ow*B numbers instead of B, which made im2col and
col2im of the primary capsules (stride 2) about twice as fast on the CPU for one more copy
of the input.
"""
from .backend import get_array_module
from .parallel import in_parts

COLUMN_BYTES = {"numpy": 16 * 2 ** 20, "cupy": 1024 * 2 ** 20}


def output_size(size, kernel, stride, pad):
    """Output length of a convolution along one axis."""
    return (size + 2 * pad - kernel) // stride + 1


def to_batch_last(x, pad=0):
    """x (B, C, H, W) as (C, H + 2 pad, W + 2 pad, B), zero-padded."""
    xp = get_array_module(x)
    xt = xp.ascontiguousarray(x.transpose(1, 2, 3, 0))
    return xp.pad(xt, ((0, 0), (pad, pad), (pad, pad), (0, 0))) if pad else xt


def to_phases(xt, stride):
    """xt (C, H, W, B) as (C, s, ceil(H/s), s, ceil(W/s), B): pixel (h, w) at
    [:, h % s, h // s, w % s, w // s]. A view for stride 1; padding that rounds H and W up
    to multiples of s is zero and no output reads it."""
    xp = get_array_module(xt)
    C, H, W, B = xt.shape
    if stride == 1:
        return xt[:, None, :, None]
    Hs, Ws = -(-H // stride), -(-W // stride)
    if (Hs * stride, Ws * stride) != (H, W):
        xt = xp.pad(xt, ((0, 0), (0, Hs * stride - H), (0, Ws * stride - W), (0, 0)))
    phases = xt.reshape(C, Hs, stride, Ws, stride, B).transpose(0, 2, 1, 4, 3, 5)
    return xp.ascontiguousarray(phases)


def from_phases(phases, H, W):
    """The inverse of to_phases: (C, H, W, B), contiguous."""
    xp = get_array_module(phases)
    C, s, Hs, _, Ws, B = phases.shape
    xt = phases.transpose(0, 2, 1, 4, 3, 5).reshape(C, Hs * s, Ws * s, B)
    return xp.ascontiguousarray(xt[:, :H, :W])


def _offsets(rows, kw, stride):
    """(n, j, a, qi, b, qj) for every kernel tap (i = rows[n], j): the tap reads phase
    (a, b) = (i % s, j % s) of the input from (qi, qj) = (i // s, j // s) on."""
    for n, i in enumerate(rows):
        for j in range(kw):
            yield n, j, i % stride, i // stride, j % stride, j // stride


def _columns(phases, rows, kw, oh, ow, stride):
    """Columns (C, len(rows), kw, oh, ow, B) of kernel rows `rows` from the phase-split
    input (C, s, H/s, s, W/s, B)."""
    xp = get_array_module(phases)
    C, B = phases.shape[0], phases.shape[-1]
    cols = xp.empty((C, len(rows), kw, oh, ow, B), dtype=phases.dtype)

    def copy(c0, c1):
        for n, j, a, qi, b, qj in _offsets(rows, kw, stride):
            cols[c0:c1, n, j] = phases[c0:c1, a, qi:qi + oh, b, qj:qj + ow]

    in_parts(phases, C, copy)  # channel ranges in parallel threads
    return cols


def _add_columns(dphases, dcols, rows, stride):
    """The adjoint of _columns: add dcols (C, len(rows), kw, oh, ow, B) into dphases."""
    C, _, kw, oh, ow, _ = dcols.shape

    def add(c0, c1):
        for n, j, a, qi, b, qj in _offsets(rows, kw, stride):
            dphases[c0:c1, a, qi:qi + oh, b, qj:qj + ow] += dcols[c0:c1, n, j]

    in_parts(dphases, C, add)


def im2col(x, kh, kw, *, stride=1, pad=0):
    """Patches of x (B, C, H, W) as columns (C, kh, kw, oh, ow, B)."""
    _, _, H, W = x.shape
    oh, ow = output_size(H, kh, stride, pad), output_size(W, kw, stride, pad)
    return _columns(to_phases(to_batch_last(x, pad), stride), range(kh), kw, oh, ow, stride)


def col2im(cols, x_shape, *, stride=1, pad=0):
    """The adjoint of im2col: sums every column entry back onto the pixel it came from."""
    xp = get_array_module(cols)
    C, kh, kw, oh, ow, B = cols.shape
    _, _, H, W = x_shape
    H, W = H + 2 * pad, W + 2 * pad
    dphases = xp.zeros_like(to_phases(xp.empty((C, H, W, B), dtype=cols.dtype), stride))
    _add_columns(dphases, cols, range(kh), stride)
    dxt = from_phases(dphases, H, W)[:, pad:H - pad, pad:W - pad]
    return xp.ascontiguousarray(dxt.transpose(3, 0, 1, 2))


def _row_groups(phases, w, oh, ow):
    """Kernel rows in groups whose columns fit in COLUMN_BYTES (at least one row each)."""
    xp = get_array_module(phases)
    C, B = phases.shape[0], phases.shape[-1]
    kh, kw = w.shape[2:]
    row_bytes = C * kw * oh * ow * B * phases.dtype.itemsize
    size = max(1, min(kh, COLUMN_BYTES[xp.__name__] // row_bytes))
    return [range(i, min(kh, i + size)) for i in range(0, kh, size)]


def conv2d_forward_batch_last(xt, w, b, *, stride=1, pad=0):
    """The convolution on batch-last arrays: xt (C, H, W, B) -> out (O, oh, ow, B).

    The capsule network keeps its feature maps batch-last from conv1 to the primary
    capsules, which saves four transposing copies of conv1's output per training step."""
    O, C, kh, kw = w.shape
    if pad:
        xt = get_array_module(xt).pad(xt, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    _, H, W, B = xt.shape
    oh, ow = output_size(H, kh, stride, 0), output_size(W, kw, stride, 0)
    phases = to_phases(xt, stride)
    out = None
    for rows in _row_groups(phases, w, oh, ow):
        cols = _columns(phases, rows, kw, oh, ow, stride)  # (C, g, kw, oh, ow, B)
        w_rows = w[:, :, rows.start:rows.stop].reshape(O, -1)  # (O, C*g*kw)
        part = w_rows @ cols.reshape(w_rows.shape[1], -1)  # (O, oh*ow*B)
        out = part if out is None else out + part
    out = out.reshape(O, oh, ow, B)
    out += b.reshape(O, 1, 1, 1)
    return out, (phases, (H, W), w, stride, pad)


def conv2d_backward_batch_last(dout, cache, *, need_dx=True):
    """dxt (C, H, W, B) or None, dw, db from dout (O, oh, ow, B)."""
    phases, (H, W), w, stride, pad = cache
    xp = get_array_module(dout)
    O, C, kh, kw = w.shape
    _, oh, ow, _ = dout.shape
    dout_2d = dout.reshape(O, -1)  # (O, oh*ow*B)
    dw = xp.empty_like(w)
    dphases = xp.zeros_like(phases) if need_dx else None
    for rows in _row_groups(phases, w, oh, ow):
        cols = _columns(phases, rows, kw, oh, ow, stride)
        cols_2d = cols.reshape(-1, dout_2d.shape[1])  # (C*g*kw, oh*ow*B)
        dw[:, :, rows.start:rows.stop] = (dout_2d @ cols_2d.T).reshape(O, C, len(rows), kw)
        if need_dx:
            w_rows = w[:, :, rows.start:rows.stop].reshape(O, -1)
            _add_columns(dphases, (w_rows.T @ dout_2d).reshape(cols.shape), rows, stride)
    if not need_dx:
        return None, dw, dout_2d.sum(axis=1)
    dxt = from_phases(dphases, H, W)
    if pad:
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
