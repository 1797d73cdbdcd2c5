"""Fused CuPy kernels: the same arithmetic as the reference ops, in fewer launches.

On the GPU a step of the paper's network is dominated by launching work, not by doing it:
col2im adds a kernel's worth of strided slices back one by one (81 for a 9x9 kernel,
each a Python-side view and a launch), and Adam runs ten element-wise passes per
parameter. Each kernel here does one of those in a single launch; im2col has one too,
written when the reference im2col also copied slice by slice (now one copy of a strided
view: a launch as well, but through CuPy's general strided copy).

im2col, col2im and Adam compute exactly what the reference ops compute, operation for
operation and in the same order (Adam compiled with --fmad=false, so that no multiply-add
is contracted into one rounding), which makes their results equal bit for bit; squash and
softmax sum in another order and agree to rounding. tests/test_kernels.py checks both
against the reference. Each function here takes and returns what the op it stands in for
does; minicaps/fast/dispatch.py chooses them for CuPy arrays.
"""

_compiled = {}
_EXACT = ("--fmad=false",)  # round every product on its own, as the reference does


def _kernel(name, in_params, out_params, body, *, index="int64", constants=None):
    """An ElementwiseKernel, built once on first use (CuPy compiles it on its first call).

    `index` (int32 or int64) is the type of idx_t, which the body does its index
    arithmetic in. `constants` are compiled in: a kernel specialised to one shape divides
    by constants, which the compiler turns into multiplications and shifts (a division by
    a number known only at run time costs tens of instructions)."""
    constants = constants or {}
    key = (name, index, tuple(sorted(constants.items())))
    if key not in _compiled:
        import cupy
        _compiled[key] = cupy.ElementwiseKernel(in_params, out_params, body, name,
                                                preamble=preamble(index, constants),
                                                options=_EXACT)
    return _compiled[key]


def preamble(index, constants):
    """The C++ that a kernel body is compiled after: idx_t and the compiled-in constants."""
    c_type = {"int32": "unsigned int", "int64": "unsigned long long"}[index]
    return "\n".join([f"typedef {c_type} idx_t;"]
                     + [f"constexpr int {k} = {v};" for k, v in constants.items()])


def _index_type(*arrays):
    """32-bit index arithmetic where every offset fits, as it is cheaper."""
    return "int32" if max(a.size for a in arrays) < 2 ** 31 else "int64"


# Columns (C, kh, kw, oh, ow, B) of xt (C, H, W, B): one thread per column entry, reading
# the pixel it copies. Shapes are compiled-in constants (see _kernel): a network has a
# handful of them, each compiled once. The channel count is not one of them (c is what is
# left of the index), so that channel groups of different sizes share a kernel. The
# kernel row is r, as i is the thread's index.
IM2COL = """
    idx_t t = i;
    const idx_t b = t % BATCH; t /= BATCH;
    const idx_t x = t % OUT_W; t /= OUT_W;
    const idx_t y = t % OUT_H; t /= OUT_H;
    const idx_t j = t % KERNEL_W; t /= KERNEL_W;
    const idx_t r = t % KERNEL_H;
    const idx_t c = t / KERNEL_H;
    cols = xt[((c * IN_H + r + STRIDE * y) * IN_W + j + STRIDE * x) * BATCH + b];
"""

# col2im as a gather: one thread per pixel of xt (C, H, W, B) adds up, in the reference's
# order (kernel row r, then column j), the column entries that were copied from it.
# No two threads write one pixel, so no atomics, and the sum is deterministic.
ADD_COLUMNS = """
    idx_t t = i;
    const idx_t b = t % BATCH; t /= BATCH;
    const int w = t % IN_W; t /= IN_W;
    const int h = t % IN_H;
    const idx_t c = t / IN_H;
    T sum = dxt;
    for (int r = 0; r < KERNEL_H; ++r) {
        const int dy = h - r;
        if (dy < 0 || dy % STRIDE != 0 || dy / STRIDE >= OUT_H) continue;
        for (int j = 0; j < KERNEL_W; ++j) {
            const int dx = w - j;
            if (dx < 0 || dx % STRIDE != 0 || dx / STRIDE >= OUT_W) continue;
            sum = sum + dcols[((((c * KERNEL_H + r) * KERNEL_W + j) * OUT_H + dy / STRIDE)
                               * OUT_W + dx / STRIDE) * BATCH + b];
        }
    }
    dxt = sum;
"""


def column_constants(xt_shape, kh, kw, oh, ow, stride):
    """The shapes of the columns of xt (C, H, W, B), but for C, compiled in."""
    _, H, W, B = xt_shape
    return {"IN_H": H, "IN_W": W, "BATCH": B, "KERNEL_H": kh, "KERNEL_W": kw,
            "OUT_H": oh, "OUT_W": ow, "STRIDE": stride}


def columns(xt, kh, kw, oh, ow, stride):
    """minicaps.ops.conv.columns of xt, in one launch."""
    import cupy
    C, _, _, B = xt.shape
    cols = cupy.empty((C, kh, kw, oh, ow, B), dtype=xt.dtype)
    im2col = _kernel("minicaps_im2col", "raw T xt", "T cols", IM2COL,
                     index=_index_type(xt, cols),
                     constants=column_constants(xt.shape, kh, kw, oh, ow, stride))
    im2col(cupy.ascontiguousarray(xt), cols)
    return cols


def add_columns(dxt, dcols, stride):
    """minicaps.ops.conv.add_columns: dcols added into dxt (C, H, W, B) in one launch."""
    import cupy
    _, kh, kw, oh, ow, _ = dcols.shape
    col2im = _kernel("minicaps_col2im", "raw T dcols", "T dxt", ADD_COLUMNS,
                     index=_index_type(dxt, dcols),
                     constants=column_constants(dxt.shape, kh, kw, oh, ow, stride))
    col2im(cupy.ascontiguousarray(dcols), dxt)


