"""Strided convolution through the discrete Fourier transform, in real matrix products.

The primary capsules' convolution (9x9 kernels, stride 2, 256 channels in and out, 6x6
outputs) is most of a training step's arithmetic. Done directly (minicaps.ops.conv),
each output costs k*k = 81 multiply-adds per channel pair. Through the DFT it costs far
fewer, because the kernel's 81 taps collapse into one product per frequency:

1. Polyphase: a stride-s convolution is the sum of s*s stride-1 convolutions, one per
   phase (p, q): input pixels (p + s*y, q + s*x) against kernel taps (p + s*a, q + s*b).
   Each phase's kernel has at most `taps` = ceil(k / s) taps a side (5 for the paper).
2. A stride-1 correlation of an Ny x Nx phase with a taps x taps kernel, Ny = oh + taps - 1,
   is the circular one of the same size (no output reads past the edge), so per frequency
   it is a product: out^ = in^ * conj(kernel^). The spectrum of a real signal is its own
   mirror image conjugated, so F, about half of the Ny * Nx frequencies, carry it all (52
   of 100 for the paper; _frequencies).
3. Summed over phases and input channels, each frequency is one matrix product: (output
   channels) x (phases * input channels) against (phases * input channels) x (batch).
   The paper's network: 52 frequencies of 4 x 256 complex terms in place of 36 positions of
   81 x 256 real ones, 29 % of the multiply-adds (complex ones count four).

Everything is real arithmetic: a complex array is its real and imaginary parts as two
blocks, each DFT a real matrix of cosines and sines (built once per shape), and every step
a real matrix product, so NumPy and CuPy run the same code through their GEMMs, with no
complex BLAS and no FFT library.

The price is the kernel's spectrum: F complex numbers per (phase, input, output channel)
where the kernel has at most taps*taps real ones, 5.1x the weights for the paper (109 MB in
float32).
It is computed from the weights each step (and again in backward, instead of keeping it),
in chunks of input terms (Geometry.chunk: CHUNK_BYTES, or the input spectrum's size at a
large batch), and so is the weights' gradient spectrum. These passes move a fixed amount
of memory whatever the batch, so the spectral path pays only from some batch size on
(`pays`), and the direct one stays for small batches. The DFTs
are dense matrices (no FFT), which suits the small grids of capsule networks; `pays`
leaves larger ones (more than MAX_FREQUENCIES) to the direct path.

Layouts: the input's spectrum X is (F, M, 2B) with M = s*s*C (phase, channel) and its
last axis the real parts of the batch then the imaginary ones; the kernel's, K, is
(F, 2, M, O), real block then imaginary. Then per frequency, with X^T (2B, M):
X^T @ K[:, 0] = [Xr^T Kr; Xi^T Kr] and X^T @ K[:, 1] = [Xr^T Ki; Xi^T Ki], from which
the real and imaginary parts of the output's spectrum (transposed) are a subtraction and
an addition.

forward and backward take and return what minicaps.ops.conv.conv2d_forward_batch_last
and conv2d_backward_batch_last do; minicaps/fast/dispatch.py chooses them where `pays`.
"""
import importlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..backend import get_array_module
from ..ops.conv import pad_spatial
from .parallel import transposed

CHUNK_BYTES = 32 * 2 ** 20  # of the kernel's spectrum at a time, at least (Geometry.chunk)


