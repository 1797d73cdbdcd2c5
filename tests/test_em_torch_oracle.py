"""minicaps' hand-written EM-routing gradients against PyTorch autograd of the same network
(benchmarks/torch_emcapsnet.py, written from the paper with PyTorch's own tools) on the
same weights. Dev-only: skipped where PyTorch is not installed."""
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))

from helpers import batch  # noqa: E402
from test_em_network import small_em_net  # noqa: E402
from torch_emcapsnet import TorchEMCapsNet  # noqa: E402


@pytest.mark.parametrize("fields", [
    {}, {"routing_grad": "last"}, {"coordinate_addition": False},
    {"share_class_transforms": False},
    {"in_shape": (1, 12, 12), "caps_types": (3, 2), "caps_strides": (1, 2)},
    {"in_shape": (3, 13, 11), "routing_iters": 4, "lambda_first": 0.02, "lambda_last": 0.1},
    # Two iterations: with three, this net routes some parent onto a single child, its
    # variance at the floor, and the last assignments (constants of grad="last") carry the
    # two libraries' forward rounding, amplified by 1 / floor, to ~1e-9 of the gradients.
    {"caps_kernel": 2, "caps_strides": (1,), "routing_grad": "last", "routing_iters": 2},
])
@pytest.mark.parametrize("progress", [0.0, 1.0])
def test_loss_and_gradients_match_pytorch_autograd(fields, progress):
    net = small_em_net(**fields)
    net.set_training_progress(progress)
    x, y = batch(net, B=3)
    loss, grads = net.loss_and_grads(x, y)
    oracle = TorchEMCapsNet(net.config, net.params, dtype=torch.float64)
    torch_loss, torch_grads = oracle.loss_and_grads(x, y, net.margin)
    assert float(loss) == pytest.approx(torch_loss, rel=1e-12)
    for name, g in grads.items():
        np.testing.assert_allclose(g, torch_grads[name], rtol=1e-9, atol=1e-14, err_msg=name)


def test_predictions_match_pytorch():
    net = small_em_net(in_shape=(1, 12, 12), caps_types=(3, 2), caps_strides=(1, 2))
    x, _ = batch(net, B=4)
    oracle = TorchEMCapsNet(net.config, net.params, dtype=torch.float64)
    np.testing.assert_allclose(net.predict(x), oracle.activations(x).detach().numpy(),
                               rtol=1e-12)
