"""The spectral convolution (minicaps.fast.spectral) against the direct one (the reference,
im2col), and when the network takes it. Its gradients against finite differences:
tests/test_gradients.py."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minicaps import CapsNetConfig
from minicaps.fast import spectral
from minicaps.fast.dispatch import primary_capsules_forward, takes_spectral_path
from minicaps.ops.conv import conv2d_backward_batch_last as im2col_backward
from minicaps.ops.conv import conv2d_forward_batch_last as im2col_forward


def draw_problem(data):
    """A batch-last input (C, H, W, B), weights, bias and the output's gradient, float64."""
    draw = lambda lo, hi, label: data.draw(st.integers(lo, hi), label=label)  # noqa: E731
    C, O, B = draw(1, 5, "C"), draw(1, 4, "O"), draw(1, 3, "B")
    k, stride = draw(1, 7, "k"), draw(1, 3, "stride")
    H, W = draw(k, 16, "H"), draw(k, 16, "W")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    xt, w, b = (rng.standard_normal((C, H, W, B)), rng.standard_normal((C, k, k, O)),
                rng.standard_normal(O))
    oh, ow = (H - k) // stride + 1, (W - k) // stride + 1
    return xt, w, b, stride, rng.standard_normal((O, oh, ow, B))


@settings(max_examples=60, deadline=None)
@given(data=st.data(), chunk_terms=st.integers(1, 7))
def test_spectral_convolution_equals_the_direct_one(data, chunk_terms):
    """Output and all three gradients, with the kernel's spectrum in chunks of a few input
    terms (so that chunks split phases and channels unevenly) and need_dx off."""
    xt, w, b, stride, dout = draw_problem(data)
    expected_out, cache = im2col_forward(xt, w, b, stride=stride)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(spectral.Geometry, "chunk", lambda self, itemsize, batch: chunk_terms)
        out, spectral_cache = spectral.forward(xt, w, b, stride=stride)
        gradients = spectral.backward(dout, spectral_cache)
        dxt, dw, db = spectral.backward(dout, spectral_cache, need_dx=False)
    np.testing.assert_allclose(out, expected_out, rtol=1e-9, atol=1e-9)
    for got, expected in zip(gradients, im2col_backward(dout, cache)):
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)
    assert dxt is None
    np.testing.assert_allclose(dw, im2col_backward(dout, cache)[1], rtol=1e-9, atol=1e-9)


def test_float32_spectral_convolution_is_as_accurate_as_float32_im2col():
    """On the paper's primary capsules (batch 2): both float32 paths against float64."""
    rng = np.random.default_rng(0)
    xt, w = rng.random((256, 20, 20, 2)), (rng.random((256, 9, 9, 256)) - 0.5) / 50
    b, dout = np.zeros(256), rng.standard_normal((256, 6, 6, 2))
    exact_out, exact_cache = im2col_forward(xt, w, b, stride=2)
    exact = (exact_out, *im2col_backward(dout, exact_cache))
    single = [a.astype(np.float32) for a in (xt, w, b, dout)]
    out32, cache32 = spectral.forward(*single[:3], stride=2)
    direct_out32, direct_cache32 = im2col_forward(*single[:3], stride=2)
    errors = {}
    for name, results in [("spectral", (out32, *spectral.backward(single[3], cache32))),
                          ("im2col", (direct_out32, *im2col_backward(single[3],
                                                                     direct_cache32)))]:
        assert all(r.dtype == np.float32 for r in results)
        errors[name] = [np.abs(r - e).max() / np.abs(e).max() for r, e in zip(results, exact)]
    for spectral_error, direct_error in zip(errors["spectral"], errors["im2col"]):
        assert spectral_error < max(10 * direct_error, 1e-6), errors


