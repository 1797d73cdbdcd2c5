"""What a network must be beyond its gradients: the paper's by default, its gradients shaped
as its params, its predictions per example, its input standardised as by hand."""
import numpy as np
import pytest

from minicaps import CapsNet

from helpers import tiny_net


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
