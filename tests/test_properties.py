"""What the ops must satisfy beyond their gradients, checked against definitions and
naive loop references."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from minicaps import Adam, CapsNet, SGD, ExponentialDecay
from minicaps.ops.capsules import predictions_forward, squash_backward, squash_forward
from minicaps.ops.conv import col2im, conv2d_forward, im2col
from minicaps.ops.routing import routing_forward

# Zero or well clear of underflow: |v| ~ |s|^2, and |v|^2 of a 1e-90 entry is 0 in float64.
finite = st.floats(-10, 10, allow_nan=False, width=64).filter(lambda f: f == 0 or abs(f) > 1e-60)


@settings(max_examples=50, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(1, 6)), elements=finite))
def test_squash_keeps_direction_and_stays_below_one(s):
    v, _ = squash_forward(s)
    norm_s, norm_v = np.linalg.norm(s, axis=-1), np.linalg.norm(v, axis=-1)
    assert (norm_v < 1).all()
    np.testing.assert_allclose(norm_v, norm_s ** 2 / (1 + norm_s ** 2), rtol=1e-12, atol=1e-300)
    nonzero = norm_s > 0
    # Same direction: v is s scaled by a non-negative factor.
    cos = (v * s).sum(-1)[nonzero] / (norm_v * norm_s)[nonzero]
    np.testing.assert_allclose(cos[norm_v[nonzero] > 0], 1, rtol=1e-12)


def test_squash_of_zero_is_zero_with_a_finite_gradient():
    s = np.zeros((2, 3, 4))
    v, cache = squash_forward(s)
    assert (v == 0).all()
    ds = squash_backward(np.ones_like(v), cache)
    assert np.isfinite(ds).all() and (ds == 0).all()  # the Jacobian at 0 is exactly 0


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 3), st.integers(1, 5), st.integers(1, 8), st.integers(1, 4),
       st.integers(1, 4), st.integers(0, 2**32 - 1))
def test_coupling_coefficients_sum_to_one_over_parents(B, J, I, E, iters, seed):
    u_hat = np.random.default_rng(seed).standard_normal((B, J, I, E))
    _, cache = routing_forward(u_hat, iters=iters)
    for c in cache.couplings:  # one (B, J, I) array per iteration
        np.testing.assert_allclose(c.sum(axis=1), np.ones((B, I)), rtol=1e-12)
        assert (c > 0).all()


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_col2im_is_the_adjoint_of_im2col(data):
    B, C = data.draw(st.integers(1, 2)), data.draw(st.integers(1, 3))
    k, stride, pad = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 3)), \
        data.draw(st.integers(0, 2))
    H = data.draw(st.integers(max(1, k - 2 * pad), 9))
    W = data.draw(st.integers(max(1, k - 2 * pad), 9))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    x = rng.standard_normal((B, C, H, W))
    cols = im2col(x, k, k, stride=stride, pad=pad)
    c = rng.standard_normal(cols.shape)
    lhs = (cols * c).sum()
    rhs = (x * col2im(c, x.shape, stride=stride, pad=pad)).sum()
    assert lhs == pytest.approx(rhs, rel=1e-12, abs=1e-12)


def naive_conv(x, w, b, stride, pad):
    """The definition, loop by loop, with w (C, k, k, O)."""
    B, C, H, W = x.shape
    _, k, _, O = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = (H + 2 * pad - k) // stride + 1, (W + 2 * pad - k) // stride + 1
    out = np.zeros((B, O, oh, ow))
    for n in range(B):
        for o in range(O):
            for r in range(oh):
                for q in range(ow):
                    patch = xp[n, :, r * stride:r * stride + k, q * stride:q * stride + k]
                    out[n, o, r, q] = (patch * w[..., o]).sum() + b[o]
    return out


@pytest.mark.parametrize("stride,pad", [(1, 0), (2, 0), (1, 2), (3, 1)])
def test_conv_equals_a_naive_loop(stride, pad):
    rng = np.random.default_rng(stride * 10 + pad)
    x, w, b = rng.standard_normal((2, 3, 9, 8)), rng.standard_normal((3, 3, 3, 4)), \
        rng.standard_normal(4)
    out, _ = conv2d_forward(x, w, b, stride=stride, pad=pad)
    np.testing.assert_allclose(out, naive_conv(x, w, b, stride, pad), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("channels_per_group", [1, 2])  # 2 of 3 channels: an uneven split
@pytest.mark.parametrize("stride,pad", [(1, 0), (2, 1)])
def test_conv_in_groups_of_channels_equals_the_whole_input(monkeypatch, channels_per_group,
                                                           stride, pad):
    """Forward and backward with the input channels in groups (each group's columns, weight
    matrix and their gradients) give what one group of all the channels gives."""
    from minicaps.ops import conv
    rng = np.random.default_rng(channels_per_group)
    x, w, b = rng.standard_normal((2, 3, 9, 8)), rng.standard_normal((3, 3, 3, 4)), \
        rng.standard_normal(4)
    out, cache = conv.conv2d_forward(x, w, b, stride=stride, pad=pad)
    dout = rng.standard_normal(out.shape)
    whole = conv.conv2d_backward(dout, cache)
    oh, ow = out.shape[2:]
    channel_bytes = 3 * 3 * oh * ow * 2 * x.itemsize  # kh * kw * oh * ow * B
    monkeypatch.setattr(conv, "COLUMN_BYTES", channels_per_group * channel_bytes)
    groups = conv.groups(conv.pad_spatial(conv.to_batch_last(x), pad), 3, 3, oh, ow)
    assert [g.stop - g.start for g in groups] == {1: [1, 1, 1], 2: [1, 2]}[channels_per_group]
    grouped_out, grouped_cache = conv.conv2d_forward(x, w, b, stride=stride, pad=pad)
    np.testing.assert_allclose(grouped_out, out, rtol=1e-12, atol=1e-12)
    for grouped, expected in zip(conv.conv2d_backward(dout, grouped_cache), whole):
        np.testing.assert_allclose(grouped, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("order", ["fortran", "kernel axes swapped in memory"])
def test_conv_results_do_not_depend_on_how_the_weights_lie_in_memory(order):
    """Backward writes each group's weight gradient into rows of dw in place: dw must be
    laid out for that whatever the memory order of w (a copy would take the writes)."""
    from minicaps.ops import conv
    rng = np.random.default_rng(5)
    x, w, b = rng.standard_normal((2, 3, 9, 8)), rng.standard_normal((3, 3, 3, 4)), \
        rng.standard_normal(4)
    other = np.asfortranarray(w) if order == "fortran" else \
        np.swapaxes(np.swapaxes(w, 1, 2).copy(), 1, 2)
    assert np.array_equal(other, w) and not other.flags.c_contiguous
    results = []
    for weights in (w, other):
        out, cache = conv.conv2d_forward(x, weights, b, stride=2, pad=1)
        results.append((out, *conv.conv2d_backward(np.ones_like(out), cache)))
    for mine, expected in zip(results[1], results[0]):
        np.testing.assert_array_equal(mine, expected)


@given(channels=st.integers(1, 600), channel_bytes=st.integers(1, 2 ** 26))
def test_channel_groups_cover_the_channels_within_the_ceiling_or_the_group_count(
        channels, channel_bytes):
    from minicaps.ops.conv import COLUMN_BYTES, MAX_GROUPS, channel_groups
    groups = channel_groups(channels, channel_bytes)
    sizes = [g.stop - g.start for g in groups]
    assert [g.start for g in groups] == [0] + [g.stop for g in groups[:-1]]
    assert groups[-1].stop == channels and min(sizes) >= 1 and max(sizes) - min(sizes) <= 1
    if len(groups) < MAX_GROUPS:  # below the cap, every group fits (or is one channel)
        assert max(sizes) == 1 or max(sizes) * channel_bytes <= COLUMN_BYTES
    else:
        assert len(groups) == MAX_GROUPS


def test_maxpool_equals_a_naive_loop():
    from minicaps.ops.pooling import maxpool_forward
    x = np.random.default_rng(0).standard_normal((2, 3, 7, 9))
    out, _ = maxpool_forward(x, size=3)
    assert out.shape == (2, 3, 2, 3)
    for r in range(2):
        for q in range(3):
            np.testing.assert_array_equal(out[:, :, r, q],
                                          x[:, :, 3 * r:3 * r + 3, 3 * q:3 * q + 3].max(axis=(2, 3)))


def naive_routing(u_hat_bije, iters):
    """Procedure 1 written as in the paper, one example and one capsule at a time.
    u_hat_bije is indexed [b, i, j, e]."""
    B, I, J, E = u_hat_bije.shape
    v = np.zeros((B, J, E))
    for n in range(B):
        logits = np.zeros((I, J))
        for r in range(iters):
            c = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
            for j in range(J):
                s = sum(c[i, j] * u_hat_bije[n, i, j] for i in range(I))
                norm2 = s @ s
                v[n, j] = norm2 / (1 + norm2) * s / np.sqrt(norm2)
            if r < iters - 1:
                for i in range(I):
                    for j in range(J):
                        logits[i, j] += u_hat_bije[n, i, j] @ v[n, j]
    return v


@pytest.mark.parametrize("iters", [1, 2, 3, 4])
def test_routing_equals_procedure_1_written_naively(iters):
    u_hat = np.random.default_rng(iters).standard_normal((2, 7, 3, 4))  # (B, I, J, E)
    v, _ = routing_forward(u_hat.transpose(0, 2, 1, 3).copy(), iters=iters)
    np.testing.assert_allclose(v, naive_routing(u_hat, iters), rtol=1e-10)


def test_predictions_equal_w_times_u():
    rng = np.random.default_rng(0)
    u, w = rng.standard_normal((2, 5, 3)), rng.standard_normal((5, 4, 6, 3))
    u_hat, _ = predictions_forward(u, w)  # (B, J, I, E)
    for n, i, j in [(0, 0, 0), (1, 4, 3), (1, 2, 1)]:
        np.testing.assert_allclose(u_hat[n, j, i], w[i, j] @ u[n, i], rtol=1e-12)


def test_shared_transforms_equal_one_matrix_per_capsule_copied():
    rng = np.random.default_rng(1)
    T, G = 3, 4
    u, w = rng.standard_normal((2, T * G, 5)), rng.standard_normal((T, 2, 3, 5))
    shared, _ = predictions_forward(u, w)
    copied, _ = predictions_forward(u, np.repeat(w, G, axis=0))  # capsule i = t*G + g
    np.testing.assert_allclose(shared, copied, rtol=1e-12)


def tiny_net(**kwargs):
    base = dict(in_shape=(1, 16, 16), n_classes=4, conv_channels=8, kernel_size=5,
                primary_types=4, primary_dim=4, class_dim=6)
    return CapsNet(**{**base, **kwargs})


def test_prediction_of_an_example_does_not_depend_on_its_batch():
    net = tiny_net(dtype="float64")
    x = np.random.default_rng(0).random((5, 1, 16, 16))
    whole = net.predict(x)
    for n in range(5):
        np.testing.assert_allclose(net.predict(x[n:n + 1])[0], whole[n], rtol=1e-12)
    np.testing.assert_allclose(net.predict(x[::-1])[::-1], whole, rtol=1e-12)


def test_default_network_is_the_papers():
    from minicaps import CapsNetConfig
    cfg = CapsNetConfig()
    shapes = cfg.param_shapes()
    assert shapes["caps.w"] == (1152, 10, 16, 8)
    assert shapes["primary.w"] == (256, 9, 9, 256)
    assert shapes["decoder.2.w"] == (1024, 784)
    assert cfg.n_params() == 8_215_568  # "about 8.2 M parameters with the decoder"
    assert CapsNetConfig(reconstruction=False).n_params() == 8_215_568 - 1_411_344


@pytest.mark.parametrize("kwargs", [{}, {"reconstruction": False},
                                    {"in_shape": (3, 15, 18), "routing_grad": "last"}])
def test_grads_have_the_params_keys_shapes_and_dtype(kwargs):
    net = tiny_net(**kwargs)
    x = np.random.default_rng(0).random((3, *net.config.in_shape)).astype(np.float32)
    loss, grads = net.loss_and_grads(x, np.array([0, 1, 3]))
    assert list(grads) == list(net.params)
    for name, g in grads.items():
        assert g.shape == net.params[name].shape and g.dtype == np.float32, name
    assert np.isfinite(float(loss))


@pytest.mark.parametrize("make_optimizer", [
    lambda p: Adam(p, lr=1e-3),
    lambda p: Adam(p, schedule=ExponentialDecay(2e-3, rate=0.5, steps=10)),
    lambda p: SGD(p, lr=0.5, momentum=0.9),
])
def test_a_few_optimizer_steps_lower_the_loss_on_a_fixed_batch(make_optimizer):
    net = tiny_net()
    rng = np.random.default_rng(0)
    x, y = rng.random((8, 1, 16, 16)).astype(np.float32), rng.integers(0, 4, 8)
    optimizer = make_optimizer(net.params)
    first = float(net.loss(x, y))
    for _ in range(15):
        _, grads = net.loss_and_grads(x, y)
        optimizer.step(grads)
    assert float(net.loss(x, y)) < 0.8 * first


def test_optimizer_state_round_trips():
    net = tiny_net()
    x, y = np.random.default_rng(0).random((4, 1, 16, 16)), np.array([0, 1, 2, 3])
    opt = Adam(net.params, lr=1e-3)
    opt.step(net.loss_and_grads(x, y)[1])
    clone = tiny_net()
    clone.params.update({k: v.copy() for k, v in net.params.items()})
    opt2 = Adam(clone.params, lr=1e-3)
    opt2.load_state_dict({k: np.array(v) for k, v in opt.state_dict().items()})
    grads = net.loss_and_grads(x, y)[1]
    opt.step(grads)
    opt2.step({k: g.copy() for k, g in grads.items()})
    for name in net.params:
        np.testing.assert_array_equal(net.params[name], clone.params[name])


def test_optimizer_state_of_another_shape_is_refused():
    """A moment with its parameter's size in another shape (say a conv weight's in the
    layout before) would be read element by element by the flat update: refused."""
    from minicaps import MinicapsError
    p = {"w": np.zeros((2, 3, 3, 4), np.float32)}
    state = Adam(p).state_dict()
    state["m.w"] = np.moveaxis(state["m.w"], -1, 0)
    with pytest.raises(MinicapsError, match="m.w"):
        Adam(p).load_state_dict(state)


def test_adam_matches_its_definition():
    """One parameter, three steps, against Adam written from the paper's Algorithm 1."""
    p = {"w": np.array([1.0, -2.0])}
    opt = Adam(p, lr=0.1)
    m = v = np.zeros(2)
    w = np.array([1.0, -2.0])
    for t, g in enumerate([np.array([0.5, 1.0]), np.array([-0.2, 0.3]), np.array([1.0, 0.0])], 1):
        opt.step({"w": g})
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
        w = w - 0.1 * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
    np.testing.assert_allclose(p["w"], w, rtol=1e-9)


