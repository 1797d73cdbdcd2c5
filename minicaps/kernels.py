"""Fused CuPy kernels: the same arithmetic as the portable NumPy/CuPy code, in fewer launches.

On the GPU a step of the paper's network is dominated by launching work, not by doing it:
im2col copies a kernel's worth of strided slices one by one (81 slices for a 9x9 kernel,
each a Python-side view and a launch), col2im adds as many back, and Adam runs ten
element-wise passes per parameter. Each kernel here does one of those in a single launch.

Every kernel computes exactly what the portable code computes, operation for operation and
in the same order (compiled with --fmad=false, so no multiply-add is contracted into one
rounding), which makes the results equal bit for bit: tests/test_gpu.py checks that
against `portable()`. The portable code stays the reference and the only path on the CPU.

MINICAPS_FUSED=0 in the environment turns the kernels off (for comparing the two paths).
"""
import os
from contextlib import contextmanager

from .backend import get_array_module

_enabled = os.environ.get("MINICAPS_FUSED", "1") != "0"
_compiled = {}
_EXACT = ("--fmad=false",)  # round every product on its own, as the portable code does


def fused(array):
    """True when `array` is a CuPy array and the fused kernels are on."""
    return _enabled and get_array_module(array).__name__ == "cupy"


@contextmanager
def portable():
    """Run the portable code inside the block, fused kernels or not (for tests, benchmarks)."""
    global _enabled
    before, _enabled = _enabled, False
    try:
        yield
    finally:
        _enabled = before


def _kernel(name, in_params, out_params, body):
    """An ElementwiseKernel, built once on first use (CuPy compiles it on its first call)."""
    if name not in _compiled:
        import cupy
        _compiled[name] = cupy.ElementwiseKernel(in_params, out_params, body, name,
                                                 options=_EXACT)
    return _compiled[name]


# Columns (C, g, kw, oh, ow, B) of kernel rows r0 .. r0 + g - 1 from xt (C, H, W, B): one
# thread per column entry, reading the pixel it copies. Indices in 64 bits: the columns of a
# large batch pass 2**31 entries.
_IM2COL = """
    ptrdiff_t t = i;
    const ptrdiff_t b = t % B; t /= B;
    const ptrdiff_t x = t % ow; t /= ow;
    const ptrdiff_t y = t % oh; t /= oh;
    const ptrdiff_t j = t % kw; t /= kw;
    const ptrdiff_t n = t % g;
    const ptrdiff_t c = t / g;
    cols = xt[((c * H + r0 + n + stride * y) * W + j + stride * x) * B + b];
"""

# col2im as a gather: one thread per pixel of xt (C, H, W, B) adds up, in the portable
# code's order (kernel row n, then column j), the column entries that were copied from it.
# No two threads write one pixel, so no atomics, and the sum is deterministic.
_ADD_COLUMNS = """
    ptrdiff_t t = i;
    const ptrdiff_t b = t % B; t /= B;
    const ptrdiff_t w = t % W; t /= W;
    const ptrdiff_t h = t % H;
    const ptrdiff_t c = t / H;
    T sum = dxt;
    for (ptrdiff_t n = 0; n < g; ++n) {
        const ptrdiff_t dy = h - r0 - n;
        if (dy < 0 || dy % stride != 0 || dy / stride >= oh) continue;
        for (ptrdiff_t j = 0; j < kw; ++j) {
            const ptrdiff_t dx = w - j;
            if (dx < 0 || dx % stride != 0 || dx / stride >= ow) continue;
            sum = sum + dcols[((((c * g + n) * kw + j) * oh + dy / stride) * ow + dx / stride)
                              * B + b];
        }
    }
    dxt = sum;
"""

_COLUMN_PARAMS = "int64 H, int64 W, int64 B, int64 g, int64 kw, int64 oh, int64 ow, " \
                 "int64 r0, int64 stride"


def columns(xt, rows, kw, oh, ow, stride):
    """minicaps.conv's columns of kernel rows `rows`, in one launch."""
    import cupy
    C, H, W, B = xt.shape
    cols = cupy.empty((C, len(rows), kw, oh, ow, B), dtype=xt.dtype)
    im2col = _kernel("minicaps_im2col", "raw T xt, " + _COLUMN_PARAMS, "T cols", _IM2COL)
    im2col(cupy.ascontiguousarray(xt), H, W, B, len(rows), kw, oh, ow, rows.start, stride,
           cols)
    return cols


def add_columns(dxt, dcols, rows, stride):
    """minicaps.conv's adjoint of `columns`, added into dxt (C, H, W, B) in one launch."""
    import cupy
    _, H, W, B = dxt.shape
    _, g, kw, oh, ow, _ = dcols.shape
    col2im = _kernel("minicaps_col2im", "raw T dcols, " + _COLUMN_PARAMS, "T dxt",
                     _ADD_COLUMNS)
    col2im(cupy.ascontiguousarray(dcols), H, W, B, g, kw, oh, ow, rows.start, stride, dxt)


# Adam's update as minicaps.optim.Adam writes it, pass by pass, for one element.
_ADAM = """
    m = m * beta1;
    m = m + one_minus_beta1 * g;
    v = v * beta2;
    v = v + one_minus_beta2 * (g * g);
    p = p - step_size * m / (sqrt(v) + eps);
"""


def adam_update(p, g, m, v, *, beta1, beta2, step_size, eps):
    """Adam's in-place update of p, m, v from g, in one launch. The scalars are rounded
    to the arrays' dtype first, as NumPy and CuPy do with Python floats."""
    dtype = p.dtype.type
    update = _kernel("minicaps_adam",
                     "T g, T beta1, T one_minus_beta1, T beta2, T one_minus_beta2, "
                     "T step_size, T eps", "T p, T m, T v", _ADAM)
    update(g, dtype(beta1), dtype(1 - beta1), dtype(beta2), dtype(1 - beta2),
           dtype(step_size), dtype(eps), p, m, v)
