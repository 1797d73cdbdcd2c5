"""Every op's backward against fourth-order central differences, on shapes and values
drawn by hypothesis, in float64. One table drives one test."""
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from minicaps.ops import capsules, conv, layers, losses, pooling, routing
from minicaps.fast import spectral
from minicaps.gradcheck import check_model, check_op

from helpers import (KINK_MARGIN, TOLERANCE, assert_network_gradients, batch, dims, normal,
                     small_net)
from test_em_ops import EM_OPS


def draw_conv(data):
    B, C, O = dims(data, 1, 2, "B"), dims(data, 1, 3, "C"), dims(data, 1, 3, "O")
    k, stride, pad = dims(data, 1, 3, "k"), dims(data, 1, 3, "stride"), dims(data, 0, 2, "pad")
    H_, W_ = dims(data, max(1, k - 2 * pad), 7, "H"), dims(data, max(1, k - 2 * pad), 7, "W")
    inputs = [normal(data, (B, C, H_, W_)), normal(data, (C, k, k, O)), normal(data, (O,))]
    return inputs, {"stride": stride, "pad": pad}


def draw_spectral_conv(data):
    """A batch-last input (C, H, W, B), already padded, as minicaps.fast.spectral takes it."""
    (x, w, b), kwargs = draw_conv(data)
    pad = kwargs["pad"]
    xt = np.pad(x.transpose(1, 2, 3, 0), ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    return [np.ascontiguousarray(xt), w, b], {"stride": kwargs["stride"]}  # perturbed in place


def spectral_forward(xt, w, b, *, stride):
    return spectral.forward(xt, w, b, stride=stride)


def draw_linear(data):
    B, N, M = dims(data, 1, 3, "B"), dims(data, 1, 5, "N"), dims(data, 1, 5, "M")
    return [normal(data, (B, N)), normal(data, (N, M)), normal(data, (M,))], {}


def draw_relu(data):
    x = normal(data, (dims(data, 1, 3, "B"), dims(data, 1, 6, "N")))
    assume(np.abs(x).min() > KINK_MARGIN)  # ReLU has a kink at 0
    return [x], {}


def draw_maxpool(data):
    size = dims(data, 1, 3, "size")
    shape = (dims(data, 1, 2, "B"), dims(data, 1, 2, "C"), dims(data, size, 7, "H"),
             dims(data, size, 7, "W"))
    x = normal(data, shape)
    # The max has a kink where two entries of a window tie: keep every pair apart.
    values = np.sort(x.reshape(-1))
    assume(values.size < 2 or np.diff(values).min() > KINK_MARGIN)
    return [x], {"size": size}


def draw_sigmoid(data):
    return [normal(data, (dims(data, 1, 3, "B"), dims(data, 1, 6, "N")), scale=3)], {}


def draw_vectors(data):
    """Capsule vectors (B, n, E), scaled to cover both sides of |s| = 1."""
    scale = data.draw(st.sampled_from([0.1, 0.5, 1.0, 3.0]), label="scale")
    s = normal(data, (dims(data, 1, 3, "B"), dims(data, 1, 4, "n"), dims(data, 1, 5, "E")),
               scale=scale)
    assume(np.linalg.norm(s, axis=-1).min() > KINK_MARGIN)  # |s| is not smooth at 0
    return [s], {}


def draw_primary(data):
    B, C, T, D = (dims(data, 1, 2, "B"), dims(data, 1, 2, "C"), dims(data, 1, 3, "T"),
                  dims(data, 1, 3, "D"))
    k, stride = dims(data, 1, 3, "k"), dims(data, 1, 2, "stride")
    H_, W_ = dims(data, k, 6, "H"), dims(data, k, 6, "W")
    inputs = [normal(data, (C, H_, W_, B)), normal(data, (C, k, k, T * D)),
              normal(data, (T * D,))]  # batch-last input, as conv1 leaves it
    # Squash's |s| is not smooth at s = 0 (as in draw_vectors): keep every capsule clear.
    _, (_, (_, _, norm), _) = capsules.primary_capsules_forward(*inputs, types=T, stride=stride)
    assume(norm.min() > KINK_MARGIN)
    return inputs, {"types": T, "stride": stride}


def draw_predictions(data):
    """One matrix per input capsule (N = I), or one per type shared by G positions."""
    B, N, G, J = dims(data, 1, 3, "B"), dims(data, 1, 4, "N"), dims(data, 1, 3, "G"), \
        dims(data, 1, 3, "J")
    D, E = dims(data, 1, 4, "D"), dims(data, 1, 4, "E")
    I = N * G if data.draw(st.booleans(), label="shared") else N
    return [normal(data, (B, I, D)), normal(data, (N, J, E, D))], {}


def draw_routing(data):
    B, J, I, E = (dims(data, 1, 2, "B"), dims(data, 1, 4, "J"), dims(data, 1, 5, "I"),
                  dims(data, 1, 4, "E"))
    scale = data.draw(st.sampled_from([0.3, 1.0, 2.0]), label="scale")
    u_hat, iters = normal(data, (B, J, I, E), scale), dims(data, 1, 4, "iters")
    # Squash is only once differentiable at s = 0 (v ~ s |s|): keep every iteration's class
    # capsules clear of it, as draw_vectors does for squash alone.
    _, cache = routing.routing_forward(u_hat, iters=iters)
    assume(min(norm.min() for _, _, norm in cache.squash_caches) > KINK_MARGIN)
    return [u_hat], {"iters": iters, "grad": "full"}


def draw_margin(data):
    B, J = dims(data, 1, 4, "B"), dims(data, 2, 5, "J")
    lengths = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1))).random((B, J))
    y = np.array(data.draw(st.lists(st.integers(0, J - 1), min_size=B, max_size=B)))
    # The loss has kinks where a length crosses m+ or m-.
    assume(np.abs(lengths - losses.M_PLUS).min() > KINK_MARGIN)
    assume(np.abs(lengths - losses.M_MINUS).min() > KINK_MARGIN)
    return [lengths, y], {}