@pytest.mark.parametrize("make_optimizer", [
    lambda p, avg: Adam(p, lr=0.1, average_steps=avg),
    lambda p, avg: SGD(p, lr=0.1, momentum=0.9, average_steps=avg),
])
def test_weight_average_matches_its_definition_and_leaves_training_alone(make_optimizer):
    """The mean of the weights after steps 0..t while t < 3, then w_avg += (w - w_avg) / 3;
    the same run without an average takes bit-for-bit the same steps."""
    grads = np.random.default_rng(0).standard_normal((6, 2))
    p, plain = {"w": np.array([1.0, -2.0])}, {"w": np.array([1.0, -2.0])}
    opt, plain_opt = make_optimizer(p, 3), make_optimizer(plain, None)
    seen, want = [p["w"].copy()], p["w"].copy()
    for t, g in enumerate(grads, 1):
        opt.step({"w": g})
        plain_opt.step({"w": g})
        seen.append(p["w"].copy())
        want = np.mean(seen, axis=0) if t < 3 else want + (p["w"] - want) / 3
        np.testing.assert_allclose(opt.average.weights["w"], want, rtol=1e-12)
        assert np.array_equal(p["w"], plain["w"])
    training = p["w"].copy()
    with opt.averaged():
        assert np.array_equal(p["w"], opt.average.weights["w"])
    assert np.array_equal(p["w"], training) and not np.array_equal(training, want)
    assert "average.w" in opt.state_dict() and "average.w" not in plain_opt.state_dict()


