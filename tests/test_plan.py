"""The planner predicts without allocating: check it against what a step really allocates."""
import numpy as np
import pytest

from minicaps import Adam, CapsNet, CapsNetConfig, MinicapsError
from minicaps.tools.bench import peak_step_bytes
from minicaps.nets.cnn import PoolingCNN
from minicaps.nets.emcapsnet import EMCapsNet
from minicaps.tools.plan import (Convolution, check_fits, flops_per_image, largest_batch,
                           main_convolution, plan)


@pytest.mark.parametrize("kwargs, B", [
    (dict(), 4),  # the paper's network: at batch 4 and 32 the primary capsules' backward
    (dict(), 32),  # peaks, at 128 routing's (in tiles of examples)
    (dict(), 128),
    (dict(in_shape=(1, 28, 28), conv_channels=64, primary_types=8), 16),
    (dict(in_shape=(3, 40, 52), n_classes=5, conv_channels=32, primary_types=4,
          conv_stride=2, routing_iters=5, reconstruction=False), 16),
])
def test_predicted_memory_is_within_15_percent_of_the_measured_peak(kwargs, B):
    assert_memory_prediction(CapsNet(**kwargs), B)


@pytest.mark.parametrize("kwargs", [
    dict(in_shape=(1, 28, 28), channels=(32, 64, 64)),
    dict(in_shape=(3, 48, 96), n_classes=16, channels=(16, 32, 32), hidden=(64,)),
])
def test_the_cnn_baseline_is_planned_like_the_capsnet(kwargs):
    assert_memory_prediction(PoolingCNN(**kwargs), 16)


@pytest.mark.parametrize("kwargs", [
    dict(),  # the paper's small network, two EM iterations backward through both
    dict(routing_iters=1),  # no E-step to go back through
    dict(routing_iters=3, routing_grad="last"),
    dict(in_shape=(3, 40, 52), n_classes=5, caps_types=(8,), caps_strides=(1,),
         caps_kernel=5),
])
def test_the_em_network_is_planned_like_the_capsnet(kwargs):
    assert_memory_prediction(EMCapsNet(**kwargs), 8)


def assert_memory_prediction(net, B):
    """The planner's step_bytes against the peak of one training step (forward, backward,
    Adam's update) above what was allocated before it (weights, Adam's moments, the batch).
    The band is tight enough to catch a regression such as backward keeping routing's
    cache to the end (measured once on the paper's net at batch 32: 1.05 -> 0.67)."""
    rng = np.random.default_rng(0)
    x = rng.random((B, *net.config.in_shape)).astype(np.float32)
    y = rng.integers(0, net.config.n_classes, B)
    optimizer = Adam(net.params, lr=1e-3)
    measured = peak_step_bytes(np, lambda: optimizer.step(net.loss_and_grads(x, y)[1]))
    assert 0.85 < plan(net.config, B).step_bytes / measured < 1.15


def test_flops_of_the_papers_network():
    forward, train = flops_per_image(CapsNetConfig())
    # The primary capsules' convolution dominates: 256 x 256 x 81 x 36 multiply-adds.
    assert forward > 2 * 256 * 256 * 81 * 36
    assert forward == pytest.approx(0.4e9, rel=0.1)
    assert train == pytest.approx(3 * forward, rel=0.1)


def test_a_step_too_big_for_memory_is_refused_with_a_batch_that_fits():
    config = CapsNetConfig(in_shape=(3, 405, 720), n_classes=16)
    with pytest.raises(MinicapsError, match="GiB") as error:
        check_fits(config, 64)
    assert "\n" not in str(error.value)
    small = CapsNetConfig()
    check_fits(small, 32)  # the paper's network at batch 32 fits anywhere
    fits = largest_batch(small, 8 * 2 ** 30)
    assert plan(small, fits).total_bytes <= 8 * 2 ** 30 < plan(small, fits + 1).total_bytes


def test_the_main_convolution_is_the_primary_capsules_or_the_cnns_largest_layer():
    primary = main_convolution(CapsNetConfig())
    assert primary == Convolution(256, 256, 9, 20, 20, 2) and primary.out_size == (6, 6)
    # 1->32 channels at 28x28, 32->64 at 14x14, 64->64 at 7x7: the second does the most,
    # on its input padded by 2 for the 5x5 kernel.
    cnn = PoolingCNN(in_shape=(1, 28, 28), channels=(32, 64, 64)).config
    assert main_convolution(cnn) == Convolution(64, 32, 5, 18, 18, 1)


@pytest.mark.parametrize("in_shape, B", [((1, 28, 28), 2), ((3, 405, 720), 64),
                                         ((1, 28, 28), 1024)])
def test_calibrating_the_step_time_measures_a_bounded_part_of_the_network(in_shape, B):
    """step_rates times one channel group of the main convolution, cropped to at most
    CALIBRATION_WIDTH output positions: for the logo challenge's full frames (a 195 x 352
    capsule grid) that is tens of MB, where one group of the real columns is 0.7 GB. At
    batch 1024 the paper's network takes the spectral path, whose products are timed on
    a batch halved until one chunk's input spectrum is at most 16 MB."""
    from minicaps.tools.bench import step_rates
    rates = []
    peak = peak_step_bytes(np, lambda: rates.extend(
        step_rates(CapsNetConfig(in_shape=in_shape, n_classes=59), B)))
    assert len(rates) == 3 and all(0 < rate < np.inf for rate in rates)
    assert peak < 200 * 2 ** 20
