"""CPU substitutes that run a reference op over parts of its arrays, in threads.

Each function here takes and returns what the op of the same name in minicaps.ops does,
and computes every part with that op's own code (for a layout, copies it; for Adam, does
its arithmetic operation for operation): the results equal the reference's bit for bit
(tests/test_fast_paths.py). The parts run in the threads of minicaps.fast.parallel.

- to_batch_last, to_batch_first: transposing copies in tiles (parallel.transposed).
- columns, add_columns: im2col's copy and col2im's sums, over ranges of input channels.
- adam_update: Adam's update in chunks, through two scratch arrays of a chunk made once
  per thread. The reference's temporaries would be fresh arrays at every step (21 MB
  each for the primary capsules' weights), each a new mapping with a page fault per page
  unless the allocator keeps freed memory (minicaps/fast/allocator.py).
- routing_forward, routing_backward: routing in tiles of examples. Routing is separate for
  every example, and a tile's u_hat stays in cache through every iteration, where the
  whole batch's goes out to memory and back at each of its passes.
- em_routing_forward, em_routing_backward: EM routing likewise, a tile of examples' votes
  through every M- and E-step. Its caches are put together into the reference's layout;
  the betas' gradients are sums over tiles, so they differ from the reference's sum over
  the batch by rounding, where everything else is each example's own arithmetic.
"""
import numpy as np

from ..ops import conv, em_routing, routing
from ..ops.em_routing import EMRoutingCache, EStepCache, MStepCache
from ..ops.routing import RoutingCache
from .parallel import THREADS, in_parts, in_tiles, tile_length, transposed

ADAM_CHUNK = 1 << 18  # elements of a parameter per pass of the update
# Bytes of u_hat per tile of routing: four examples of the paper's network.
ROUTING_TILE_BYTES = 3 * 2 ** 20
# Bytes of votes per tile of EM routing.
EM_TILE_BYTES = 2 * 2 ** 20


def to_batch_last(x):
    return transposed(x, (1, 2, 3, 0))


def to_batch_first(xt):
    return transposed(xt, (3, 0, 1, 2))


def columns(xt, kh, kw, oh, ow, stride):
    """conv.columns: the window view copied a range of input channels per thread."""
    C, _, _, B = xt.shape
    cols = np.empty((C, kh, kw, oh, ow, B), dtype=xt.dtype)

    def copy(c0, c1):
        cols[c0:c1] = conv.windows(xt[c0:c1], kh, kw, oh, ow, stride)

    in_parts(xt, C, copy)
    return cols


def add_columns(dxt, dcols, stride):
    """conv.add_columns over ranges of input channels, one per thread."""
    def add(c0, c1):
        conv.add_columns(dxt[c0:c1], dcols[c0:c1], stride)

    in_parts(dxt, dxt.shape[0], add)


def adam_update(p, g, m, v, *, beta1, beta2, step_size, eps):
    """minicaps.ops.adam.adam_update, operation for operation, in chunks split over
    threads. p, m and v are updated through flat views: they must be contiguous."""
    flat = [a.reshape(-1) for a in (p, g, m, v)]

    def update(start, stop):
        size = min(ADAM_CHUNK, stop - start)
        t_chunk, u_chunk = (np.empty(size, flat[0].dtype) for _ in range(2))
        for first in range(start, stop, ADAM_CHUNK):
            p, g, m, v = (a[first:min(stop, first + ADAM_CHUNK)] for a in flat)
            t, u = t_chunk[:p.size], u_chunk[:p.size]
            m *= beta1
            m += np.multiply(1 - beta1, g, out=t)
            v *= beta2
            np.multiply(g, g, out=t)
            v += np.multiply(1 - beta2, t, out=t)
            np.multiply(step_size, m, out=t)
            np.add(np.sqrt(v, out=u), eps, out=u)
            p -= np.divide(t, u, out=t)  # p - step_size m / (sqrt(v) + eps)

    in_parts(flat[0], flat[0].size, update)


def _per_example_arrays(cache):
    """The arrays of a RoutingCache that have one entry per example, but u_hat, in order."""
    return [*cache.couplings, *(a for sc in cache.squash_caches for a in sc), *cache.vs]


def _examples(cache, first, last):
    """The RoutingCache of examples first..last-1 (views)."""
    return RoutingCache(cache.u_hat[first:last], [c[first:last] for c in cache.couplings],
                        [tuple(a[first:last] for a in sc) for sc in cache.squash_caches],
                        [v[first:last] for v in cache.vs], cache.grad, cache.iters)