def test_gradient_path_norms_account_for_every_path():
    from minicaps.ops.routing import gradient_path_norms, routing_backward
    rng = np.random.default_rng(5)
    u_hat, dv = rng.standard_normal((2, 3, 6, 4)), rng.standard_normal((2, 3, 4))
    _, cache = routing_forward(u_hat, iters=3)
    norms = gradient_path_norms(dv, cache)
    assert sorted(norms) == [("agreement", 1), ("agreement", 2), ("sum", 0), ("sum", 1),
                             ("sum", 2)]
    assert all(n > 0 for n in norms.values())
    _, cache = routing_forward(u_hat, iters=1)  # one path: its norm is du_hat's
    (only,) = gradient_path_norms(dv, cache).values()
    assert only == pytest.approx(np.linalg.norm(routing_backward(dv, cache)), rel=1e-12)
    _, cache = routing_forward(u_hat, iters=3, grad="last")
    assert list(gradient_path_norms(dv, cache)) == [("sum", 2)]


def test_standardised_input_equals_standardising_by_hand():
    """input_mean/std: the net sees (x - mean) / std; its decoder still rebuilds x."""
    from minicaps import CapsNetConfig
    raw = tiny_net(in_shape=(3, 16, 16), dtype="float64")
    config = CapsNetConfig(**{**raw.config.__dict__, "input_mean": (0.5, 0.4, 0.3),
                              "input_std": (0.2, 0.25, 0.5)})
    net = CapsNet.from_config(config, raw.params)
    x = np.random.default_rng(0).random((2, 3, 16, 16))
    mean = np.array([0.5, 0.4, 0.3]).reshape(1, 3, 1, 1)
    by_hand = (x - mean) / np.array([0.2, 0.25, 0.5]).reshape(1, 3, 1, 1)
    np.testing.assert_allclose(net.predict(x), raw.predict(by_hand), rtol=1e-12)
    assert float(net.loss_terms(x, [0, 1])["reconstruction"]) != \
        float(raw.loss_terms(by_hand, [0, 1])["reconstruction"])


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_transposed_copies_equal_numpys(data):
    """minicaps.fast.parallel.transposed, tiled and threaded, against NumPy's own transposing
    copy, for tiles of one row to all of them and arrays split over threads or not."""
    from unittest import mock
    from minicaps.fast import parallel
    shape = data.draw(st.lists(st.integers(1, 6), min_size=1, max_size=4), label="shape")
    axes = tuple(data.draw(st.permutations(range(len(shape))), label="axes"))
    array = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    with mock.patch.object(parallel, "TILE_BYTES", data.draw(st.integers(1, 2000))), \
            mock.patch.object(parallel, "MIN_ELEMENTS", data.draw(st.integers(1, 64))):
        out = parallel.transposed(array, axes)
    assert out.flags.c_contiguous
    np.testing.assert_array_equal(out, np.ascontiguousarray(array.transpose(axes)))


