"""The one place where fast paths stand in for the reference ops of minicaps/ops.

The networks and the optimizer call the ops that have a fast path through this module.
Each function here takes and returns what the op of the same name in minicaps.ops does,
and runs either that reference or a substitute for it, chosen by the device and shapes:

    op                          CPU (NumPy)                        GPU (CuPy)
    to_batch_last, _first       tiled copies in threads            reference
                                (tiles.py)
    columns, add_columns        over channel ranges in threads     fused kernels (kernels.py)
                                (tiles.py)
    conv2d_*_batch_last         DFT where spectral.pays            im2col, columns as above
                                (spectral.py), else im2col with
                                the columns above
    conv2d_* (NCHW, the CNN's)  im2col as above (the DFT is        as above
                                measured for the capsules' only)
    squash_*                    reference                          fused kernel
    softmax over axis 1         reference                          fused kernel
    primary_capsules_*          the reference, made of this module's conv and squash
    predictions_*               batched products, in tiles of      the same, in one piece
                                capsules in threads
                                (predictions.py)
    routing_*                   tiles of examples in threads       the reference, with this
                                (tiles.py)                         module's softmax, squash
    em_routing_*                tiles of examples in threads       reference
                                (tiles.py)
    adam_update                 chunks in threads (tiles.py)       fused kernel

The rest of what the networks use (linear layers, activations, losses, pooling, lengths)
has no fast path: they import it from minicaps.ops directly.

One switch runs every op's reference alone: MINICAPS_REFERENCE=1 in the environment (read
on import), use_reference(True), or a `with reference():` block. tests/test_fast_paths.py
holds each substitute to its reference. A convolution's backward follows the path its
forward took (the two keep different caches); every other op asks the switch as it stands.
"""
import os
from contextlib import contextmanager

from ..backend import device_of
from ..ops import adam, capsules, conv, em_routing, routing
from . import kernels, predictions, spectral, tiles

_reference = os.environ.get("MINICAPS_REFERENCE", "0") not in ("", "0")


def use_reference(on=True):
    """Run every op's reference (True) or let the fast paths stand in (False). Returns the
    setting it replaces."""
    global _reference
    before, _reference = _reference, bool(on)
    return before


@contextmanager
def reference(on=True):
    """A block in which every op runs its reference (or, with on=False, the fast paths)."""
    before = use_reference(on)
    try:
        yield
    finally:
        use_reference(before)


def using_reference():
    return _reference


def _pick(array, reference, *, cpu=None, gpu=None):
    """What runs for `array`: the substitute for its device where there is one and the
    switch allows it, else the reference."""
    if _reference:
        return reference
    return (gpu if device_of(array) == "gpu" else cpu) or reference


def _fast_on(device, array):
    """Whether the fast paths are on and `array` lives on `device`."""
    return not _reference and device_of(array) == device


# Layouts and im2col's columns.

def to_batch_last(x):
    return _pick(x, conv.to_batch_last, cpu=tiles.to_batch_last)(x)


def to_batch_first(xt):
    return _pick(xt, conv.to_batch_first, cpu=tiles.to_batch_first)(xt)


def columns(xt, kh, kw, oh, ow, stride):
    return _pick(xt, conv.columns, cpu=tiles.columns, gpu=kernels.columns)(
        xt, kh, kw, oh, ow, stride)


def add_columns(dxt, dcols, stride):
    _pick(dxt, conv.add_columns, cpu=tiles.add_columns, gpu=kernels.add_columns)(
        dxt, dcols, stride)


# Convolutions.

def takes_spectral_path(xt_shape, w_shape, *, stride, pad=0, device="cpu"):
    """Whether conv2d_forward_batch_last goes through the DFT for an input of xt_shape
    (C, H, W, B) on `device` (the planner asks too): on the CPU, where spectral.pays."""
    if _reference or device != "cpu":
        return False
    C, H, W, B = xt_shape
    H, W = H + 2 * pad, W + 2 * pad
    _, kh, kw, _ = w_shape
    return kh == kw <= min(H, W) and spectral.pays(
        spectral.geometry_of((C, H, W, B), w_shape, stride), B)


def _im2col_backward(dout, cache, *, need_dx=True):
    return conv.conv2d_backward_batch_last(dout, cache, need_dx=need_dx, columns=columns,
                                           add_columns=add_columns)


