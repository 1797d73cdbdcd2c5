"""Every CPU fast path against the reference op it stands in for (minicaps/fast/dispatch.py):
bit for bit where the arithmetic is the same (tiles and threads running the reference on
each part), to rounding where it is not (the predictions' matrix products; the DFT
convolution: tests/test_spectral.py). The fused
CuPy kernels: tests/test_kernels.py. Then whole networks, fast paths on against the
reference switch, and the switch itself."""
import json
import os
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minicaps import Adam, CapsNet
from minicaps.fast import dispatch, parallel, predictions, spectral, tiles
from minicaps.nets.cnn import PoolingCNN
from minicaps.ops import adam, capsules, conv, routing

from helpers import batch, small_net
from test_kernels import column_problems

REPO = Path(__file__).resolve().parents[1]


def in_threads(**patches):
    """Parts split over threads however small the arrays (and tiles/chunks as patched)."""
    stack = ExitStack()
    stack.enter_context(mock.patch.object(parallel, "MIN_ELEMENTS", 1))
    for name, value in patches.items():
        stack.enter_context(mock.patch.object(tiles, name, value))
    return stack


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=column_problems(device="cpu"))
def test_columns_and_their_adjoint_in_threads_equal_the_reference(problem):
    xt, kh, kw, stride = problem
    _, H, W, _ = xt.shape
    oh, ow = conv.output_size(H, kh, stride, 0), conv.output_size(W, kw, stride, 0)
    dcols = np.random.default_rng(1).standard_normal((xt.shape[0], kh, kw, oh, ow,
                                                      xt.shape[3])).astype(xt.dtype)
    start = np.random.default_rng(2).standard_normal(xt.shape).astype(xt.dtype)
    threaded_dxt, expected_dxt = start.copy(), start.copy()  # both add to what is there
    with in_threads():
        threaded = tiles.columns(xt, kh, kw, oh, ow, stride)
        tiles.add_columns(threaded_dxt, dcols, stride)
    np.testing.assert_array_equal(threaded, conv.columns(xt, kh, kw, oh, ow, stride))
    assert threaded.flags.c_contiguous
    conv.add_columns(expected_dxt, dcols, stride)
    np.testing.assert_array_equal(threaded_dxt, expected_dxt)


def test_tiled_transposes_equal_the_reference():
    x = np.random.default_rng(0).standard_normal((5, 3, 4, 6)).astype(np.float32)
    with in_threads():
        with mock.patch.object(parallel, "TILE_BYTES", 50):
            batch_last, batch_first = tiles.to_batch_last(x), tiles.to_batch_first(x)
    np.testing.assert_array_equal(batch_last, conv.to_batch_last(x))
    np.testing.assert_array_equal(batch_first, conv.to_batch_first(x))
    assert batch_last.flags.c_contiguous and batch_first.flags.c_contiguous


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adam_in_chunks_over_threads_equals_the_reference(dtype):
    rng = np.random.default_rng(0)
    start = [rng.standard_normal(101).astype(dtype) for _ in range(3)]  # p, m, v
    start[2] = np.abs(start[2])
    threaded, reference = [a.copy() for a in start], [a.copy() for a in start]
    for step in range(3):
        g = rng.standard_normal(101).astype(dtype)
        scalars = dict(beta1=0.9, beta2=0.999, step_size=1e-3 * (step + 1), eps=1e-8)
        with in_threads(ADAM_CHUNK=7):  # chunks that split the threads' parts unevenly
            tiles.adam_update(threaded[0], g, threaded[1], threaded[2], **scalars)
        adam.adam_update(reference[0], g, reference[1], reference[2], **scalars)
    for mine, expected in zip(threaded, reference):
        np.testing.assert_array_equal(mine, expected)