# Adam's update for one element: the same operations, in the same order, as
# minicaps.ops.adam.adam_update.
_ADAM = """
    m = m * beta1;
    m = m + one_minus_beta1 * g;
    v = v * beta2;
    v = v + one_minus_beta2 * (g * g);
    p = p - step_size * m / (sqrt(v) + eps);
"""


def adam_update(p, g, m, v, *, beta1, beta2, step_size, eps):
    """minicaps.ops.adam.adam_update of p, m, v from g, in one launch. The scalars are
    rounded to the arrays' dtype first, as NumPy and CuPy do with Python floats."""
    dtype = p.dtype.type
    update = _kernel("minicaps_adam",
                     "T g, T beta1, T one_minus_beta1, T beta2, T one_minus_beta2, "
                     "T step_size, T eps", "T p, T m, T v", _ADAM)
    update(g, dtype(beta1), dtype(1 - beta1), dtype(beta2), dtype(1 - beta2),
           dtype(step_size), dtype(eps), p, m, v)


# Squash (minicaps.ops.capsules) of N vectors of length D: one thread per vector. The sums
# run in order over the vector, where CuPy's reductions pair them up: the results agree
# with the reference to rounding, not bit for bit.
_SQUASH = """
    const ptrdiff_t start = i * D;
    T total = 0;
    for (ptrdiff_t k = start; k < start + D; ++k) total = total + s[k] * s[k];
    const T root = sqrt(total);
    const T f = root / (1 + total);
    for (ptrdiff_t k = start; k < start + D; ++k) v[k] = s[k] * f;
    sq = total;
    norm = root;
"""

_SQUASH_BACKWARD = """
    const ptrdiff_t start = i * D;
    T dot = 0;
    for (ptrdiff_t k = start; k < start + D; ++k) dot = dot + s[k] * dv[k];
    const T f = norm / (1 + sq);
    const T g = norm > 0 ? (1 - sq) / (norm * ((1 + sq) * (1 + sq))) : (T)0;
    for (ptrdiff_t k = start; k < start + D; ++k) ds[k] = f * dv[k] + s[k] * (g * dot);
"""


def squash_forward(s):
    """minicaps.ops.capsules.squash_forward in one launch: v and the cache (s, |s|^2,
    |s|), the last two shaped (..., 1) as there."""
    import cupy
    s = cupy.ascontiguousarray(s)
    v = cupy.empty_like(s)
    sq, norm = (cupy.empty(s.shape[:-1] + (1,), dtype=s.dtype) for _ in range(2))
    _kernel("minicaps_squash", "raw T s, int64 D", "raw T v, T sq, T norm", _SQUASH)(
        s, s.shape[-1], v, sq, norm)
    return v, (s, sq, norm)


def squash_backward(dv, cache):
    """minicaps.ops.capsules.squash_backward in one launch."""
    import cupy
    s, sq, norm = cache
    s, dv = cupy.ascontiguousarray(s), cupy.ascontiguousarray(dv)
    ds = cupy.empty_like(s)
    _kernel("minicaps_squash_backward", "raw T s, raw T dv, T sq, T norm, int64 D", "raw T ds",
            _SQUASH_BACKWARD)(s, dv, sq, norm, s.shape[-1], ds)
    return ds


# Softmax over axis 1 of x (A, J, R), and its backward: one thread per (a, r), running over
# the J entries R apart (neighbouring threads read neighbouring numbers).
_SOFTMAX = """
    const ptrdiff_t start = (i / R) * J * R + i % R;
    const ptrdiff_t stop = start + J * R;
    T top = x[start];
    for (ptrdiff_t k = start + R; k < stop; k += R) top = max(top, x[k]);
    T total = 0;
    for (ptrdiff_t k = start; k < stop; k += R) {
        const T e = exp(x[k] - top);
        out[k] = e;
        total = total + e;
    }
    for (ptrdiff_t k = start; k < stop; k += R) out[k] = out[k] / total;
"""

_SOFTMAX_BACKWARD = """
    const ptrdiff_t start = (i / R) * J * R + i % R;
    const ptrdiff_t stop = start + J * R;
    T dot = 0;
    for (ptrdiff_t k = start; k < stop; k += R) dot = dot + dc[k] * c[k];
    for (ptrdiff_t k = start; k < stop; k += R) dx[k] = c[k] * (dc[k] - dot);
"""


def _axis1_shape(x):
    """(A, J, R): x seen as 3-D around its axis 1."""
    return x.shape[0], x.shape[1], x.size // (x.shape[0] * x.shape[1])


def softmax_axis1(x):
    """Softmax over axis 1, as minicaps.ops.routing.softmax(x, axis=1), in one launch."""
    import cupy
    x = cupy.ascontiguousarray(x)
    A, J, R = _axis1_shape(x)
    out = cupy.empty_like(x)
    _kernel("minicaps_softmax", "raw T x, int64 J, int64 R", "raw T out", _SOFTMAX)(
        x, J, R, out, size=A * R)
    return out


def softmax_axis1_backward(c, dc):
    """The gradient of softmax over axis 1 from its output c and output gradient dc."""
    import cupy
    c, dc = cupy.ascontiguousarray(c), cupy.ascontiguousarray(dc)
    A, J, R = _axis1_shape(c)
    dx = cupy.empty_like(c)
    _kernel("minicaps_softmax_backward", "raw T c, raw T dc, int64 J, int64 R", "raw T dx",
            _SOFTMAX_BACKWARD)(c, dc, J, R, dx, size=A * R)
    return dx
