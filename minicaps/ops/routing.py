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

Routing is built from two smaller ops, softmax over J and squash. Both are keyword
arguments, this package's own by default (the one place that passes others is
minicaps/fast/dispatch.py).
"""
from typing import NamedTuple

from ..backend import get_array_module
from .capsules import squash_backward, squash_forward

ROUTING_GRADS = ("full", "last")


class RoutingCache(NamedTuple):
    """What routing_forward keeps for backward: one entry per kept iteration in each list
    (every iteration for grad="full", the last only for grad="last")."""
    u_hat: object  # (B, J, I, E)
    couplings: list  # c, (B, J, I) each
    squash_caches: list  # squash_forward's (s, |s|^2, |s|) each
    vs: list  # v, (B, J, E) each
    grad: str
    iters: int


def softmax(x, axis):
    xp = get_array_module(x)
    e = xp.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def softmax_backward(c, dc, axis):
    """The gradient reaching softmax's input, from its output c and output gradient dc."""
    return c * (dc - (dc * c).sum(axis=axis, keepdims=True))


def routing_forward(u_hat, *, iters=3, grad="full", softmax=softmax, squash=squash_forward):
    """Class capsules v (B, J, E) from predictions u_hat (B, J, I, E).

    Logits start at 0 for every example; c is the softmax of b over the J class capsules,
    separately for each example and input capsule.
    """
    if grad not in ROUTING_GRADS:
        raise ValueError(f"routing grad must be one of {ROUTING_GRADS}, not {grad!r}")
    if iters < 1:
        raise ValueError(f"routing needs at least one iteration, not {iters}")
    xp = get_array_module(u_hat)
    cache = RoutingCache(u_hat, [], [], [], grad, iters)
    b = xp.zeros(u_hat.shape[:3], dtype=u_hat.dtype)  # (B, J, I)
    for r in range(iters):
        c = softmax(b, axis=1)  # (B, J, I), sums to 1 over J
        s = (c[:, :, None, :] @ u_hat)[:, :, 0, :]  # (B, J, E)
        v, squash_cache = squash(s)
        if grad == "full" or r == iters - 1:  # "last": backward needs the last one only
            cache.couplings.append(c)
            cache.squash_caches.append(squash_cache)
            cache.vs.append(v)
        if r < iters - 1:
            b = b + (u_hat @ v[..., None])[..., 0]  # agreement <u_hat, v>, (B, J, I)
    return v, cache


def _gradient_paths(dv, cache, softmax_backward=softmax_backward,
                    squash_backward=squash_backward):
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


def routing_backward(dv, cache, *, softmax_backward=softmax_backward,
                     squash_backward=squash_backward, out=None):
    """du_hat (B, J, I, E) from dv (B, J, E), written into `out` if given (as NumPy's
    out=).

    Every path into u_hat is an outer product left (B, J, I) x right (B, J, E): c_r x ds_r
    for the weighted sums, db_r x v_(r-1) for the agreements. They are summed with one
    batched matrix product over the K paths.
    """
    xp = get_array_module(dv)
    terms = _gradient_paths(dv, cache, softmax_backward, squash_backward)
    left = xp.stack([t[1] for t in terms], axis=-1)  # (B, J, I, K)
    right = xp.stack([t[2] for t in terms], axis=2)  # (B, J, K, E)
    if len(terms) == 1:  # the same numbers: NumPy's product over K = 1 is a slow loop
        return xp.multiply(left, right, out=out)
    return xp.matmul(left, right, out=out)


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
