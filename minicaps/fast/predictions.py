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
from ..backend import get_array_module
from .parallel import in_tiles


def predictions_forward(u, w):
    """capsules.predictions_forward: u (B, I, D), w (N, J, E, D) -> u_hat (B, J, I, E)."""
    N, J, E, D = w.shape
    B, I, _ = u.shape
    G = I // N  # positions that share one matrix
    if G > 1:
        blocks = u.reshape(B, 1, N, G, D) @ w.transpose(1, 0, 3, 2)[None]  # (B, J, N, G, E)
        return blocks.reshape(B, J, I, E), (u, w)
    u_hat = get_array_module(u).empty((B, J, I, E), dtype=u.dtype)
    u_i, w_t = u.transpose(1, 0, 2), w.reshape(I, J * E, D).transpose(0, 2, 1)

    def predict(first, last):  # capsules first..last-1, written into routing's layout
        part = u_i[first:last] @ w_t[first:last]  # (n, B, J*E)
        u_hat[:, :, first:last] = part.reshape(-1, B, J, E).transpose(1, 2, 0, 3)

    in_tiles(u, I, B * J * E * u.itemsize, predict)
    return u_hat, (u, w)


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
