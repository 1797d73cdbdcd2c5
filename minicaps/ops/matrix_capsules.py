"""Layers of matrix capsules (Hinton, Sabour & Frosst, "Matrix Capsules with EM Routing",
ICLR 2018, Section 3): primary capsules, the receptive fields of convolutional capsules and
their adjoint, votes through transforms shared over positions, coordinate addition.

A capsule is a 4x4 pose matrix M, kept flat as H = 16 entries in row-major order, and an
activation a in (0, 1). Capsule grids are channels-last: poses (B, gh, gw, T, H),
activations (B, gh, gw, T). Axis letters, as in em_routing: B batch, P parent positions,
I the children one parent position sees, J parent types, T child types, G positions that
share one transform, H pose entries, K kernel size.
"""
from dataclasses import dataclass

from ..backend import get_array_module
from .conv import output_size
from .layers import linear_backward, linear_forward, sigmoid_backward, sigmoid_forward

POSE = 4  # a pose is POSE x POSE
H = POSE * POSE


def primary_forward(x, w, b, *, types):
    """Primary capsules: a 1x1 convolution of the feature maps to T poses and T activations
    per position, the activations through the logistic (Section 3: "PrimaryCaps").

    x (B, A, gh, gw), w (A, 1, 1, T*H + T) in conv layout, b (T*H + T,) -> poses
    (B, gh, gw, T, H), activations (B, gh, gw, T). Output channels t*H + h are entry h of
    type t's pose; channel T*H + t is type t's activation logit. A 1x1 convolution is a
    product over channels at every position: written as one.
    """
    B, A, gh, gw = x.shape
    T = types
    rows = x.transpose(0, 2, 3, 1).reshape(B * gh * gw, A)  # (B*gh*gw, A)
    out, linear_cache = linear_forward(rows, w.reshape(A, -1), b)  # (B*gh*gw, T*H + T)
    poses = out[:, :T * H].reshape(B, gh, gw, T, H)
    activations, sigmoid_cache = sigmoid_forward(out[:, T * H:].reshape(B, gh, gw, T))
    return (poses, activations), (linear_cache, sigmoid_cache, x.shape, w.shape)


def primary_backward(dout, cache):
    """dx (B, A, gh, gw), dw, db from dout = (dposes, dactivations)."""
    dposes, dactivations = dout
    linear_cache, sigmoid_cache, (B, A, gh, gw), w_shape = cache
    xp = get_array_module(dposes)
    dlogits = sigmoid_backward(dactivations, sigmoid_cache)  # (B, gh, gw, T)
    dout_2d = xp.concatenate([dposes.reshape(B * gh * gw, -1),
                              dlogits.reshape(B * gh * gw, -1)], axis=1)
    drows, dw, db = linear_backward(dout_2d, linear_cache)
    dx = drows.reshape(B, gh, gw, A).transpose(0, 3, 1, 2)
    return dx, dw.reshape(w_shape), db


def _offset(kernel_row, kernel_col, stride, oh, ow):
    """The grid cells that kernel offset (kernel_row, kernel_col) reads for the oh x ow
    output positions: a strided slice of the grid's two spatial axes."""
    return (slice(None), slice(kernel_row, kernel_row + stride * (oh - 1) + 1, stride),
            slice(kernel_col, kernel_col + stride * (ow - 1) + 1, stride))


def windows_forward(x, *, kernel, stride):
    """The K x K receptive field of every output position of a convolutional capsule layer
    (Section 3: "ConvCaps"), copied out: x (B, gh, gw, ...) -> (B, oh, ow, K, K, ...).

    Entry [b, y, z, r, c] is x[b, stride*y + r, stride*z + c]. Works for poses (trailing
    T, H) and activations (trailing T) alike."""
    xp = get_array_module(x)
    _, gh, gw = x.shape[:3]
    oh, ow = output_size(gh, kernel, stride, 0), output_size(gw, kernel, stride, 0)
    out = xp.stack([xp.stack([x[_offset(r, c, stride, oh, ow)] for c in range(kernel)],
                             axis=3) for r in range(kernel)], axis=3)
    return out, (x.shape, kernel, stride)


def _add_back(dwindows, x_shape, kernel, stride, combine):
    """The adjoint gather of windows_forward: every window entry combined (by `combine`,
    xp.add or xp.maximum) into the grid cell it came from; cells no window reads keep
    the initial value (0 for add, -inf for maximum)."""
    xp = get_array_module(dwindows)
    fill = 0 if combine is xp.add else -xp.inf
    dx = xp.full(x_shape, fill, dtype=dwindows.dtype)
    _, oh, ow = dwindows.shape[:3]
    for r in range(kernel):  # one offset's windows do not overlap: a plain strided write
        for c in range(kernel):
            cells = _offset(r, c, stride, oh, ow)
            dx[cells] = combine(dx[cells], dwindows[:, :, :, r, c])
    return dx


def windows_backward(dout, cache):
    """dx (B, gh, gw, ...) from dout (B, oh, ow, K, K, ...): each cell gets the sum of the
    gradients of all its copies (a child seen by overlapping fields)."""
    x_shape, kernel, stride = cache
    return _add_back(dout, x_shape, kernel, stride, get_array_module(dout).add)


