"""Dynamic routing between capsules (Procedure 1 of the paper), forward and backward.

Layout: u_hat (B, J, I, E), routing logits b and coupling coefficients c (B, J, I),
class capsules s, v (B, J, E). With J ahead of I both sums over input capsules are batched
matrix products:  s_j = sum_i c_ij u_hat_j|i  and  b_ij += <u_hat_j|i, v_j>.

Two backward passes, both exact for what they define:

- grad="full": the true gradient of the unrolled procedure. u_hat is used 2r - 1 times
  (r weighted sums, r - 1 agreements), so its gradient is the sum of all those paths,
  through the coupling coefficients and the logits of every iteration.
- grad="last": the coupling coefficients are treated as constants (as if chosen by a
  separate process); gradient reaches u_hat only through the last weighted sum,
  du_hat = c_last * ds_last. Cheaper, and what many implementations do by detaching c.
"""
import numpy as np

from ..fast import kernels
from ..backend import get_array_module
from .capsules import squash_backward, squash_forward
from ..fast.parallel import THREADS, in_tiles, tile_length

ROUTING_GRADS = ("full", "last")
# Routing is separate for every example, so the CPU routes a batch in tiles of examples,
# split over threads (minicaps.parallel.in_tiles): a tile's u_hat (about 3 MiB, four
# examples of the paper's network) stays in cache through every iteration, where the whole
# batch's (24 MB at batch 32) went out to memory and back at each of its passes. On the
# 2-core CPU, routing forward took 3.3 ms instead of 6.6 at batch 32, 13 instead of 35 at
# 128; backward 4.4 instead of 7.6, 21 instead of 41. The GPU routes the batch at once.
TILE_BYTES = 3 * 2 ** 20


def softmax(x, axis):
    if axis == 1 and kernels.fused(x):
        return kernels.softmax_axis1(x)
    xp = get_array_module(x)
    e = xp.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def softmax_backward(c, dc, axis):
    """The gradient reaching softmax's input, from its output c and output gradient dc."""
    if axis == 1 and kernels.fused(c):
        return kernels.softmax_axis1_backward(c, dc)
    return c * (dc - (dc * c).sum(axis=axis, keepdims=True))


def routing_forward(u_hat, *, iters=3, grad="full"):
    """Class capsules v (B, J, E) from predictions u_hat (B, J, I, E).

    Logits start at 0 for every example; c is the softmax of b over the J class capsules,
    separately for each example and input capsule.
    """
    if grad not in ROUTING_GRADS:
        raise ValueError(f"routing grad must be one of {ROUTING_GRADS}, not {grad!r}")
    if iters < 1:
        raise ValueError(f"routing needs at least one iteration, not {iters}")
    xp = get_array_module(u_hat)
    B, J, I, E = u_hat.shape
    kept = iters if grad == "full" else 1  # "last": backward needs only the last iteration

    def per_kept_iteration(last_axis):  # the whole batch's arrays, filled tile by tile
        return [xp.empty((B, J, last_axis), dtype=u_hat.dtype) for _ in range(kept)]

    couplings, vs = per_kept_iteration(I), per_kept_iteration(E)
    squash_caches = list(zip(per_kept_iteration(E), per_kept_iteration(1),
                             per_kept_iteration(1)))  # s, |s|^2, |s|

    def route(first, last):  # examples first..last-1, every iteration
        u = u_hat[first:last]
        b = xp.zeros(u.shape[:3], dtype=u.dtype)
        for r in range(iters):
            c = softmax(b, axis=1)  # (n, J, I), sums to 1 over J
            s = (c[:, :, None, :] @ u)[:, :, 0, :]  # (n, J, E)
            v, squash_cache = squash_forward(s)
            k = r - (iters - kept)  # its place among the kept iterations, if kept
            if k >= 0:
                for whole, part in zip((couplings[k], vs[k], *squash_caches[k]),
                                       (c, v, *squash_cache)):
                    whole[first:last] = part
            if r < iters - 1:
                b = b + (u @ v[..., None])[..., 0]  # agreement <u_hat, v>, (n, J, I)

    in_tiles(u_hat, B, u_hat[0].nbytes, route, tile_bytes=TILE_BYTES)
    return vs[-1], (u_hat, couplings, squash_caches, vs, grad, iters)


