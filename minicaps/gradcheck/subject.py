"""What a gradient check differentiates: a network of a configuration at a point where
every path carries gradient, and the function whose exact gradient its backward pass is."""
import dataclasses
from contextlib import contextmanager

import numpy as np

from ..backend import get_array_module
from ..fast import dispatch
from ..nets.kinds import build, kind_of
from ..ops.capsules import squash_forward
from ..ops.routing import routing_forward, softmax


def scale_to_operating_point(net, x, *, target=0.5, max_doublings=40):
    """Scale the capsule transforms up until the longest class capsule of each example
    averages `target`, as in a net that has learnt something. At initialisation the class
    capsules are ~0.01 long and the decoder's gradients sit at the rounding floor of finite
    differences, so a check there measures rounding, not the backward pass.

    A doubling lengthens capsules well short of `target` about 4 times (squash goes as
    |s|^2 there); where one lengthens them by less than half, routing rather than squash
    holds them back (a none-of-the-above capsule takes the couplings), and more scale
    would only saturate the couplings and vanish every gradient: that doubling is undone
    and the scaling stops."""
    def length():
        return float(net.predict(x).max(axis=1).mean())

    current = length()
    for _ in range(max_doublings):
        if current >= target:
            break
        net.params["caps.w"] *= 2
        longer = length()
        if longer < 1.5 * current:
            net.params["caps.w"] /= 2
            break
        current = longer
    return net


def network_under_check(config, *, batch_size=2, seed=0):
    """(net, x, y): a float64 network of `config` with fresh weights from `seed`, a batch of
    uniform random images and random labels; a capsule network's transforms are scaled to
    the operating point first."""
    config = dataclasses.replace(config, dtype="float64")
    net = build(config, seed=seed)
    rng = np.random.default_rng(seed)
    x = rng.random((batch_size, *config.in_shape))
    if kind_of(config) == "capsnet":
        scale_to_operating_point(net, x)
    y = rng.integers(0, config.n_classes, batch_size)
    return net, x, y


def _last_couplings(u_hat, iters):
    """The coupling coefficients of the last of `iters` routing iterations (Procedure 1):
    the softmax over parents of the logits b = sum over the earlier iterations r of the
    agreements <u_hat, v_r>, v_r being the output of r + 1 iterations.  (B, J, I)"""
    xp = get_array_module(u_hat)
    b = xp.zeros(u_hat.shape[:3], dtype=u_hat.dtype)  # (B, J, I)
    for r in range(1, iters):
        v, _ = routing_forward(u_hat, iters=r)  # (B, J, E)
        b = b + (u_hat @ v[..., None])[..., 0]
    return softmax(b, axis=1)


@contextmanager
def differentiated_function(net, x):
    """While it lasts, the net's forward pass computes the function whose exact gradient
    its backward pass is. That is the loss itself, except with routing_grad="last" and more
    than one iteration: that backward treats the last iteration's coupling coefficients as
    constants (minicaps/ops/routing.py), so it is the gradient of the loss with them held at
    their values at the checked point, and finite differences must measure that function.

    The routing the network calls (minicaps.fast.dispatch's) is swapped for one with those
    coefficients for the duration (its caches are not needed: finite differences run no
    backward pass)."""
    cfg = net.config
    if getattr(cfg, "routing_grad", "full") == "full" or cfg.routing_iters == 1:
        yield
        return
    module = dispatch
    real = module.routing_forward
    seen = []

    def recording(u_hat, **kwargs):
        seen.append(u_hat)
        return real(u_hat, **kwargs)

    def frozen(u_hat, **kwargs):
        s = (couplings[:, :, None, :] @ u_hat)[:, :, 0, :]  # (B, J, E)
        return squash_forward(s)[0], None

    try:
        module.routing_forward = recording
        net.predict(x)
        couplings = _last_couplings(seen[-1], cfg.routing_iters)
        module.routing_forward = frozen
        yield
    finally:
        module.routing_forward = real