@dataclass(frozen=True)
class Geometry:
    """Sizes of a spectral convolution of a (C, H, W, B) input with (C, k, k, O) weights."""
    C: int
    O: int
    k: int
    stride: int
    oh: int
    ow: int

    @property
    def taps(self):
        """Kernel taps a side in each phase."""
        return -(-self.k // self.stride)

    @property
    def ny(self):
        return self.oh + self.taps - 1

    @property
    def nx(self):
        return self.ow + self.taps - 1

    @property
    def frequencies(self):
        """F: the distinct frequencies of a real ny x nx signal (_frequencies)."""
        return len(_frequencies(self.ny, self.nx)[0])

    @property
    def terms(self):
        """M: (phase, input channel) pairs summed in each frequency's product."""
        return self.stride ** 2 * self.C

    def chunk(self, itemsize, batch):
        """Input terms per chunk of the kernel's spectrum: as many as fit in CHUNK_BYTES or
        in the input spectrum's size, whichever is larger (deeper products run faster, and
        a large batch has the memory: the input's spectrum is as large), at least one."""
        per_term = 2 * self.frequencies * self.O * itemsize
        return max(1, CHUNK_BYTES // per_term, self.terms * batch // self.O)

    def product_flops(self, batch):
        """Multiply-adds x 2 of the per-frequency products of forward and backward: three
        passes (output, input gradient, kernel gradient), each two real products of
        (2B x M) by (M x O)."""
        return 3 * 2 * 2 * (2 * batch) * self.terms * self.O * self.frequencies

    def kernel_transform_flops(self):
        """Multiply-adds x 2 of the kernel's spectrum, twice (forward, and again in
        backward), and its gradient's way back: real products of (2F x taps^2) by
        (taps^2 x M*O), a fixed cost per step."""
        return 3 * 2 * (2 * self.frequencies) * self.taps ** 2 * self.terms * self.O

    def image_transform_flops(self, batch):
        """Multiply-adds x 2 of the input's phases to their spectrum and back, (2F x ny*nx)
        by (ny*nx x M*B), and of the output's spectrum to the outputs and back,
        (oh*ow x 2F) by (2F x B*O)."""
        return self.input_transform_flops(batch) + self.output_transform_flops(batch)

    def input_transform_flops(self, batch):
        return 2 * 2 * (2 * self.frequencies) * batch * self.ny * self.nx * self.terms

    def output_transform_flops(self, batch):
        return 2 * 2 * (2 * self.frequencies) * batch * self.oh * self.ow * self.O

    def spectrum_elements(self):
        """Of the kernel's whole spectrum (what the chunks add up to)."""
        return 2 * self.frequencies * self.terms * self.O


def geometry_of(xt_shape, w_shape, stride):
    """The Geometry of convolving xt (C, H, W, B), already padded, with w (C, k, k, O).
    Square kernels only, no larger than the input."""
    C, H, W, _ = xt_shape
    _, k, kw, O = w_shape
    if k != kw or k > min(H, W):
        raise ValueError(f"the spectral convolution takes a square kernel no larger than "
                         f"its input: {k}x{kw} on {H}x{W}")
    return Geometry(C, O, k, stride, (H - k) // stride + 1, (W - k) // stride + 1)


# Input channels below this leave each frequency's product too shallow to run at the GEMM
# rate (conv1 has one), and the direct path's columns are small there anyway.
MIN_CHANNELS = 64
# The dense DFT matrices grow with the square of the grid: measured up to 290 frequencies
# (56x56 inputs to the paper's network, still faster than the direct path); larger grids
# would want an FFT, and stay direct.
MAX_FREQUENCIES = 512
# The kernel's transforms move its whole spectrum through memory for few FLOPs: counted at
# this many times their FLOPs against the products' (see `pays`). With it the paper's
# primary capsules switch at batch 24 and the logo network's at 18, near where the two
# paths measured even (benchmarks/conv_paths.py).
TRANSFORM_COST = 4.5


def pays(geometry, batch):
    """Whether the spectral path is the faster one on the CPU (the model is measured there
    only): for a kernel over many input channels on a grid of at most MAX_FREQUENCIES, when
    its products and transforms, the kernel's at TRANSFORM_COST times their FLOPs, come to
    less than the direct path's products (for the paper's primary capsules, from batch 24
    on; for the logo network's, from 18)."""
    if (geometry.C < MIN_CHANNELS or geometry.k < 3
            or geometry.frequencies > MAX_FREQUENCIES):
        return False
    g = geometry
    direct = 3 * 2 * batch * g.C * g.O * g.k ** 2 * g.oh * g.ow
    spectral = (g.product_flops(batch) + g.image_transform_flops(batch)
                + TRANSFORM_COST * g.kernel_transform_flops())
    return spectral < direct


def _matrices(g, xp, dtype):
    """The real DFT matrices of geometry g, as arrays of xp and dtype (made once each):
    A (2F, ny*nx) takes a phase to its spectrum (real, imaginary rows per frequency);
    D (2F, taps^2) takes a phase's kernel taps to its conjugate spectrum; G (oh*ow, 2F)
    takes a spectrum back to the outputs (the inverse DFT, each kept frequency weighing 2
    where it stands for its mirror image (-fy, -fx) too: _frequencies). They depend on the
    spatial sizes only."""
    sizes = (g.ny, g.nx, g.oh, g.ow, g.taps)
    return _device_matrices(sizes, xp.__name__, np.dtype(dtype).name)


@lru_cache(maxsize=16)
def _device_matrices(sizes, module_name, dtype_name):
    xp = importlib.import_module(module_name)
    return tuple(xp.asarray(m.astype(dtype_name)) for m in _host_matrices(*sizes))


@lru_cache(maxsize=16)
def _frequencies(ny, nx):
    """(fy, fx, weight) arrays of the frequencies that carry a real ny x nx signal: of each
    pair of mirror images (fy, fx) and (-fy, -fx) (mod ny, nx), whose values are each
    other's conjugates, one, weighing 2 in the inverse DFT; the frequencies that are their
    own mirror images (fy and fx each 0 or a Nyquist frequency), weighing 1. Columns fx from
    0 to nx // 2; in the columns that are their own mirror images along x (0, and nx / 2
    for even nx), rows fy from 0 to ny // 2 only: 52 of the 100 of a 10 x 10 signal."""
    fy, fx, weight = [], [], []
    for column in range(nx // 2 + 1):
        mirrored_column = column == (-column) % nx
        for row in range(ny // 2 + 1 if mirrored_column else ny):
            fy.append(row)
            fx.append(column)
            weight.append(1.0 if mirrored_column and row == (-row) % ny else 2.0)
    return np.array(fy), np.array(fx), np.array(weight)


def _host_matrices(ny, nx, oh, ow, taps):
    """_matrices' three, in float64 on the host."""
    fy, fx, weight = _frequencies(ny, nx)
    y = np.arange(ny)[None, :, None]
    x = np.arange(nx)[None, None, :]
    angle = 2 * np.pi * (fy[:, None, None] * y / ny + fx[:, None, None] * x / nx)
    frequencies = len(fy)
    A = np.stack([np.cos(angle), -np.sin(angle)], axis=1).reshape(2 * frequencies, -1)
    kernel = angle[:, :taps, :taps]
    D = np.stack([np.cos(kernel), np.sin(kernel)], axis=1).reshape(2 * frequencies, -1)
    weight = (weight / (ny * nx))[:, None, None]
    outputs = angle[:, :oh, :ow]
    G = np.stack([weight * np.cos(outputs), -weight * np.sin(outputs)], axis=1)
    return A, D, np.ascontiguousarray(G.reshape(2 * frequencies, -1).T)


def _phases(xt, g):
    """xt (C, H, W, B) as its phases (ny*nx, M*B): entry [(y, x), ((p, q), c, b)] is
    xt[c, p + s*y, q + s*x, b], zero past the input's edge."""
    xp, s = get_array_module(xt), g.stride
    C, _, _, B = xt.shape
    P = xp.zeros((g.ny, g.nx, s * s, C, B), dtype=xt.dtype)
    for p in range(s):
        for q in range(s):
            phase = xt[:, p::s, q::s][:, :g.ny, :g.nx]
            P[:phase.shape[1], :phase.shape[2], p * s + q] = phase.transpose(1, 2, 0, 3)
    return P.reshape(g.ny * g.nx, -1)


def _add_phases(dxt, dP, g):
    """The adjoint of _phases: dP (ny*nx, M*B) written back into dxt (C, H, W, B) (each
    pixel is in one phase at most, so writing is adding to zero)."""
    s = g.stride
    dP = dP.reshape(g.ny, g.nx, s * s, g.C, -1)
    for p in range(s):
        for q in range(s):
            view = dxt[:, p::s, q::s][:, :g.ny, :g.nx]
            view[...] = dP[:view.shape[1], :view.shape[2], p * s + q].transpose(2, 0, 1, 3)


def _phase_parts(terms, g):
    """(p, q, channels, part) for each phase that the input terms `terms` (a slice of
    range(M), M = (phase, channel) pairs) reach into: that phase's channels, and where
    they sit among the terms."""
    for phase in range(terms.start // g.C, -(-terms.stop // g.C)):
        first = max(terms.start, phase * g.C)
        last = min(terms.stop, (phase + 1) * g.C)
        yield (phase // g.stride, phase % g.stride, slice(first - phase * g.C, last - phase * g.C),
               slice(first - terms.start, last - terms.start))


def _phase_taps(w, terms, g):
    """The taps (taps^2, m*O) of the input terms `terms` of w (C, k, k, O), zero where a
    phase's kernel is smaller than taps x taps."""
    xp, s = get_array_module(w), g.stride
    Wt = xp.zeros((g.taps, g.taps, terms.stop - terms.start, g.O), dtype=w.dtype)
    for p, q, channels, part in _phase_parts(terms, g):
        phase = w[channels, p::s, q::s]
        Wt[:phase.shape[1], :phase.shape[2], part] = phase.transpose(1, 2, 0, 3)
    return Wt.reshape(g.taps ** 2, -1)


def _add_phase_taps(dw, dWt, terms, g):
    """The adjoint of _phase_taps: dWt (taps^2, m*O) into dw (C, k, k, O)."""
    s = g.stride
    dWt = dWt.reshape(g.taps, g.taps, terms.stop - terms.start, g.O)
    for p, q, channels, part in _phase_parts(terms, g):
        view = dw[channels, p::s, q::s]
        view[...] = dWt[:view.shape[1], :view.shape[2], part].transpose(2, 0, 1, 3)


def _chunks(g, itemsize, batch):
    """Slices of the M input terms, Geometry.chunk of them each."""
    size = g.chunk(itemsize, batch)
    return [slice(m, min(m + size, g.terms)) for m in range(0, g.terms, size)]


def _kernel_spectrum(D, w, terms, g):
    """The conjugate spectrum (F, 2, m, O) of the input terms `terms` of the kernel w."""
    return (D @ _phase_taps(w, terms, g)).reshape(g.frequencies, 2, -1, g.O)


def forward(xt, w, b, *, stride=1, pad=0):
    """out (O, oh, ow, B) of xt (C, H, W, B) and w (C, k, k, O), through the DFT; the
    cache keeps the input's spectrum."""
    xp = get_array_module(xt)
    xt = pad_spatial(xt, pad)
    g = geometry_of(xt.shape, w.shape, stride)
    B, F, M, O = xt.shape[-1], g.frequencies, g.terms, g.O
    A, D, G = _matrices(g, xp, xt.dtype)
    X = A @ _phases(xt, g)  # (2F, M*B)
    X = transposed(X.reshape(F, 2, M, B), (0, 2, 1, 3)).reshape(F, M, 2 * B)
    XT = X.transpose(0, 2, 1)  # (F, 2B, M): per frequency [Xr^T; Xi^T]
    by_real = by_imag = None  # (F, 2B, O): X^T K's real part, X^T K's imaginary part
    for terms in _chunks(g, xt.itemsize, B):
        K = _kernel_spectrum(D, w, terms, g)
        real, imag = XT[:, :, terms] @ K[:, 0], XT[:, :, terms] @ K[:, 1]
        del K
        if by_real is None:
            by_real, by_imag = real, imag
        else:
            by_real += real
            by_imag += imag
        del real, imag  # before the next chunk's are made
    Z = xp.empty((F, 2, B, O), dtype=xt.dtype)  # the output's spectrum, transposed
    xp.subtract(by_real[:, :B], by_imag[:, B:], out=Z[:, 0])
    xp.add(by_real[:, B:], by_imag[:, :B], out=Z[:, 1])
    out = (G @ Z.reshape(2 * F, B * O)).reshape(g.oh, g.ow, B, O)
    out = transposed(out, (3, 0, 1, 2))
    out += b.reshape(O, 1, 1, 1)
    return out, (X, w, g, xt.shape[1:3], pad)


def backward(dout, cache, *, need_dx=True):
    """dxt (C, H, W, B) or None, dw, db from dout (O, oh, ow, B)."""
    X, w, g, (H, W), pad = cache
    xp = get_array_module(dout)
    B, F, M, O = dout.shape[-1], g.frequencies, g.terms, g.O
    A, D, G = _matrices(g, xp, dout.dtype)
    dZ = (G.T @ transposed(dout, (1, 2, 3, 0)).reshape(-1, B * O)).reshape(F, 2, B, O)
    # E^T = [[dZr, dZi], [dZi, -dZr]] (transposed blocks, as Z): the gradient of the
    # per-frequency products, real and imaginary parts of both factors in one matrix.
    E = xp.empty((F, 2 * B, 2 * O), dtype=dout.dtype)
    E[:, :B, :O] = dZ[:, 0]
    E[:, :B, O:] = dZ[:, 1]
    E[:, B:, :O] = dZ[:, 1]
    xp.negative(dZ[:, 0], out=E[:, B:, O:])
    del dZ
    dX = xp.empty((F, M, 2 * B), dtype=dout.dtype) if need_dx else None
    dw = xp.empty(w.shape, dtype=w.dtype)
    for terms in _chunks(g, dout.itemsize, B):
        if need_dx:
            K = _kernel_spectrum(D, w, terms, g)
            xp.matmul(K[:, 0], E[:, :, :O].transpose(0, 2, 1), out=dX[:, terms])
            dX[:, terms] += K[:, 1] @ E[:, :, O:].transpose(0, 2, 1)
            del K
        dK = xp.empty((F, 2, terms.stop - terms.start, O), dtype=dout.dtype)
        xp.matmul(X[:, terms], E[:, :, :O], out=dK[:, 0])
        xp.matmul(X[:, terms], E[:, :, O:], out=dK[:, 1])
        _add_phase_taps(dw, D.T @ dK.reshape(2 * F, -1), terms, g)
        del dK
    del E
    db = dout.reshape(O, -1).sum(axis=1)
    if not need_dx:
        return None, dw, db
    dX = transposed(dX.reshape(F, M, 2, B), (0, 2, 1, 3)).reshape(2 * F, M * B)
    dxt = xp.zeros((g.C, H, W, B), dtype=dout.dtype)
    _add_phases(dxt, A.T @ dX, g)
    if pad:
        dxt = dxt[:, pad:-pad, pad:-pad]
    return dxt, dw, db
