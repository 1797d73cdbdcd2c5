"""Local contrast channels (minicaps/ops/contrast.py, --contrast-window): the filter against its
definition, and networks that take it exactly as if it had been computed by hand."""
import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minicaps import CapsNetConfig
from minicaps.training import checkpoint
from minicaps.nets.cnn import CNNConfig
from minicaps.ops.contrast import CONTRAST_FLOOR, box_mean, local_contrast
from minicaps.errors import MinicapsError
from minicaps.nets.kinds import build, config_from_dict
from minicaps.tools.plan import plan

from test_cli import TINY, assert_user_error, invoke

windows = st.sampled_from([3, 5, 7, 9])


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 3), st.integers(1, 9), st.integers(1, 11), windows, st.integers(0, 99))
def test_box_mean_equals_a_naive_window_mean(C, H, W, window, seed):
    """Each pixel's mean over the window centred on it, the edge pixels repeated outwards."""
    x = np.random.default_rng(seed).random((2, C, H, W))
    r = window // 2
    padded = np.pad(x, ((0, 0), (0, 0), (r, r), (r, r)), mode="edge")
    naive = np.empty_like(x)
    for i in range(H):
        for j in range(W):
            naive[:, :, i, j] = padded[:, :, i:i + window, j:j + window].mean(axis=(2, 3))
    np.testing.assert_allclose(box_mean(x, window), naive, rtol=1e-12, atol=1e-12)


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 8), st.integers(1, 8), windows, st.integers(0, 99))
def test_local_contrast_equals_its_definition_written_naively(H, W, window, seed):
    """Each pixel minus its window's mean, over the root mean square of that difference
    in the window (each neighbour's own difference), at least the floor."""
    x = np.random.default_rng(seed).random((1, 2, H, W)) ** 3  # some flat, some busy
    r = window // 2

    def window_mean(a, i, j):
        padded = np.pad(a, ((0, 0), (0, 0), (r, r), (r, r)), mode="edge")
        return padded[:, :, i:i + window, j:j + window].mean(axis=(2, 3))
    centred = np.empty_like(x)
    for i in range(H):
        for j in range(W):
            centred[:, :, i, j] = x[:, :, i, j] - window_mean(x, i, j)
    naive = np.empty_like(x)
    for i in range(H):
        for j in range(W):
            spread = np.sqrt(window_mean(centred ** 2, i, j))
            naive[:, :, i, j] = centred[:, :, i, j] / np.maximum(spread, CONTRAST_FLOOR)
    np.testing.assert_allclose(local_contrast(x, window), naive, rtol=1e-9, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(windows, st.floats(0.02, 5), st.floats(-1, 1), st.integers(0, 99))
def test_local_contrast_ignores_brightness_and_contrast(window, gain, offset, seed):
    """Without a floor, gain * x + offset has the contrast of x: a faint logo on a flat sky
    comes out as strong as a bold one."""
    x = np.random.default_rng(seed).random((2, 3, 12, 15))
    np.testing.assert_allclose(local_contrast(gain * x + offset, window, floor=0),
                               local_contrast(x, window, floor=0), rtol=1e-7, atol=1e-7)


def test_the_floor_keeps_noise_on_a_flat_background_faint():
    """A grey level of noise is not blown up to full contrast; a bold pattern is unit-sized."""
    rng = np.random.default_rng(0)
    flat = 0.6 + rng.choice([-1, 1], size=(1, 1, 20, 20)) / 255
    bold = 0.6 + 0.3 * rng.choice([-1, 1], size=(1, 1, 20, 20))
    assert np.abs(local_contrast(flat, 5)).max() <= 2 / 255 / CONTRAST_FLOOR
    assert 0.5 < np.abs(local_contrast(bold, 5)).mean() < 1.5
    np.testing.assert_allclose(local_contrast(np.full((1, 1, 6, 6), 0.3), 3), 0, atol=1e-12)


@pytest.mark.parametrize("config", [
    CapsNetConfig(in_shape=(3, 16, 20), n_classes=4, conv_channels=8, kernel_size=5,
                  primary_types=4, primary_dim=4, class_dim=6, reconstruction=False,
                  contrast_window=5, dtype="float64"),
    CNNConfig(in_shape=(3, 16, 20), n_classes=4, channels=(4, 6), hidden=(8,),
              contrast_window=3, dtype="float64")], ids=["capsnet", "cnn"])
def test_networks_see_the_image_then_its_contrast(config):
    """Predictions and gradients of a contrast-window net equal those of a plain net fed
    [(x - mean) / std, local_contrast(x)] by hand."""
    C, H, W = config.in_shape
    config = type(config)(**{**config.__dict__, "input_mean": (0.5, 0.4, 0.3),
                             "input_std": (0.2, 0.25, 0.5)})
    net = build(config)
    plain = build(type(config)(**{**config.__dict__, "in_shape": (2 * C, H, W),
                                  "contrast_window": 0, "input_mean": None,
                                  "input_std": None}), net.params)
    assert net.params["conv0.w" if "conv0.w" in net.params else "conv1.w"].shape[0] == 2 * C
    x = np.random.default_rng(0).random((3, C, H, W))
    mean, std = (np.array(s).reshape(1, 3, 1, 1) for s in (config.input_mean, config.input_std))
    by_hand = np.concatenate([(x - mean) / std, local_contrast(x, config.contrast_window)], 1)
    np.testing.assert_allclose(net.predict(x), plain.predict(by_hand), rtol=1e-12)
    y = np.array([0, 3, 1])
    loss, grads = net.loss_and_grads(x, y)
    plain_loss, plain_grads = plain.loss_and_grads(by_hand, y)
    assert float(loss) == pytest.approx(float(plain_loss), rel=1e-12)
    for name in grads:
        np.testing.assert_allclose(grads[name], plain_grads[name], rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("window", [1, 2, 4, -3, 3.0, None, True])
def test_a_window_that_is_not_odd_and_at_least_3_is_refused(window):
    with pytest.raises(MinicapsError, match="contrast_window"):
        CapsNetConfig(contrast_window=window)
    with pytest.raises(MinicapsError, match="contrast_window"):
        CNNConfig(contrast_window=window)


def test_plan_counts_the_first_convolution_on_twice_the_channels():
    caps = CapsNetConfig(in_shape=(3, 48, 96), n_classes=10, reconstruction=False)
    cnn = CNNConfig(in_shape=(3, 48, 96), n_classes=10, channels=(8, 16), hidden=(32,))
    h1, w1 = caps.conv1_size
    for plain, (K, k, h, w) in ((caps, (caps.conv_channels, caps.kernel_size, h1, w1)),
                                (cnn, (8, cnn.kernel_size, 48, 96))):
        contrast = type(plain)(**{**plain.__dict__, "contrast_window": 7})
        extra_weights = K * 3 * k * k
        assert plan(contrast, 8).flops_forward - plan(plain, 8).flops_forward == \
            2 * extra_weights * h * w
        assert plan(contrast, 8).n_params - plan(plain, 8).n_params == extra_weights


def test_a_network_saved_before_the_contrast_window_loads_without_it():
    fields = dataclasses.asdict(CapsNetConfig())
    del fields["contrast_window"]
    assert config_from_dict("capsnet", fields).contrast_window == 0


def test_train_with_a_contrast_window_keeps_it_in_the_checkpoint(tmp_path):
    out = tmp_path / "run"
    result = invoke("train", *TINY, "--limit", 100, "--contrast-window", 3, "--out", out)
    assert result.exit_code == 0, result.output
    assert checkpoint.load(out / "last.npz").model_config.contrast_window == 3
    result = invoke("evaluate", out / "last.npz")
    assert result.exit_code == 0 and "accuracy" in result.output, result.output


def test_an_even_window_on_the_command_line_is_one_clear_line(tmp_path):
    assert_user_error(invoke("train", *TINY, "--limit", 50, "--contrast-window", 4,
                             "--out", tmp_path), "contrast_window")
    assert not (tmp_path / "last.npz").exists()
