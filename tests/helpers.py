"""What several test files share: small float64 networks for finite differences, batches
that keep clear of their kinks, hypothesis drawing helpers and the whole-network gradient
check. (conftest.py holds only fixtures.)"""
import numpy as np
from hypothesis import strategies as st

from minicaps import CapsNet
from minicaps.gradcheck import H, check_model, directional_check

TOLERANCE = 1e-6  # relative error of a hand-written gradient against finite differences
KINK_MARGIN = 10 * H  # the stencil reaches 2h: stay well clear of every kink


def normal(data, shape, scale=1.0):
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    return np.random.default_rng(seed).standard_normal(shape) * scale


def dims(data, lo, hi, label):
    return data.draw(st.integers(lo, hi), label=label)


def assert_network_gradients(net, x, y):
    """Every parameter's gradient within TOLERANCE of finite differences: sampled single
    entries, then each parameter along a direction and all of them together ("*")."""
    sampled = check_model(net, x, y, max_entries=6)
    directional = directional_check(net, x, y)
    assert set(sampled) == set(net.params)
    assert set(directional) == set(net.params) | {"*"}
    assert max(sampled.values()) < TOLERANCE, sampled
    assert max(directional.values()) < TOLERANCE, directional


def small_net(*, in_shape=(1, 14, 12), n_classes=3, routing_iters=3, routing_grad="full",
              reconstruction=True, share_transforms=False, none_capsule=False, seed=1):
    """A float64 CapsNet small enough for finite differences, with its weights scaled so
    that the class capsules have lengths of 0.5-0.8: the regime training works in, where
    every loss term has gradients well above the rounding of finite differences (at the
    tiny initial weights the decoder's gradients are ~1e-11)."""
    net = CapsNet(in_shape=in_shape, n_classes=n_classes, conv_channels=4, kernel_size=3,
                  primary_types=2, primary_dim=4, class_dim=5, routing_iters=routing_iters,
                  routing_grad=routing_grad, reconstruction=reconstruction,
                  share_transforms=share_transforms, none_capsule=none_capsule,
                  dtype="float64", seed=seed)
    net.params["conv1.w"] *= 3
    net.params["primary.w"] *= 3
    net.params["caps.w"] *= 30
    return net


def batch(net, B=2, seed=0):
    """A random batch for `net`: the first, from `seed` on, whose conv1 pre-activations all
    keep 1e-3 clear of the ReLU kink. conv1 has few weights per unit, so any step along them
    moves every pre-activation of a channel; the checker would have to discard it."""
    from minicaps.ops.conv import conv2d_forward
    for s in range(seed, seed + 100):
        rng = np.random.default_rng(s)
        x = rng.random((B, *net.config.in_shape))
        pre, _ = conv2d_forward(x, net.params["conv1.w"], net.params["conv1.b"],
                                stride=net.config.conv_stride)
        if np.abs(pre).min() > 1e-3:
            return x, rng.integers(0, net.config.n_classes, B)
    raise AssertionError("no kink-free batch in 100 seeds")


def tiny_net(**kwargs):
    base = dict(in_shape=(1, 16, 16), n_classes=4, conv_channels=8, kernel_size=5,
                primary_types=4, primary_dim=4, class_dim=6)
    return CapsNet(**{**base, **kwargs})