def draw_reconstruction(data):
    shape = (dims(data, 1, 3, "B"), dims(data, 1, 8, "N"))
    seed = data.draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    return [rng.random(shape), rng.random(shape)], {}


def draw_cross_entropy(data):
    B, J = dims(data, 1, 4, "B"), dims(data, 2, 5, "J")
    logits = normal(data, (B, J), scale=3)
    y = np.array(data.draw(st.lists(st.integers(0, J - 1), min_size=B, max_size=B)))
    return [logits, y], {}


def margin_backward(dout, cache):
    return losses.margin_loss_backward(dout, cache)


# name: (draw, forward, backward, which inputs are differentiable)
OPS = {
    "conv2d": (draw_conv, conv.conv2d_forward, conv.conv2d_backward, None),
    "spectral conv": (draw_spectral_conv, spectral_forward, spectral.backward, None),
    "linear": (draw_linear, layers.linear_forward, layers.linear_backward, None),
    "relu": (draw_relu, layers.relu_forward, layers.relu_backward, None),
    "sigmoid": (draw_sigmoid, layers.sigmoid_forward, layers.sigmoid_backward, None),
    "maxpool": (draw_maxpool, pooling.maxpool_forward, pooling.maxpool_backward, None),
    "squash": (draw_vectors, capsules.squash_forward, capsules.squash_backward, None),
    "length": (draw_vectors, capsules.length_forward, capsules.length_backward, None),
    "primary_capsules": (draw_primary, capsules.primary_capsules_forward,
                         capsules.primary_capsules_backward, None),
    "predictions": (draw_predictions, capsules.predictions_forward,
                    capsules.predictions_backward, None),
    "routing": (draw_routing, routing.routing_forward, routing.routing_backward, None),
    "margin_loss": (draw_margin, losses.margin_loss_forward, margin_backward, (0,)),
    "softmax_cross_entropy": (draw_cross_entropy, losses.softmax_cross_entropy_forward,
                              losses.softmax_cross_entropy_backward, (0,)),
    "reconstruction_loss": (draw_reconstruction, losses.reconstruction_loss_forward,
                            losses.reconstruction_loss_backward, (0,)),
}
OPS.update(EM_OPS)  # matrix capsules and EM routing: tests/test_em_ops.py


@pytest.mark.parametrize("name", sorted(OPS))
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_backward_matches_finite_differences(name, data):
    draw, forward, backward, wrt = OPS[name]
    inputs, kwargs = draw(data)
    errors = check_op(forward, backward, inputs, kwargs=kwargs, wrt=wrt)
    assert max(errors) < TOLERANCE, errors


