"""Capsule ops: squash (Eq. 1), primary capsules, class-capsule predictions, lengths.

Axis letters, used the same way everywhere: B batch, I input (primary) capsules, J output
(class) capsules, D input capsule dimension, E output capsule dimension, T primary types.
"""
from ..backend import get_array_module
from .conv import conv2d_backward_batch_last, conv2d_forward_batch_last


def squash_forward(s):
    """v = s |s| / (1 + |s|^2) over the last axis (Eq. 1, rewritten without the 1/|s|).

    Exact as written, with no epsilon: a zero vector maps to zero. |v| < 1, same direction.
    """
    xp = get_array_module(s)
    sq = (s * s).sum(axis=-1, keepdims=True)  # |s|^2
    norm = xp.sqrt(sq)
    v = s * (norm / (1 + sq))
    return v, (s, sq, norm)


def squash_backward(dv, cache):
    """ds = f dv + s f'(n) / n <s, dv> with n = |s|, f(n) = n / (1 + n^2).

    f'(n) / n = (1 - n^2) / (n (1 + n^2)^2) blows up at n = 0, but there it multiplies
    s <s, dv> = O(n^2), and the Jacobian at s = 0 is exactly 0: the guard sets that term to
    0 where n = 0 instead of dividing by zero.
    """
    s, sq, norm = cache
    xp = get_array_module(dv)
    f = norm / (1 + sq)
    safe = xp.where(norm > 0, norm, 1)
    g = xp.where(norm > 0, (1 - sq) / (safe * (1 + sq) ** 2), 0)
    return f * dv + s * (g * (s * dv).sum(axis=-1, keepdims=True))


def length_forward(v):
    """|v| over the last axis: a capsule's length is the probability its entity is there."""
    xp = get_array_module(v)
    lengths = xp.sqrt((v * v).sum(axis=-1))
    return lengths, (v, lengths)


def length_backward(dlengths, cache):
    """dv = dlength v / |v|. |v| is not differentiable at 0; there the gradient is 0."""
    xp = get_array_module(dlengths)
    v, lengths = cache
    inv = xp.where(lengths > 0, 1 / xp.where(lengths > 0, lengths, 1), 0)
    return v * (dlengths * inv)[..., None]


def primary_capsules_forward(x, w, b, *, types, stride=2, conv=conv2d_forward_batch_last,
                             squash=squash_forward):
    """Convolution (no ReLU), regrouped into capsules and squashed.

    x (C, H, W, B) batch-last (as conv1 leaves it), w (C, k, k, T*D) -> u (B, I, D) with
    I = T*gh*gw. Output channel t*D + d is dimension d of capsule type t; capsule
    i = t*gh*gw + row*gw + col. The convolution and squash are keyword arguments, the
    reference ones by default (minicaps/fast/dispatch.py passes its own).
    """
    out, conv_cache = conv(x, w, b, stride=stride)  # (T*D, gh, gw, B)
    _, gh, gw, B = out.shape
    D = w.shape[-1] // types
    s = out.reshape(types, D, gh, gw, B).transpose(4, 0, 2, 3, 1)  # (B, T, gh, gw, D)
    s = s.reshape(B, types * gh * gw, D)  # (B, I, D)
    u, squash_cache = squash(s)
    return u, (conv_cache, squash_cache, (B, types, D, gh, gw))


def primary_capsules_backward(du, cache, *, need_dx=True,
                              conv_backward=conv2d_backward_batch_last,
                              squash_backward=squash_backward):
    """dx (C, H, W, B), dw, db from du (B, I, D)."""
    conv_cache, squash_cache, (B, T, D, gh, gw) = cache
    xp = get_array_module(du)
    ds = squash_backward(du, squash_cache)  # (B, I, D)
    dout = ds.reshape(B, T, gh, gw, D).transpose(1, 4, 2, 3, 0)  # (T, D, gh, gw, B)
    dout = xp.ascontiguousarray(dout).reshape(T * D, gh, gw, B)
    return conv_backward(dout, conv_cache, need_dx=need_dx)


def predictions_forward(u, w):
    """u_hat[j|i] = W_ij u_i (the paper's prediction vectors).

    u (B, I, D), w (N, J, E, D) -> u_hat (B, J, I, E). J comes before I so that routing's
    sums over I are batched matrix products. N = I is the paper's net, one matrix per input
    capsule; N = T (the primary types) shares one matrix among all G = I / T grid positions
    of a type (capsule i = n*G + g), which makes the predictions translation-equivariant.
    """
    N, J, E, D = w.shape
    B, I, _ = u.shape
    u_ngd = u.reshape(B, N, I // N, D)  # capsule i = n*G + g
    u_hat = get_array_module(u).einsum("bngd,njed->bjnge", u_ngd, w)  # (B, J, N, G, E)
    return u_hat.reshape(B, J, I, E), (u, w)


def predictions_backward(du_hat, cache):
    """du (B, I, D) and dw (N, J, E, D) from du_hat (B, J, I, E); a shared matrix sums
    the gradients of all the positions that use it."""
    u, w = cache
    N, J, E, D = w.shape
    B, I, _ = u.shape
    xp = get_array_module(du_hat)
    du_hat = du_hat.reshape(B, J, N, I // N, E)  # (B, J, N, G, E)
    du = xp.einsum("bjnge,njed->bngd", du_hat, w)  # (B, N, G, D)
    dw = xp.einsum("bjnge,bngd->njed", du_hat, u.reshape(B, N, I // N, D))
    return du.reshape(B, I, D), dw