@pytest.mark.parametrize("tile_bytes", [1, 700, 10 ** 9])  # a capsule a tile, some, all
def test_predictions_in_tiles_of_capsules_equal_their_definition(tile_bytes):
    """u_hat[b, j, i] = W_ij u_i and its gradients, computed tile by tile in threads."""
    from unittest import mock
    from minicaps.fast import parallel
    from minicaps.fast.predictions import predictions_backward, predictions_forward
    rng = np.random.default_rng(0)
    u, w = rng.standard_normal((3, 7, 4)), rng.standard_normal((7, 5, 6, 4))
    du_hat = rng.standard_normal((3, 5, 7, 6))
    with mock.patch.object(parallel, "TILE_BYTES", tile_bytes), \
            mock.patch.object(parallel, "MIN_ELEMENTS", 1):
        u_hat, cache = predictions_forward(u, w)
        du, dw = predictions_backward(du_hat, cache)
    np.testing.assert_allclose(u_hat, np.einsum("bid,ijed->bjie", u, w), rtol=1e-12)
    np.testing.assert_allclose(du, np.einsum("bjie,ijed->bid", du_hat, w), rtol=1e-12)
    np.testing.assert_allclose(dw, np.einsum("bjie,bid->ijed", du_hat, u), rtol=1e-12)


