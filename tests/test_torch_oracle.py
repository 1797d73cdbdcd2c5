"""minicaps' hand-written gradients against PyTorch autograd on the same weights.
Dev-only: skipped where PyTorch is not installed (it is never a dependency)."""
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))

from helpers import batch, small_net  # noqa: E402
from torch_capsnet import TorchCapsNet  # noqa: E402


@pytest.mark.parametrize("kwargs", [{}, {"routing_grad": "last"}, {"reconstruction": False},
                                    {"share_transforms": True},
                                    {"share_transforms": True, "none_capsule": True},
                                    {"in_shape": (3, 13, 11), "routing_iters": 4}])
def test_loss_and_gradients_match_pytorch_autograd(kwargs):
    net = small_net(**kwargs)
    x, y = batch(net, B=3)
    loss, grads = net.loss_and_grads(x, y)
    oracle = TorchCapsNet(net.config, net.params, dtype=torch.float64)
    torch_loss, torch_grads = oracle.loss_and_grads(x, y)
    assert float(loss) == pytest.approx(torch_loss, rel=1e-12)
    for name, g in grads.items():
        np.testing.assert_allclose(g, torch_grads[name], rtol=1e-9, atol=1e-14, err_msg=name)