@pytest.mark.parametrize("stride,pad", [(1, 0), (2, 1)])
def test_convolutions_with_threaded_columns_equal_the_reference(stride, pad, monkeypatch):
    """Forward and backward, batch-last and NCHW, in groups of input channels (the DFT is
    not taken here: three channels are too few)."""
    monkeypatch.setattr(conv, "COLUMN_BYTES", 1)  # a group per channel
    rng = np.random.default_rng(stride)
    x, w, b = rng.standard_normal((4, 3, 9, 8)), rng.standard_normal((3, 3, 3, 5)), \
        rng.standard_normal(5)
    xt = conv.to_batch_last(x)
    assert not dispatch.takes_spectral_path(xt.shape, w.shape, stride=stride, pad=pad)
    runs = []
    for reference in (False, True):
        with dispatch.reference(reference), in_threads():
            out_t, cache_t = dispatch.conv2d_forward_batch_last(xt, w, b, stride=stride, pad=pad)
            grads_t = dispatch.conv2d_backward_batch_last(np.ones_like(out_t), cache_t)
            out, cache = dispatch.conv2d_forward(x, w, b, stride=stride, pad=pad)
            grads = dispatch.conv2d_backward(np.ones_like(out), cache)
            runs.append((out_t, *grads_t, out, *grads))
    for fast, reference in zip(*runs):
        np.testing.assert_array_equal(fast, reference)
    expected_t, _ = conv.conv2d_forward_batch_last(xt, w, b, stride=stride, pad=pad)
    np.testing.assert_array_equal(runs[1][0], expected_t)  # the switch's run: the reference


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("tile_bytes", [1, 700, 10 ** 9])  # a capsule a tile, some, all
@pytest.mark.parametrize("batch_block", [2, 64])  # blocks of 2, 2 and 1 examples; one block
def test_the_predictions_as_matrix_products_match_the_reference_to_rounding(shared,
                                                                            tile_bytes,
                                                                            batch_block):
    rng = np.random.default_rng(int(shared))
    T, G = 3, 4
    N = T if shared else T * G
    u, w = rng.standard_normal((5, T * G, 4)), rng.standard_normal((N, 2, 6, 4))
    du_hat = rng.standard_normal((5, 2, T * G, 6))
    with in_threads(), mock.patch.object(parallel, "TILE_BYTES", tile_bytes), \
            mock.patch.object(predictions, "BATCH_BLOCK", batch_block):
        u_hat, cache = predictions.predictions_forward(u, w)
        du, dw = predictions.predictions_backward(du_hat, cache)
    expected_u_hat, expected_cache = capsules.predictions_forward(u, w)
    expected_du, expected_dw = capsules.predictions_backward(du_hat, expected_cache)
    for mine, expected in [(u_hat, expected_u_hat), (du, expected_du), (dw, expected_dw)]:
        assert mine.shape == expected.shape
        np.testing.assert_allclose(mine, expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("kwargs", [{}, {"routing_grad": "last", "in_shape": (3, 11, 13)},
                                    {"share_transforms": True, "none_capsule": True}])
def test_a_small_capsule_network_agrees_with_its_reference(kwargs):
    net = small_net(**kwargs)
    x, y = batch(net, B=5)
    with in_threads(ROUTING_TILE_BYTES=1):  # a tile per example
        loss, grads = net.loss_and_grads(x, y)
    with dispatch.reference():
        expected_loss, expected_grads = net.loss_and_grads(x, y)
    assert float(loss) == pytest.approx(float(expected_loss), rel=1e-12)
    for name in grads:
        np.testing.assert_allclose(grads[name], expected_grads[name], rtol=1e-9, atol=1e-13)


def test_the_cnn_baseline_equals_its_reference_bit_for_bit():
    """Its fast paths (tiled transposes, threaded columns) only copy and add as the
    reference does."""
    net = PoolingCNN(in_shape=(2, 12, 12), n_classes=3, channels=(3, 4, 2), kernel_size=3,
                     hidden=(6, 5), dtype="float64", seed=2)
    rng = np.random.default_rng(0)
    x, y = rng.random((3, 2, 12, 12)), np.array([0, 2, 1])
    with in_threads():
        loss, grads = net.loss_and_grads(x, y)
    with dispatch.reference():
        expected_loss, expected_grads = net.loss_and_grads(x, y)
    assert float(loss) == float(expected_loss)
    for name in grads:
        np.testing.assert_array_equal(grads[name], expected_grads[name])


def test_adam_through_the_dispatch_equals_the_reference_bit_for_bit():
    net = small_net()
    x, y = batch(net)
    _, grads = net.loss_and_grads(x, y)
    runs = []
    for reference in (False, True):
        params = {name: p.copy() for name, p in net.params.items()}
        optimizer = Adam(params, lr=1e-2)
        with dispatch.reference(reference), mock.patch.object(tiles, "ADAM_CHUNK", 5), \
                mock.patch.object(parallel, "MIN_ELEMENTS", 1):
            for _ in range(3):
                optimizer.step(grads)
        runs.append(params)
    for name in grads:
        np.testing.assert_array_equal(runs[0][name], runs[1][name])


# The network of tests/test_spectral.py's whole-model test: at batch 32 its primary
# capsules go through the DFT, so every CPU fast path of a step runs.
SPECTRAL_NET = dict(in_shape=(1, 28, 28), n_classes=3, conv_channels=64, kernel_size=9,
                    primary_types=8, primary_dim=8, class_dim=4, dtype="float64", seed=2)

REFERENCE_RUN = """
import json, sys, threading
import numpy as np
from minicaps import CapsNet
from minicaps.fast import dispatch
net = CapsNet(**json.loads(sys.argv[1]))
rng = np.random.default_rng(3)
x, y = rng.random((32, 1, 28, 28)), rng.integers(0, 3, 32)
files = set()
def note(frame, event, arg):
    if event == "call":
        files.add(frame.f_code.co_filename)
sys.setprofile(note)
threading.setprofile(note)
loss, grads = net.loss_and_grads(x, y)
sys.setprofile(None)
np.savez(sys.argv[2], loss=loss, **grads)
print(json.dumps({"reference": dispatch.using_reference(), "files": sorted(files)}))
"""


def test_a_capsule_network_with_every_fast_path_agrees_with_minicaps_reference(tmp_path):
    """Loss and gradients with the fast paths on (each seen to run) against a process
    started with MINICAPS_REFERENCE=1, which enters no module of minicaps/fast but the
    dispatch."""
    env = {**os.environ, "MINICAPS_REFERENCE": "1"}
    done = subprocess.run([sys.executable, "-c", REFERENCE_RUN, json.dumps(SPECTRAL_NET),
                           str(tmp_path / "reference.npz")], cwd=REPO, env=env,
                          capture_output=True, text=True, check=True)
    seen = json.loads(done.stdout)
    assert seen["reference"]
    fast_dir = str(REPO / "minicaps" / "fast")
    entered = {Path(f).name for f in seen["files"] if f.startswith(fast_dir)}
    assert entered == {"dispatch.py"}, entered
    expected = np.load(tmp_path / "reference.npz")

    net = CapsNet(**SPECTRAL_NET)
    rng = np.random.default_rng(3)
    x, y = rng.random((32, 1, 28, 28)), rng.integers(0, 3, 32)
    calls = {}

    def counted(module, name):
        real = getattr(module, name)
        return mock.patch.object(module, name, lambda *a, **k: calls.setdefault(name, [])
                                 .append(1) or real(*a, **k))

    with dispatch.reference(False), in_threads(ROUTING_TILE_BYTES=1), \
            counted(spectral, "backward"), counted(tiles, "routing_backward"), \
            counted(tiles, "columns"), counted(predictions, "predictions_forward"):
        loss, grads = net.loss_and_grads(x, y)
    assert set(calls) == {"backward", "routing_backward", "columns", "predictions_forward"}
    assert float(loss) == pytest.approx(float(expected["loss"]), rel=1e-12)
    for name in grads:
        np.testing.assert_allclose(grads[name], expected[name], rtol=1e-9, atol=1e-12)


def test_the_switch_is_restored_after_a_block_even_on_error():
    before = dispatch.using_reference()
    with pytest.raises(RuntimeError):
        with dispatch.reference(not before):
            assert dispatch.using_reference() is (not before)
            raise RuntimeError
    assert dispatch.using_reference() is before
    assert dispatch.use_reference(before) is before  # returns the setting it replaced


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_transposed_copies_equal_numpys(data):
    """minicaps.fast.parallel.transposed, tiled and threaded, against NumPy's own transposing
    copy, for tiles of one row to all of them and arrays split over threads or not."""
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
    rng = np.random.default_rng(iters)
    u_hat, dv = rng.standard_normal((7, 3, 5, 4)), rng.standard_normal((7, 3, 4))
    v, cache = routing.routing_forward(u_hat, iters=iters, grad=grad)
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


@pytest.mark.parametrize("grad,iters", [("full", 1), ("full", 3), ("last", 3)])
@pytest.mark.parametrize("windows", [False, True])  # class capsules; overlapping fields
@pytest.mark.parametrize("tile_bytes", [1, 20000])  # an example a tile; a few, unevenly
def test_em_routing_in_tiles_of_examples_equals_the_whole_batch(grad, iters, windows,
                                                                tile_bytes):
    """EM routing forward (its outputs and every cached array, in the reference's layout)
    and backward, tile by tile in threads, against the batch routed at once: each example's
    arithmetic is its own, bit for bit; the betas' gradients sum over tiles (rounding)."""
    from minicaps.ops import em_routing
    from minicaps.ops.matrix_capsules import Windows
    rng = np.random.default_rng(iters)
    children = Windows(grid=(4, 4), types=2, kernel=3, stride=1) if windows else None
    B, P, J, I = 7, (4 if windows else 1), 3, (18 if windows else 10)
    votes = rng.standard_normal((B, P, J, I, 16))
    acts = rng.random((B, P, I))
    beta_u, beta_a = rng.standard_normal(J), rng.standard_normal(J)
    douts = (rng.standard_normal((B, P, J, 16)), rng.standard_normal((B, P, J)))
    route = dict(inverse_temperatures=(0.01,) * iters, children=children, grad=grad)
    outputs, cache = em_routing.em_routing_forward(votes, acts, beta_u, beta_a, **route)
    grads = em_routing.em_routing_backward(douts, cache)
    with mock.patch.object(tiles, "EM_TILE_BYTES", tile_bytes), \
            mock.patch.object(parallel, "MIN_ELEMENTS", 1):
        tiled_outputs, tiled_cache = tiles.em_routing_forward(votes, acts, beta_u, beta_a,
                                                              **route)
        tiled_grads = tiles.em_routing_backward(douts, tiled_cache)
    for tiled, whole in zip(tiled_outputs, outputs, strict=True):
        np.testing.assert_array_equal(tiled, whole)
    steps = lambda c: [*c[0], *(s for s in c[1] if s is not None)]  # noqa: E731
    assert len(steps(tiled_cache)) == len(steps(cache))
    for tiled_step, step in zip(steps(tiled_cache), steps(cache), strict=True):
        for tiled, whole in zip(tiled_step, step, strict=True):
            if isinstance(whole, np.ndarray):
                np.testing.assert_array_equal(tiled, whole)
    for tiled, whole in zip(tiled_grads[:2], grads[:2], strict=True):  # votes, activations
        np.testing.assert_array_equal(tiled, whole)
    for tiled, whole in zip(tiled_grads[2:], grads[2:], strict=True):  # the betas
        np.testing.assert_allclose(tiled, whole, rtol=1e-12, atol=1e-12)