@pytest.mark.parametrize("grad,iters", [("full", 1), ("full", 3), ("last", 3)])
@pytest.mark.parametrize("tile_bytes", [1, 5000])  # an example a tile; a few, unevenly
def test_routing_in_tiles_of_examples_equals_the_whole_batch(grad, iters, tile_bytes):
    """Routing forward (v and every cached array) and backward, tile by tile in threads
    (minicaps.fast.tiles), against the batch routed at once by the reference."""
    from unittest import mock
    from minicaps.fast import parallel, tiles
    from minicaps.ops import routing
    rng = np.random.default_rng(iters)
    u_hat, dv = rng.standard_normal((7, 3, 5, 4)), rng.standard_normal((7, 3, 4))
    v, cache = routing_forward(u_hat, iters=iters, grad=grad)
    du_hat = routing.routing_backward(dv, cache)
    assert parallel.tile_length(u_hat[0].nbytes, tiles.ROUTING_TILE_BYTES) >= len(u_hat)
    with mock.patch.object(tiles, "ROUTING_TILE_BYTES", tile_bytes), \
            mock.patch.object(parallel, "MIN_ELEMENTS", 1):
        tiled_v, tiled_cache = tiles.routing_forward(u_hat, iters=iters, grad=grad)
        tiled_du_hat = tiles.routing_backward(dv, tiled_cache)
    np.testing.assert_array_equal(tiled_v, v)
    cached = lambda c: [*c.couplings, *(a for sc in c.squash_caches for a in sc),  # noqa: E731
                        *c.vs]
    assert len(cached(cache)) == 5 * (iters if grad == "full" else 1)  # c, s, |s|^2, |s|, v
    for tiled, whole in zip(cached(tiled_cache), cached(cache), strict=True):
        np.testing.assert_array_equal(tiled, whole)
    np.testing.assert_array_equal(tiled_du_hat, du_hat)
