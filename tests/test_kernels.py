"""The fused CuPy kernels (minicaps/fast/kernels.py) give what the reference ops give on the
GPU: bit for bit where they do the same operations in the same order (im2col, col2im, Adam),
to rounding where they sum in another order (squash, softmax). Each runs through
minicaps.fast.dispatch, against the same call under dispatch.reference(). Skipped where CuPy
finds no CUDA device, except the switch itself."""
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minicaps import Adam
from minicaps.backend import gpu_available, to_device, to_host
from minicaps.fast import dispatch, kernels
from minicaps.fast.dispatch import (add_columns, columns, softmax, softmax_backward,
                                    squash_backward, squash_forward)
from minicaps.ops.conv import output_size

from helpers import batch, small_net

needs_gpu = pytest.mark.skipif(not gpu_available(), reason="needs CuPy and a CUDA device")
DTYPES = [np.float32, np.float64]
ROUNDING = {np.float32: 1e-6, np.float64: 1e-14}  # relative, for sums taken in another order


def test_the_kernels_never_touch_numpy_arrays_and_the_reference_switch_turns_them_off():
    with mock.patch.object(kernels, "squash_forward", side_effect=AssertionError("fused")):
        v, _ = squash_forward(np.ones((2, 3)))
    assert isinstance(v, np.ndarray)
    before = dispatch.using_reference()
    with dispatch.reference():
        assert dispatch.using_reference()
    assert dispatch.using_reference() == before


def assert_identical(fused, reference):
    fused, reference = to_host(fused), to_host(reference)
    assert fused.dtype == reference.dtype and fused.shape == reference.shape
    np.testing.assert_array_equal(fused, reference)


@st.composite
def column_problems(draw, device="gpu"):
    """(xt (C, H, W, B), kh, kw, stride) with at least one output, xt on `device`."""
    C, B = draw(st.integers(1, 4)), draw(st.integers(1, 5))
    kh, kw, stride = draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 3))
    H, W = draw(st.integers(kh, kh + 7)), draw(st.integers(kw, kw + 7))
    dtype = draw(st.sampled_from(DTYPES))
    xt = np.random.default_rng(draw(st.integers(0, 2 ** 16))).standard_normal((C, H, W, B))
    return to_device(xt.astype(dtype), device), kh, kw, stride


@needs_gpu
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=column_problems(), index=st.sampled_from(["int32", "int64"]), data=st.data())
def test_fused_columns_and_their_adjoint_equal_the_reference(problem, index, data):
    """On a group of channels, as minicaps.ops.conv passes them: views of xt and dxt that
    start past their arrays' first element; the other channels of dxt stay as they were."""
    import cupy
    xt, kh, kw, stride = problem
    C, H, W, _ = xt.shape
    first = data.draw(st.integers(0, C - 1), label="first channel")
    group = slice(first, data.draw(st.integers(first + 1, C), label="channels end"))
    oh, ow = output_size(H, kh, stride, 0), output_size(W, kw, stride, 0)
    # Both index widths: 64-bit arithmetic otherwise runs only for arrays past 2**31.
    with mock.patch.object(kernels, "_index_type", lambda *arrays: index):
        cols = columns(xt[group], kh, kw, oh, ow, stride)
        dcols = cupy.asarray(np.random.default_rng(1).standard_normal(cols.shape), xt.dtype)
        start = cupy.asarray(np.random.default_rng(2).standard_normal(xt.shape), xt.dtype)
        dxt, expected_dxt = start.copy(), start.copy()  # added into what is there already
        add_columns(dxt[group], dcols, stride)
    with dispatch.reference():
        expected = columns(xt[group], kh, kw, oh, ow, stride)
        add_columns(expected_dxt[group], dcols, stride)
    assert_identical(cols, expected)
    assert_identical(dxt, expected_dxt)