def test_the_primary_capsules_take_the_spectral_path_where_it_pays():
    """The paper's primary capsules: direct at batch 1, spectral at 32; never on conv1's
    one input channel; never on the GPU (not measured there yet)."""
    config = CapsNetConfig()
    (h, w), k = config.conv1_size, config.kernel_size
    primary = (config.conv_channels, k, k, config.primary_types * config.primary_dim)
    assert not takes_spectral_path((config.conv_channels, h, w, 1), primary, stride=2)
    assert takes_spectral_path((config.conv_channels, h, w, 32), primary, stride=2)
    assert not takes_spectral_path((1, 28, 28, 32), (1, k, k, config.conv_channels), stride=1)
    assert not takes_spectral_path((config.conv_channels, h, w, 32), primary, stride=2,
                                   device="gpu")
    rng = np.random.default_rng(1)
    x = rng.random((config.conv_channels, h, w, 32), dtype=np.float32)
    weights = rng.standard_normal(primary).astype(np.float32) / 100
    _, (conv_cache, _, _) = primary_capsules_forward(
        x, weights, np.zeros(primary[-1], np.float32), types=config.primary_types)
    assert conv_cache[0] is spectral.backward


@pytest.mark.parametrize("stride", [1, 2, 3])
def test_phase_parts_cover_every_term_once(stride):
    g = spectral.Geometry(C=5, O=2, k=4, stride=stride, oh=3, ow=3)
    for size in (1, 2, 3, 7, g.terms):
        seen = []
        for start in range(0, g.terms, size):
            terms = slice(start, min(start + size, g.terms))
            for p, q, channels, part in spectral._phase_parts(terms, g):
                phase = p * stride + q
                assert part.stop - part.start == channels.stop - channels.start > 0
                seen += [phase * g.C + c for c in range(channels.start, channels.stop)]
        assert seen == list(range(g.terms))


def test_a_capsule_network_trains_the_same_through_either_path(monkeypatch):
    """The whole model's loss and gradients at a batch where the primary capsules go
    through the DFT, against the same step with the spectral path refused."""
    from minicaps import CapsNet
    net = CapsNet(in_shape=(1, 28, 28), n_classes=3, conv_channels=64, kernel_size=9,
                  primary_types=8, primary_dim=8, class_dim=4, dtype="float64", seed=2)
    rng = np.random.default_rng(3)
    x, y = rng.random((32, 1, 28, 28)), rng.integers(0, 3, 32)
    calls, original_backward = [], spectral.backward
    monkeypatch.setattr(spectral, "backward", lambda *a, **k: calls.append(1) or
                        original_backward(*a, **k))
    loss, grads = net.loss_and_grads(x, y)
    assert calls, "the spectral path was not taken"
    monkeypatch.setattr(spectral, "pays", lambda *args: False)
    direct_loss, direct_grads = net.loss_and_grads(x, y)
    assert float(loss) == pytest.approx(float(direct_loss), rel=1e-12)
    for name in grads:
        np.testing.assert_allclose(grads[name], direct_grads[name], rtol=1e-9, atol=1e-12)



def test_non_square_or_oversized_kernels_are_refused():
    with pytest.raises(ValueError, match="square kernel"):
        spectral.geometry_of((3, 9, 9, 1), (3, 5, 3, 2), 1)
    with pytest.raises(ValueError, match="no larger than"):
        spectral.geometry_of((3, 4, 9, 1), (3, 5, 5, 2), 1)
    assert not takes_spectral_path((256, 4, 9, 32), (256, 5, 5, 256), stride=2)
    assert not takes_spectral_path((256, 9, 9, 32), (256, 5, 3, 256), stride=2)


@pytest.mark.parametrize("ny, nx", [(1, 1), (1, 2), (2, 1), (3, 4), (4, 3), (10, 10), (9, 11)])
def test_the_kept_frequencies_stand_for_every_frequency_once(ny, nx):
    """Every frequency of the full ny x nx spectrum is a kept one or the mirror image
    (-fy, -fx) of exactly one, and the weights count each kept one with its mirror."""
    fy, fx, weight = spectral._frequencies(ny, nx)
    kept = list(zip(fy.tolist(), fx.tolist()))
    assert len(set(kept)) == len(kept)
    covered = {}
    for (row, column), w in zip(kept, weight):
        images = {(row, column), ((-row) % ny, (-column) % nx)}
        assert w == len(images)
        for image in images:
            covered[image] = covered.get(image, 0) + 1
    assert covered == {(r, c): 1 for r in range(ny) for c in range(nx)}