def examples_at_once(batch_size, example_bytes, device):
    """The most examples whose routing temporaries exist at once (example_bytes of u_hat
    each): on the CPU a tile per thread, on the GPU the whole batch."""
    if device == "gpu":
        return batch_size
    return min(batch_size, THREADS * tile_length(example_bytes, TILE_BYTES))


def _examples(cache, first, last):
    """The routing cache of examples first..last-1 (views)."""
    u_hat, couplings, squash_caches, vs, grad, iters = cache
    return (u_hat[first:last], [c[first:last] for c in couplings],
            [tuple(a[first:last] for a in sc) for sc in squash_caches],
            [v[first:last] for v in vs], grad, iters)


def _gradient_paths(dv, cache):
    """The outer-product terms left (B, J, I) x right (B, J, E) whose sum is du_hat, with
    the path each belongs to: ("sum", r) for iteration r's weighted sum (through c_r, as
    constants), ("agreement", r) for the logit update that feeds iteration r (the
    gradient that flows through the coupling coefficients)."""
    u_hat, couplings, squash_caches, vs, grad, iters = cache
    first = iters - len(couplings)  # "last" keeps only the last iteration's caches
    terms = []
    db_later = None  # gradient reaching b_r from the iterations after r
    for r in range(len(couplings) - 1, -1, -1):
        c = couplings[r]
        ds = squash_backward(dv, squash_caches[r])  # (B, J, E)
        terms.append((("sum", first + r), c, ds))
        if grad == "last" or r == 0:  # b_0 = 0 is a constant
            break
        dc = (u_hat @ ds[..., None])[..., 0]  # (B, J, I)
        db = softmax_backward(c, dc, axis=1)  # over J
        if db_later is not None:
            db = db + db_later
        # b_r = b_(r-1) + <u_hat, v_(r-1)>: db flows on to b_(r-1) and into the agreement.
        terms.append((("agreement", first + r), db, vs[r - 1]))
        dv = (db[:, :, None, :] @ u_hat)[:, :, 0, :]  # (B, J, E), gradient of v_(r-1)
        db_later = db
    return terms


def routing_backward(dv, cache):
    """du_hat (B, J, I, E) from dv (B, J, E).

    Every path into u_hat is an outer product left (B, J, I) x right (B, J, E): c_r x ds_r
    for the weighted sums, db_r x v_(r-1) for the agreements. They are collected and
    summed with one batched matrix product, tile of examples by tile as in the forward pass.
    On the CPU du_hat is a (B, J, I, E) view of an array laid out (I, B, J, E).
    """
    u_hat = cache[0]
    xp = get_array_module(dv)
    B, J, I, E = u_hat.shape
    if xp is np:
        # Laid out (I, B, J, E), as the predictions' backward pass reads it capsule by
        # capsule: that spares it a transposing copy (on the 2-core CPU at batch 128, it
        # took 17 ms instead of 43, for 6 ms more here).
        du_hat = np.empty((I, B, J, E), dtype=u_hat.dtype).transpose(1, 2, 0, 3)
    else:
        du_hat = xp.empty_like(u_hat)

    def backward(first, last):
        terms = _gradient_paths(dv[first:last], _examples(cache, first, last))
        left = xp.stack([t[1] for t in terms], axis=-1)  # (n, J, I, K)
        right = xp.stack([t[2] for t in terms], axis=2)  # (n, J, K, E)
        if len(terms) == 1:  # the same numbers, 1.3x faster (NumPy's product of K = 1 is a loop)
            xp.multiply(left, right, out=du_hat[first:last])
        else:
            xp.matmul(left, right, out=du_hat[first:last])

    in_tiles(u_hat, B, u_hat[0].nbytes, backward, tile_bytes=TILE_BYTES)
    return du_hat


def gradient_path_norms(dv, cache):
    """{("sum" | "agreement", r): Frobenius norm of that path's share of du_hat}: how much
    of the gradient reaches u_hat through each weighted sum, and how much through the
    coupling coefficients (the agreements), iteration by iteration."""
    xp = get_array_module(dv)
    norms = {}
    for path, left, right in _gradient_paths(dv, cache):
        # ||l x r||_F over (I, E) is ||l|| ||r|| for each (b, j); summed in quadrature.
        per_bj = (left * left).sum(axis=2) * (right * right).sum(axis=2)  # (B, J)
        norms[path] = float(xp.sqrt(per_bj.sum()))
    return norms