@dataclass(frozen=True)
class Windows:
    """The children of a convolutional capsule layer as em_routing sees them: a child
    capsule (cell, type) appears once in every receptive field that covers it, and its
    assignments are normalised over all the parents of all those fields.

    Routing's child axis is a field's (K, K, T) flattened, P its (oh, ow) flattened.
    `total` and `largest` combine, for each entry of a (B, P, I) array, all entries that
    are the same child (sum, max) and return the result in the same layout."""
    grid: tuple  # (gh, gw): the child grid
    types: int  # T
    kernel: int
    stride: int

    def _combine(self, z, combine):
        xp = get_array_module(z)
        B = z.shape[0]
        gh, gw = self.grid
        K, s, T = self.kernel, self.stride, self.types
        oh, ow = output_size(gh, K, s, 0), output_size(gw, K, s, 0)
        fields = z.reshape(B, oh, ow, K, K, T)
        per_child = _add_back(fields, (B, gh, gw, T), K, s,
                              xp.add if combine == "sum" else xp.maximum)  # (B, gh, gw, T)
        return windows_forward(per_child, kernel=K, stride=s)[0].reshape(z.shape)

    def total(self, z):
        """z (B, P, I) summed over every copy of each child, in z's layout."""
        return self._combine(z, "sum")

    def largest(self, z):
        """The largest z (B, P, I) among every copy of each child, in z's layout."""
        return self._combine(z, "max")


def votes_forward(poses, w):
    """V_ij = M_i W_tj (Section 2): each child's pose times the transform of its type t and
    the parent type j, one transform per (t, j) shared by all positions.

    poses (B, P, I, H), w (T, J, POSE, POSE) -> votes (B, P, J, I, H), I = G*T with child
    i = g*T + t: G positions (a class capsule layer's whole grid) share each transform, and
    so do the P parent positions (convolutional capsules: T is then a field's K*K*types,
    G = 1). J ahead of I: routing's sums over children are then over the next-to-last axis.
    A broadcast product of 4x4 matrices writes the votes in that layout directly (NumPy's
    einsum took seven times as long, a product over t and a transposing copy longer too).
    """
    B, P, I, _ = poses.shape
    T, J = w.shape[:2]
    m = poses.reshape(B, P, 1, I // T, T, POSE, POSE)
    votes = m @ w.transpose(1, 0, 2, 3)[None, None, :, None]  # (B, P, J, G, T, POSE, POSE)
    return votes.reshape(B, P, J, I, H), (m, w)


def votes_backward(dvotes, cache):
    """dposes (B, P, I, H), dw (T, J, POSE, POSE) from dvotes (B, P, J, I, H); a shared
    transform gets the sum over every position that uses it.

    Both are products over t: dvotes reordered once to (T, B*P*G*x, J*z) (x, y, z the rows
    and columns of M_i, W_tj, V_ij), then dM_t = dV_t W_t^T and dW_t = M_t^T dV_t."""
    m, w = cache
    xp = get_array_module(dvotes)
    B, P, _, G, T = m.shape[:5]
    J = w.shape[1]
    dv = dvotes.reshape(B, P, J, G, T, POSE, POSE).transpose(4, 0, 1, 3, 5, 2, 6)
    dv = xp.ascontiguousarray(dv).reshape(T, B * P * G * POSE, J * POSE)
    w_t = w.transpose(0, 1, 3, 2).reshape(T, J * POSE, POSE)  # rows (j, z), columns y
    m_t = m[:, :, 0].transpose(3, 0, 1, 2, 4, 5).reshape(T, B * P * G * POSE, POSE)
    dm = (dv @ w_t).reshape(T, B, P, G, POSE, POSE)  # (T, B, P, G, x, y)
    dposes = dm.transpose(1, 2, 3, 0, 4, 5).reshape(B, P, G * T, H)
    dw = (m_t.transpose(0, 2, 1) @ dv).reshape(T, POSE, J, POSE).transpose(0, 2, 1, 3)
    return dposes, xp.ascontiguousarray(dw)


def receptive_field_centres(size, layers):
    """The centre of each output cell's receptive field along one image axis of `size`
    pixels, scaled to [0, 1], after `layers`, a sequence of (kernel, stride) without
    padding. Pixel p spans [p, p + 1), so its centre is p + 0.5."""
    start, jump, cells = 0.5, 1.0, size
    for kernel, stride in layers:
        start += (kernel - 1) / 2 * jump
        jump *= stride
        cells = output_size(cells, kernel, stride, 0)
    return [(start + jump * n) / size for n in range(cells)]


def coordinate_addition_forward(votes, *, rows, cols):
    """Coordinate addition (Section 3): the scaled (row, column) of the centre of each
    child's receptive field added to the first two entries of the right-hand column of its
    vote matrix, entries (0, 3) and (1, 3), so that a class capsule's pose can know where
    its parts were although its transforms are shared over positions.

    votes (B, 1, J, I, H) with I = gh*gw*T ordered as votes_forward's (position
    g = row*gw + col); rows (gh,), cols (gw,): scaled coordinates, e.g. from
    receptive_field_centres. A constant added: its gradient is the identity."""
    xp = get_array_module(votes)
    B, P, J, I, _ = votes.shape
    gh, gw = len(rows), len(cols)
    T = I // (gh * gw)
    offsets = xp.zeros((gh, gw, T, POSE, POSE), dtype=votes.dtype)
    offsets[..., 0, POSE - 1] = xp.asarray(rows, dtype=votes.dtype)[:, None, None]
    offsets[..., 1, POSE - 1] = xp.asarray(cols, dtype=votes.dtype)[None, :, None]
    return votes + offsets.reshape(I, H), None


def coordinate_addition_backward(dout, cache):
    return dout
