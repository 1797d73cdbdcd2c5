"""NumPy/CuPy parity: every op forward and backward, and the whole model, on the GPU give
what they give on the CPU. Skipped where CuPy finds no CUDA device."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minicaps.backend import gpu_available, to_device, to_host

from helpers import batch, small_net
from test_gradients import OPS

pytestmark = pytest.mark.skipif(not gpu_available(), reason="needs CuPy and a CUDA device")


def to_gpu(a):
    return to_device(a, "gpu") if isinstance(a, np.ndarray) else a


def assert_close(cpu, gpu):
    cpu = cpu if isinstance(cpu, tuple) else (cpu,)
    gpu = gpu if isinstance(gpu, tuple) else (gpu,)
    for c, g in zip(cpu, gpu):
        if c is not None:
            np.testing.assert_allclose(to_host(g), c, rtol=1e-10, atol=1e-12)


def assert_same_step_on_the_gpu(net, x, y):
    """A training step's loss and gradients on the CPU, then with `net` moved to the GPU
    (fed the same host batch: the net moves it); `net` is left on the GPU."""
    loss, grads = net.loss_and_grads(x, y)
    net.to("gpu")
    loss_gpu, grads_gpu = net.loss_and_grads(x, y)
    assert float(loss_gpu) == pytest.approx(float(loss), rel=1e-10)
    for name in grads:
        np.testing.assert_allclose(to_host(grads_gpu[name]), grads[name], rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("name", sorted(OPS))
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_op_runs_the_same_on_the_gpu(name, data):
    draw, forward, backward, _ = OPS[name]
    inputs, kwargs = draw(data)
    out, cache = forward(*inputs, **kwargs)
    out_gpu, cache_gpu = forward(*[to_gpu(a) for a in inputs], **kwargs)
    assert_close(out, out_gpu)
    dout = np.random.default_rng(0).standard_normal(np.shape(out))
    assert_close(backward(dout, cache), backward(to_gpu(dout), cache_gpu))


@pytest.mark.parametrize("kwargs", [{}, {"reconstruction": False}, {"routing_grad": "last"},
                                    {"in_shape": (3, 11, 13)}])
def test_model_runs_the_same_on_the_gpu(kwargs):
    net = small_net(**kwargs)
    x, y = batch(net, B=3)
    assert_same_step_on_the_gpu(net, x, y)
    np.testing.assert_allclose(to_host(net.predict(x)), net.to("cpu").predict(x), rtol=1e-10)


def test_local_contrast_is_the_same_on_the_gpu():
    from minicaps.ops.contrast import local_contrast
    x = np.random.default_rng(0).random((2, 3, 17, 30)).astype(np.float32)
    np.testing.assert_allclose(to_host(local_contrast(to_gpu(x), 7)), local_contrast(x, 7),
                               rtol=1e-5, atol=1e-6)


def test_a_net_with_contrast_channels_runs_the_same_on_the_gpu():
    from minicaps import CapsNet, CapsNetConfig
    plain = small_net(in_shape=(3, 11, 13))
    config = CapsNetConfig(**{**plain.config.__dict__, "contrast_window": 3})
    params = {**plain.params, "conv1.w": np.concatenate([plain.params["conv1.w"]] * 2, 0)}
    net = CapsNet.from_config(config, params)
    assert_same_step_on_the_gpu(net, *batch(plain, B=3))


@pytest.mark.parametrize("fields", [{}, {"routing_grad": "last"},
                                    {"in_shape": (1, 12, 12), "caps_types": (3, 2),
                                     "caps_strides": (1, 2)}])
def test_em_network_runs_the_same_on_the_gpu(fields):
    """EMCapsNet (matrix capsules, EM routing): loss, gradients and activations."""
    from test_em_network import small_em_net
    net = small_em_net(**fields)
    x, y = batch(net, B=3)
    assert_same_step_on_the_gpu(net, x, y)
    np.testing.assert_allclose(to_host(net.predict(x)), net.to("cpu").predict(x), rtol=1e-10)