@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_adam_steps_equal_the_reference_update(dtype):
    rng = np.random.default_rng(0)
    shapes = {"a": (7, 5), "b": (3,), "c": (2, 3, 4, 5)}
    start = {n: rng.standard_normal(s).astype(dtype) for n, s in shapes.items()}
    runs = []
    for use_reference in (False, True):
        params = {n: to_device(p, "gpu") for n, p in start.items()}
        optimizer = Adam(params, lr=3e-3)
        grads_rng = np.random.default_rng(1)
        for _ in range(4):  # the bias correction changes from step to step
            grads = {n: to_device(grads_rng.standard_normal(s).astype(dtype), "gpu")
                     for n, s in shapes.items()}
            if use_reference:
                with dispatch.reference():
                    optimizer.step(grads)
            else:
                optimizer.step(grads)
        runs.append((params, optimizer.m, optimizer.v))
    for fused, reference in zip(*runs):
        for name in shapes:
            assert_identical(fused[name], reference[name])


def assert_rounding_apart(fused, reference):
    fused, reference = to_host(fused), to_host(reference)
    assert fused.dtype == reference.dtype and fused.shape == reference.shape
    tol = ROUNDING[fused.dtype.type]
    np.testing.assert_allclose(fused, reference, rtol=10 * tol,
                               atol=10 * tol * np.abs(reference).max())


def gpu_normal(rng, shape, dtype):
    return to_device(rng.standard_normal(shape).astype(dtype), "gpu")


@needs_gpu
@settings(max_examples=20, deadline=None)
@given(shape=st.lists(st.integers(1, 6), min_size=1, max_size=3), D=st.integers(1, 17),
       dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2 ** 16))
def test_fused_squash_forward_and_backward_match_the_reference(shape, D, dtype, seed):
    rng = np.random.default_rng(seed)
    s, dv = gpu_normal(rng, (*shape, D), dtype), gpu_normal(rng, (*shape, D), dtype)
    s[..., :1, :] = 0  # zero vectors: no epsilon, and a zero gradient there
    v, cache = squash_forward(s)
    ds = squash_backward(dv, cache)
    with dispatch.reference():
        expected_v, expected_cache = squash_forward(s)
        expected_ds = squash_backward(dv, expected_cache)
    for fused, reference in [(v, expected_v), (ds, expected_ds), *zip(cache, expected_cache)]:
        assert_rounding_apart(fused, reference)


@needs_gpu
@settings(max_examples=20, deadline=None)
@given(shape=st.lists(st.integers(1, 7), min_size=2, max_size=4),
       dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2 ** 16))
def test_fused_softmax_over_axis_1_and_its_backward_match_the_reference(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    x, dc = gpu_normal(rng, shape, dtype) * 5, gpu_normal(rng, shape, dtype)
    c = softmax(x, axis=1)
    dx = softmax_backward(c, dc, axis=1)
    with dispatch.reference():
        expected_c = softmax(x, axis=1)
        expected_dx = softmax_backward(expected_c, dc, axis=1)
    assert_rounding_apart(c, expected_c)
    assert_rounding_apart(dx, expected_dx)


@needs_gpu
@pytest.mark.parametrize("kwargs", [{}, {"in_shape": (3, 11, 13), "routing_grad": "last"}])
def test_a_training_step_with_fused_kernels_matches_the_reference_one(kwargs, monkeypatch):
    from minicaps.ops import conv
    monkeypatch.setattr(conv, "COLUMN_BYTES", 1)  # a group per channel, up to MAX_GROUPS
    net = small_net(**kwargs)
    x, y = batch(net, B=3)
    net.to("gpu")
    loss, grads = net.loss_and_grads(x, y)
    with dispatch.reference():
        expected_loss, expected_grads = net.loss_and_grads(x, y)
    assert float(loss) == pytest.approx(float(expected_loss), rel=1e-12)
    for name in grads:
        np.testing.assert_allclose(to_host(grads[name]), to_host(expected_grads[name]),
                                   rtol=1e-9, atol=1e-13)
