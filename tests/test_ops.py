"""What the reference ops must satisfy beyond their gradients, checked against their
definitions and naive loop references."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

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


def test_shared_transforms_equal_one_matrix_per_capsule_copied():
    rng = np.random.default_rng(1)
    T, G = 3, 4
    u, w = rng.standard_normal((2, T * G, 5)), rng.standard_normal((T, 2, 3, 5))
    shared, _ = predictions_forward(u, w)
    copied, _ = predictions_forward(u, np.repeat(w, G, axis=0))  # capsule i = t*G + g
    np.testing.assert_allclose(shared, copied, rtol=1e-12)