def routing_forward(u_hat, *, iters=3, grad="full"):
    """routing.routing_forward, a tile of examples at a time; each tile's cached arrays
    are copied into the whole batch's while they are still in cache."""
    B, J, I, E = u_hat.shape
    kept = iters if grad == "full" else 1

    def per_kept_iteration(last_axis):
        return [np.empty((B, J, last_axis), dtype=u_hat.dtype) for _ in range(kept)]

    cache = RoutingCache(u_hat, per_kept_iteration(I),
                         list(zip(per_kept_iteration(E), per_kept_iteration(1),
                                  per_kept_iteration(1))),  # s, |s|^2, |s|
                         per_kept_iteration(E), grad, iters)

    def route(first, last):
        _, part = routing.routing_forward(u_hat[first:last], iters=iters, grad=grad)
        for whole, of_part in zip(_per_example_arrays(cache), _per_example_arrays(part)):
            whole[first:last] = of_part

    in_tiles(u_hat, B, u_hat[0].nbytes, route, tile_bytes=ROUTING_TILE_BYTES)
    return cache.vs[-1], cache


def routing_backward(dv, cache):
    """routing.routing_backward, a tile of examples at a time. du_hat (B, J, I, E) is a
    view of an array laid out (I, B, J, E): the predictions' backward reads it capsule by
    capsule (minicaps/fast/predictions.py), which spares it a transposing copy."""
    B, J, I, E = cache.u_hat.shape
    du_hat = np.empty((I, B, J, E), dtype=cache.u_hat.dtype).transpose(1, 2, 0, 3)

    def backward(first, last):
        routing.routing_backward(dv[first:last], _examples(cache, first, last),
                                 out=du_hat[first:last])

    in_tiles(cache.u_hat, B, cache.u_hat[0].nbytes, backward, tile_bytes=ROUTING_TILE_BYTES)
    return du_hat


def examples_routed_at_once(batch_size, example_bytes, tile_bytes=None):
    """The most examples whose routing temporaries exist at once (example_bytes of u_hat
    each, or of EM routing's votes with tile_bytes EM_TILE_BYTES): a tile per thread."""
    tile = tile_length(example_bytes, tile_bytes or ROUTING_TILE_BYTES)
    return min(batch_size, THREADS * tile)


def _rows(cache, rows):
    """An EM routing step's cache for the examples `rows` (a slice): the arrays with one
    row per example (two axes or more) sliced, the betas, lambda and windows as they are."""
    return cache._make(v[rows] if isinstance(v, np.ndarray) and v.ndim >= 2 else v
                       for v in cache)


def _joined(tiles, whole_inputs, memo):
    """One step's cache of the whole batch from its tiles' (in order): an input's rows
    (a view of one of whole_inputs) become the whole input, per-example arrays are joined
    (once: `memo` holds those joined already, by the first tile's array, as an E-step's
    assignments are also the next M-step's), anything else is the first tile's."""
    joined = []
    for entries in zip(*tiles):
        first = entries[0]
        if not isinstance(first, np.ndarray) or first.ndim < 2:
            joined.append(first)
            continue
        if id(first) not in memo:
            whole = next((a for a in whole_inputs if np.may_share_memory(first, a)), None)
            memo[id(first)] = whole if whole is not None else np.concatenate(entries)
        joined.append(memo[id(first)])
    return tuple(joined)


def em_routing_forward(votes, activations, beta_u, beta_a, *, inverse_temperatures,
                       children=None, grad="full"):
    """em_routing.em_routing_forward, a tile of examples at a time."""
    parts = {}

    def route(first, last):
        parts[first] = em_routing.em_routing_forward(
            votes[first:last], activations[first:last], beta_u, beta_a,
            inverse_temperatures=inverse_temperatures, children=children, grad=grad)

    in_tiles(votes, votes.shape[0], votes[0].nbytes, route, tile_bytes=EM_TILE_BYTES)
    tiles = [parts[first] for first in sorted(parts)]
    inputs, memo = (votes, activations), {}
    m_caches = [MStepCache._make(_joined(steps, inputs, memo))
                for steps in zip(*(c.m_steps for _, c in tiles))]
    e_caches = [None if steps[0] is None else EStepCache._make(_joined(steps, inputs, memo))
                for steps in zip(*(c.e_steps for _, c in tiles))]
    mean, out_activations = _joined([outputs for outputs, _ in tiles], (), memo)
    return (mean, out_activations), EMRoutingCache(m_caches, e_caches, out_activations)


def em_routing_backward(dout, cache):
    """em_routing.em_routing_backward, a tile of examples at a time."""
    dposes, dactivations = dout
    votes, activations = cache.m_steps[-1].votes, cache.m_steps[-1].activations
    dvotes, dinputs, betas = np.empty_like(votes), np.empty_like(activations), {}

    def backward(first, last):
        rows = slice(first, last)
        part = EMRoutingCache([_rows(c, rows) for c in cache.m_steps],
                              [None if c is None else _rows(c, rows) for c in cache.e_steps],
                              cache.out_activations[rows])
        dvotes[rows], dinputs[rows], *betas[first] = em_routing.em_routing_backward(
            (dposes[rows], dactivations[rows]), part)

    in_tiles(votes, votes.shape[0], votes[0].nbytes, backward, tile_bytes=EM_TILE_BYTES)
    dbeta_u, dbeta_a = (sum(parts) for parts in zip(*(betas[k] for k in sorted(betas))))
    return dvotes, dinputs, dbeta_u, dbeta_a