def frozen_coupling_routing(u_hat, *, couplings):
    """The last routing iteration with its coupling coefficients held fixed: the function
    whose exact gradient routing_grad="last" defines."""
    s = (couplings[:, :, None, :] @ u_hat)[:, :, 0, :]
    return capsules.squash_forward(s)


@pytest.mark.parametrize("iters", [1, 2, 3, 4])
@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_last_iteration_routing_gradient(iters, data):
    (u_hat,), _ = draw_routing(data)
    _, cache = routing.routing_forward(u_hat, iters=iters, grad="last")
    c_last = cache.couplings[-1].copy()
    dv = normal(data, (u_hat.shape[0], u_hat.shape[1], u_hat.shape[3]))
    # The op's own "last" backward against finite differences of the frozen function.
    analytic = routing.routing_backward(dv, cache)
    _, frozen_cache = frozen_coupling_routing(u_hat, couplings=c_last)
    expected = (c_last[..., None] * capsules.squash_backward(dv, frozen_cache)[:, :, None, :])
    np.testing.assert_allclose(analytic, expected, rtol=1e-12, atol=1e-14)
    error, = check_op(frozen_coupling_routing, lambda d, cache: c_last[..., None] *
                      capsules.squash_backward(d, cache)[:, :, None, :],
                      [u_hat], kwargs={"couplings": c_last})
    assert error < TOLERANCE


def test_routing_gradient_modes_differ_only_beyond_one_iteration():
    u_hat = np.random.default_rng(3).standard_normal((2, 3, 5, 4))
    dv = np.random.default_rng(4).standard_normal((2, 3, 4))
    grads = {}
    for iters in (1, 3):
        for mode in ("full", "last"):
            _, cache = routing.routing_forward(u_hat, iters=iters, grad=mode)
            grads[iters, mode] = routing.routing_backward(dv, cache)
    np.testing.assert_allclose(grads[1, "full"], grads[1, "last"], rtol=1e-12)
    assert np.abs(grads[3, "full"] - grads[3, "last"]).max() > 1e-3


MODEL_CASES = {
    "decoder, grey, non-square": dict(in_shape=(1, 14, 12)),
    "no decoder": dict(in_shape=(1, 14, 12), reconstruction=False),
    "3 channels, non-square": dict(in_shape=(3, 11, 13)),
    "one routing iteration": dict(in_shape=(1, 12, 12), routing_iters=1),
    "four classes, four iterations": dict(in_shape=(2, 12, 13), n_classes=4,
                                          routing_iters=4),
    "shared transforms": dict(in_shape=(1, 14, 12), share_transforms=True),
    "none-of-the-above capsule": dict(in_shape=(1, 14, 12), share_transforms=True,
                                      none_capsule=True),
}


@pytest.mark.parametrize("case", sorted(MODEL_CASES))
def test_model_gradients(case):
    """Sampled single entries of every parameter, then each parameter along a direction
    and all together. The checker skips steps that cross a ReLU or margin kink."""
    net = small_net(**MODEL_CASES[case])
    assert_network_gradients(net, *batch(net))


@pytest.mark.parametrize("in_shape", [(1, 12, 12), (3, 9, 13)])
def test_pooling_cnn_gradients(in_shape):
    from minicaps.nets.cnn import PoolingCNN
    net = PoolingCNN(in_shape=in_shape, n_classes=3, channels=(3, 4, 2), kernel_size=3,
                     hidden=(6, 5), dtype="float64", seed=2)
    rng = np.random.default_rng(0)
    assert_network_gradients(net, rng.random((2, *in_shape)), np.array([0, 2]))


def test_checker_detects_a_wrong_gradient(monkeypatch):
    """The model check must be able to fail: break one backward step and watch it."""
    from minicaps.fast import dispatch
    net = small_net()
    x, y = batch(net)
    real = dispatch.primary_capsules_backward

    def off_by_ten_percent(du, cache, **kwargs):
        dx, dw, db = real(du, cache, **kwargs)
        return dx, dw, 1.1 * db

    monkeypatch.setattr(dispatch, "primary_capsules_backward", off_by_ten_percent)
    errors = check_model(net, x, y, max_entries=6)
    assert errors["primary.b"] > 0.05
    assert errors["conv1.w"] < TOLERANCE
