"""The planner predicts without allocating: check it against what a step really allocates."""
import tracemalloc

import numpy as np
import pytest

from minicaps import CapsNet, CapsNetConfig, MinicapsError
from minicaps.cnn import PoolingCNN
from minicaps.plan import check_fits, flops_per_image, largest_batch, plan


@pytest.mark.parametrize("kwargs", [
    dict(),  # the paper's network
    dict(in_shape=(1, 28, 28), conv_channels=64, primary_types=8),
    dict(in_shape=(3, 40, 52), n_classes=5, conv_channels=32, primary_types=4,
         conv_stride=2, routing_iters=5, reconstruction=False),
])
def test_predicted_memory_is_within_a_quarter_of_the_measured_peak(kwargs):
    assert_memory_prediction(CapsNet(**kwargs))


@pytest.mark.parametrize("kwargs", [
    dict(in_shape=(1, 28, 28), channels=(32, 64, 64)),
    dict(in_shape=(3, 48, 96), n_classes=16, channels=(16, 32, 32), hidden=(64,)),
])
def test_the_cnn_baseline_is_planned_like_the_capsnet(kwargs):
    assert_memory_prediction(PoolingCNN(**kwargs))


def assert_memory_prediction(net):
    B = 16
    rng = np.random.default_rng(0)
    x = rng.random((B, *net.config.in_shape)).astype(np.float32)
    y = rng.integers(0, net.config.n_classes, B)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    net.loss_and_grads(x, y)
    measured = tracemalloc.get_traced_memory()[1] - before  # activations and gradients
    tracemalloc.stop()
    predicted = plan(net.config, B).step_bytes
    print(f"predicted / measured: {predicted / measured:.3f}")
    assert 0.75 < predicted / measured < 1.25


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
