"""Capsule ops: squash (Eq. 1), primary capsules, class-capsule predictions, lengths.

Axis letters, used the same way everywhere: B batch, I input (primary) capsules, J output
(class) capsules, D input capsule dimension, E output capsule dimension, T primary types.
"""
from ..fast import kernels
from ..backend import get_array_module
from .conv import conv2d_backward_batch_last, conv2d_forward_batch_last
from ..fast.parallel import in_tiles


def squash_forward(s):
    """v = s |s| / (1 + |s|^2) over the last axis (Eq. 1, rewritten without the 1/|s|).

    Exact as written, with no epsilon: a zero vector maps to zero. |v| < 1, same direction.
    """
    if kernels.fused(s):
        v, sq, norm = kernels.squash(s)
        return v, (s, sq, norm)
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
    if kernels.fused(dv):
        return kernels.squash_backward(dv, s, sq, norm)
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


def primary_capsules_forward(x, w, b, *, types, stride=2):
    """Convolution (no ReLU), regrouped into capsules and squashed.

    x (C, H, W, B) batch-last (as conv1 leaves it), w (C, k, k, T*D) -> u (B, I, D) with
    I = T*gh*gw. Output channel t*D + d is dimension d of capsule type t; capsule
    i = t*gh*gw + row*gw + col.
    """
    out, conv_cache = conv2d_forward_batch_last(x, w, b, stride=stride,  # (T*D, gh, gw, B)
                                                spectral=True)
    _, gh, gw, B = out.shape
    D = w.shape[-1] // types
    s = out.reshape(types, D, gh, gw, B).transpose(4, 0, 2, 3, 1)  # (B, T, gh, gw, D)
    s = s.reshape(B, types * gh * gw, D)  # (B, I, D)
    u, squash_cache = squash_forward(s)
    return u, (conv_cache, squash_cache, (B, types, D, gh, gw))


def primary_capsules_backward(du, cache, *, need_dx=True):
    """dx (C, H, W, B), dw, db from du (B, I, D)."""
    conv_cache, squash_cache, (B, T, D, gh, gw) = cache
    xp = get_array_module(du)
    ds = squash_backward(du, squash_cache)  # (B, I, D)
    dout = ds.reshape(B, T, gh, gw, D).transpose(1, 4, 2, 3, 0)  # (T, D, gh, gw, B)
    dout = xp.ascontiguousarray(dout).reshape(T * D, gh, gw, B)
    return conv2d_backward_batch_last(dout, conv_cache, need_dx=need_dx)


def predictions_forward(u, w):
    """u_hat[j|i] = W_ij u_i (the paper's prediction vectors).

    u (B, I, D), w (N, J, E, D) -> u_hat (B, J, I, E). J comes before I so that routing's
    sums over I are batched matrix products. N = I is the paper's net, one matrix per input
    capsule; N = T (the primary types) shares one matrix among all G = I / T grid positions
    of a type (capsule i = t*G + g), which makes the predictions translation-equivariant.

    Two ways to the same numbers, chosen by speed (measured on the CPU, batch 32): one
    matrix per capsule is one batched product over i followed by a transposing copy;
    shared matrices are a broadcast product over (b, j, n) of (G, D) x (D, E) blocks that
    writes u_hat in routing's layout directly (2.7x faster than product-then-copy for the
    logo crops' 16 x 319 capsules, 3x slower for the paper's 1152 unshared ones).
    """
    N, J, E, D = w.shape
    B, I, _ = u.shape
    G = I // N  # positions that share one matrix
    if G == 1:
        u_hat = get_array_module(u).empty((B, J, I, E), dtype=u.dtype)
        u_i, w_t = u.transpose(1, 0, 2), w.reshape(I, J * E, D).transpose(0, 2, 1)

        def predict(first, last):  # capsules first..last-1, written into routing's layout
            part = u_i[first:last] @ w_t[first:last]  # (n, B, J*E)
            u_hat[:, :, first:last] = part.reshape(-1, B, J, E).transpose(1, 2, 0, 3)

        # In tiles of capsules, so that each tile's product is copied out of the cache
        # (the whole product, then a transposing copy, took twice as long on the CPU).
        in_tiles(u, I, B * J * E * u.itemsize, predict)
        return u_hat, (u, w)
    blocks = u.reshape(B, 1, N, G, D) @ w.transpose(1, 0, 3, 2)[None]  # (B, J, N, G, E)
    return blocks.reshape(B, J, I, E), (u, w)


def predictions_backward(du_hat, cache):
    """du (B, I, D) and dw (N, J, E, D) from du_hat (B, J, I, E); a shared matrix sums
    the gradients of all the positions that use it."""
    u, w = cache
    N, J, E, D = w.shape
    B, I, _ = u.shape
    G = I // N
    if G == 1:
        xp = get_array_module(du_hat)
        du, dw = xp.empty((I, B, D), dtype=u.dtype), xp.empty((I, J * E, D), dtype=u.dtype)
        w_2d, u_t = w.reshape(I, J * E, D), u.transpose(1, 2, 0)

        def gradients(first, last):  # of capsules first..last-1, as in predictions_forward
            # A view where du_hat is laid out (I, B, J, E), as routing leaves it on the CPU.
            g = xp.ascontiguousarray(du_hat[:, :, first:last].transpose(2, 0, 1, 3))
            g = g.reshape(-1, B, J * E)  # (n, B, J*E)
            du[first:last] = g @ w_2d[first:last]
            # dw_i = g_i^T u_i, computed as (u_i^T g_i)^T: the transposed operand is then the
            # small u (D numbers per capsule), not g, which CuPy would copy for the product.
            dw[first:last] = (u_t[first:last] @ g).transpose(0, 2, 1)

        in_tiles(du_hat, I, B * J * E * du_hat.itemsize, gradients)
        return du.transpose(1, 0, 2), dw.reshape(I, J, E, D)  # du (B, I, D)
    blocks = du_hat.reshape(B, J, N, G, E)
    du = (blocks @ w.transpose(1, 0, 2, 3)[None]).sum(axis=1)  # (B, J, N, G, D) -> (B, N, G, D)
    dw = (blocks.transpose(0, 1, 2, 4, 3) @ u.reshape(B, 1, N, G, D)).sum(axis=0)  # (J, N, E, D)
    return du.reshape(B, I, D), dw.transpose(1, 0, 2, 3)