def conv2d_forward_batch_last(xt, w, b, *, stride=1, pad=0):
    """The cache holds the backward of the path taken, for conv2d_backward_batch_last."""
    if takes_spectral_path(xt.shape, w.shape, stride=stride, pad=pad, device=device_of(xt)):
        out, cache = spectral.forward(xt, w, b, stride=stride, pad=pad)
        return out, (spectral.backward, cache)
    out, cache = conv.conv2d_forward_batch_last(xt, w, b, stride=stride, pad=pad,
                                                columns=columns)
    return out, (_im2col_backward, cache)


def conv2d_backward_batch_last(dout, cache, *, need_dx=True):
    backward, cache = cache
    return backward(dout, cache, need_dx=need_dx)


def conv2d_forward(x, w, b, *, stride=1, pad=0):
    """conv.conv2d_forward, with this module's transposes and columns."""
    out, cache = conv.conv2d_forward_batch_last(to_batch_last(x), w, b, stride=stride,
                                                pad=pad, columns=columns)
    return out.transpose(3, 0, 1, 2), cache


def conv2d_backward(dout, cache, *, need_dx=True):
    dxt, dw, db = _im2col_backward(to_batch_last(dout), cache, need_dx=need_dx)
    return (None if dxt is None else to_batch_first(dxt)), dw, db


# Capsules.

def squash_forward(s):
    return _pick(s, capsules.squash_forward, gpu=kernels.squash_forward)(s)


def squash_backward(dv, cache):
    return _pick(dv, capsules.squash_backward, gpu=kernels.squash_backward)(dv, cache)


def primary_capsules_forward(x, w, b, *, types, stride=2):
    return capsules.primary_capsules_forward(x, w, b, types=types, stride=stride,
                                             conv=conv2d_forward_batch_last,
                                             squash=squash_forward)


def primary_capsules_backward(du, cache, *, need_dx=True):
    return capsules.primary_capsules_backward(du, cache, need_dx=need_dx,
                                              conv_backward=conv2d_backward_batch_last,
                                              squash_backward=squash_backward)


def predictions_forward(u, w):
    return _pick(u, capsules.predictions_forward, cpu=predictions.predictions_forward,
                 gpu=predictions.predictions_forward)(u, w)


def predictions_backward(du_hat, cache):
    return _pick(du_hat, capsules.predictions_backward, cpu=predictions.predictions_backward,
                 gpu=predictions.predictions_backward)(du_hat, cache)


# Routing.

def softmax(x, axis):
    if axis == 1 and _fast_on("gpu", x):
        return kernels.softmax_axis1(x)
    return routing.softmax(x, axis)


def softmax_backward(c, dc, axis):
    if axis == 1 and _fast_on("gpu", c):
        return kernels.softmax_axis1_backward(c, dc)
    return routing.softmax_backward(c, dc, axis)


def routing_forward(u_hat, *, iters=3, grad="full"):
    if _fast_on("cpu", u_hat):
        return tiles.routing_forward(u_hat, iters=iters, grad=grad)
    return routing.routing_forward(u_hat, iters=iters, grad=grad, softmax=softmax,
                                   squash=squash_forward)


def routing_backward(dv, cache):
    if _fast_on("cpu", dv):
        return tiles.routing_backward(dv, cache)
    return routing.routing_backward(dv, cache, softmax_backward=softmax_backward,
                                    squash_backward=squash_backward)


def em_routing_forward(votes, activations, beta_u, beta_a, *, inverse_temperatures,
                       children=None, grad="full"):
    route = tiles.em_routing_forward if _fast_on("cpu", votes) else \
        em_routing.em_routing_forward
    return route(votes, activations, beta_u, beta_a, inverse_temperatures=inverse_temperatures,
                 children=children, grad=grad)


def em_routing_backward(dout, cache, paths=None):
    """paths (the gradient's norm along each path, for studies): the reference records them."""
    if paths is None and _fast_on("cpu", dout[0]):
        return tiles.em_routing_backward(dout, cache)
    return em_routing.em_routing_backward(dout, cache, paths)


def examples_routed_at_once(batch_size, example_bytes, device, *, em=False):
    """The most examples whose routing temporaries exist at once (example_bytes of u_hat,
    or with em=True of EM routing's votes, each; the planner asks): on the CPU a tile per
    thread, else the whole batch."""
    if _reference or device != "cpu":
        return batch_size
    return tiles.examples_routed_at_once(batch_size, example_bytes,
                                         tiles.EM_TILE_BYTES if em else None)


# The optimizer.

def adam_update(p, g, m, v, *, beta1, beta2, step_size, eps):
    _pick(p, adam.adam_update, cpu=tiles.adam_update, gpu=kernels.adam_update)(
        p, g, m, v, beta1=beta1, beta2=beta2, step_size=step_size, eps=eps)
