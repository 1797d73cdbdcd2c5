"""The predictions u_hat = W u as large matrix products, on both devices.

The reference (minicaps.ops.capsules) writes the predictions as one einsum, which NumPy
runs as a plain loop. Here they are batched matrix products, arranged by the shape of w
(N, J, E, D), with the reference's inputs and outputs; the sums over D run in another
order, so the results agree with the reference to rounding.

- One matrix per capsule (N = I, the paper's network): for each capsule, (B, D) x (D, J*E),
  in tiles of capsules over threads on the CPU, each tile's product copied into routing's
  layout (B, J, I, E) while it is still in cache (the whole product, then a transposing
  copy, is slower); on the GPU in one piece.
- Matrices shared by the G grid positions of a type (N = T): a broadcast product over
  (b, j, n) of (G, D) x (D, E) blocks, which writes u_hat in routing's layout directly.
"""
import numpy as np

from ..backend import get_array_module
from .parallel import in_tiles

# Examples per product on the CPU. A tile holds whole capsules (all examples of each), so
# with many examples a tile is one capsule, and its copy into routing's layout writes 16
# numbers to each of B x J places a whole row of u_hat apart: at evaluation's batch of 256
# the logo network's predictions took most of an evaluation (docs/performance.md). Blocks
# of examples keep several capsules in a tile.
BATCH_BLOCK = 64


def predictions_forward(u, w):
    """capsules.predictions_forward: u (B, I, D), w (N, J, E, D) -> u_hat (B, J, I, E)."""
    N, J, E, D = w.shape
    B, I, _ = u.shape
    G = I // N  # positions that share one matrix
    if G > 1:
        blocks = u.reshape(B, 1, N, G, D) @ w.transpose(1, 0, 3, 2)[None]  # (B, J, N, G, E)
        return blocks.reshape(B, J, I, E), (u, w)
    xp = get_array_module(u)
    u_hat = xp.empty((B, J, I, E), dtype=u.dtype)
    u_i, w_t = u.transpose(1, 0, 2), w.reshape(I, J * E, D).transpose(0, 2, 1)
    block = BATCH_BLOCK if xp is np else max(B, 1)
    for start in range(0, B, block):
        examples = slice(start, start + block)
        _predict_into(u_hat[examples], u_i[:, examples], w_t)
    return u_hat, (u, w)


def _predict_into(u_hat, u_i, w_t):
    """u_hat (b, J, I, E) = the predictions of u_i (I, b, D) by w_t (I, D, J*E), in tiles
    of capsules, each tile's product copied into routing's layout while still in cache."""
    b, J, I, E = u_hat.shape

    def predict(first, last):  # capsules first..last-1
        part = u_i[first:last] @ w_t[first:last]  # (n, b, J*E)
        u_hat[:, :, first:last] = part.reshape(-1, b, J, E).transpose(1, 2, 0, 3)

    in_tiles(u_i, I, b * J * E * u_hat.itemsize, predict)


def predictions_backward(du_hat, cache):
    """capsules.predictions_backward: du (B, I, D) and dw (N, J, E, D) from du_hat."""
    u, w = cache
    N, J, E, D = w.shape
    B, I, _ = u.shape
    G = I // N
    if G > 1:
        blocks = du_hat.reshape(B, J, N, G, E)
        du = (blocks @ w.transpose(1, 0, 2, 3)[None]).sum(axis=1)  # (B, N, G, D)
        dw = (blocks.transpose(0, 1, 2, 4, 3) @ u.reshape(B, 1, N, G, D)).sum(axis=0)
        return du.reshape(B, I, D), dw.transpose(1, 0, 2, 3)  # dw from (J, N, E, D)
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
