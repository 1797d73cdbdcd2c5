"""The fused CuPy kernels (minicaps/kernels.py) give what the portable code gives on the GPU,
bit for bit: the same operations in the same order. Skipped where CuPy finds no CUDA device,
except the switch itself."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minicaps import Adam, kernels
from minicaps.backend import gpu_available, to_device, to_host
from minicaps.conv import _add_columns, _columns, output_size

from conftest import batch, small_net

needs_gpu = pytest.mark.skipif(not gpu_available(), reason="needs CuPy and a CUDA device")
DTYPES = [np.float32, np.float64]


def test_the_kernels_never_touch_numpy_arrays_and_portable_turns_them_off():
    assert not kernels.fused(np.zeros(3))
    before = kernels._enabled
    with kernels.portable():
        assert not kernels._enabled
    assert kernels._enabled == before


def assert_identical(fused, portable):
    fused, portable = to_host(fused), to_host(portable)
    assert fused.dtype == portable.dtype and fused.shape == portable.shape
    np.testing.assert_array_equal(fused, portable)


@st.composite
def column_problems(draw):
    """(xt (C, H, W, B) on the GPU, kernel rows, kw, stride) with at least one output."""
    C, B = draw(st.integers(1, 4)), draw(st.integers(1, 5))
    kh, kw, stride = draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 3))
    H, W = draw(st.integers(kh, kh + 7)), draw(st.integers(kw, kw + 7))
    start = draw(st.integers(0, kh - 1))
    rows = range(start, draw(st.integers(start + 1, kh)))
    dtype = draw(st.sampled_from(DTYPES))
    xt = np.random.default_rng(draw(st.integers(0, 2 ** 16))).standard_normal((C, H, W, B))
    return to_device(xt.astype(dtype), "gpu"), rows, kh, kw, stride


@needs_gpu
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=column_problems())
def test_fused_columns_and_their_adjoint_equal_the_slice_copies(problem):
    xt, rows, kh, kw, stride = problem
    _, H, W, _ = xt.shape
    oh, ow = output_size(H, kh, stride, 0), output_size(W, kw, stride, 0)
    cols = _columns(xt, rows, kw, oh, ow, stride)
    with kernels.portable():
        expected = _columns(xt, rows, kw, oh, ow, stride)
    assert_identical(cols, expected)

    import cupy
    dcols = cupy.asarray(np.random.default_rng(1).standard_normal(cols.shape), xt.dtype)
    start = cupy.asarray(np.random.default_rng(2).standard_normal(xt.shape), xt.dtype)
    dxt, expected_dxt = start.copy(), start.copy()  # added into what is there already
    _add_columns(dxt, dcols, rows, stride)
    with kernels.portable():
        _add_columns(expected_dxt, dcols, rows, stride)
    assert_identical(dxt, expected_dxt)


@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_adam_steps_equal_the_portable_update(dtype):
    rng = np.random.default_rng(0)
    shapes = {"a": (7, 5), "b": (3,), "c": (2, 3, 4, 5)}
    start = {n: rng.standard_normal(s).astype(dtype) for n, s in shapes.items()}
    runs = []
    for use_portable in (False, True):
        params = {n: to_device(p, "gpu") for n, p in start.items()}
        optimizer = Adam(params, lr=3e-3)
        grads_rng = np.random.default_rng(1)
        for _ in range(4):  # the bias correction changes from step to step
            grads = {n: to_device(grads_rng.standard_normal(s).astype(dtype), "gpu")
                     for n, s in shapes.items()}
            if use_portable:
                with kernels.portable():
                    optimizer.step(grads)
            else:
                optimizer.step(grads)
        runs.append((params, optimizer.m, optimizer.v))
    for fused, portable in zip(*runs):
        for name in shapes:
            assert_identical(fused[name], portable[name])


@needs_gpu
@pytest.mark.parametrize("kwargs", [{}, {"in_shape": (3, 11, 13), "routing_grad": "last"}])
def test_a_training_step_with_fused_kernels_equals_the_portable_one(kwargs):
    net = small_net(**kwargs).to("gpu")
    x, y = batch(net, B=3)
    loss, grads = net.loss_and_grads(x, y)
    with kernels.portable():
        expected_loss, expected_grads = net.loss_and_grads(x, y)
    assert_identical(loss, expected_loss)
    for name in grads:
        assert_identical(grads[name], expected_grads[name])
