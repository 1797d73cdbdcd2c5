"""minicaps' EMCapsNet against PyTorch autograd of the same network (torch_emcapsnet.py),
same weights, same batches, float32.

Training steps (forward, backward, Adam) of both are timed alternately, one step each in
turn, so that whatever else the machine is doing slows both alike; medians are reported
with their ratio. Both run in one process on the CPU (PyTorch with its default threads,
minicaps with NumPy's).

    python benchmarks/compare_torch_em.py --batch-sizes 8,32 --steps 5
    python benchmarks/compare_torch_em.py --gpu --batch-sizes 32,128 --steps 10

PyTorch is a dev-only reference here; minicaps never imports it.
"""
import argparse
import json
import sys
from pathlib import Path

from minicaps import Adam  # before NumPy, as compare_torch.py (OpenBLAS's idle threads)
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from compare_torch import alternate_steps, minicaps_step  # noqa: E402
from minicaps.backend import to_host  # noqa: E402
from minicaps.nets.emcapsnet import EMCapsNet, EMCapsNetConfig  # noqa: E402


def setup(config, batch_size, device, seed=0):
    """(minicaps step, PyTorch step) on the same weights and batch, no arguments each."""
    import torch
    from torch_emcapsnet import TorchEMCapsNet
    rng = np.random.default_rng(seed)
    x = rng.random((batch_size, *config.in_shape), dtype=np.float32)
    y = rng.integers(0, config.n_classes, batch_size)
    net = EMCapsNet.from_config(config, seed=seed, device=device)
    optimizer = Adam(net.params, lr=1e-4)
    torch_device = "cuda" if device == "gpu" else "cpu"
    model = TorchEMCapsNet(config, {n: to_host(p) for n, p in net.params.items()},
                           dtype=torch.float32, device=torch_device)
    torch_optimizer = torch.optim.Adam(list(model.params.values()), lr=1e-4)
    xt = torch.as_tensor(x, device=torch_device)
    margin = net.margin

    def torch_step():
        torch_optimizer.zero_grad(set_to_none=True)
        model.loss(xt, y, margin).backward()
        torch_optimizer.step()
    return (lambda: minicaps_step(net, optimizer, x, y)), torch_step


def time_alternately(steps, config, batch_size, device):
    """Median seconds per training step of (minicaps, PyTorch), alternated step by step
    after one warm-up step each."""
    ours, theirs = alternate_steps(*setup(config, batch_size, device), steps, 1, device)
    return {"minicaps": float(np.median(ours)), "pytorch": float(np.median(theirs))}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", default="8,32", help="comma-separated batch sizes")
    parser.add_argument("--steps", type=int, default=5, help="timed steps of each library")
    parser.add_argument("--gpu", action="store_true", help="both on the GPU (CuPy, CUDA)")
    parser.add_argument("--routing-grad", default="full", choices=["full", "last"],
                        help="the EM routing gradient of both")
    args = parser.parse_args()
    config = EMCapsNetConfig(routing_grad=args.routing_grad)
    device = "gpu" if args.gpu else "cpu"
    print(f"EMCapsNet defaults ({config.n_params():,} parameters), {device}, "
          f"routing grad {args.routing_grad}")
    for batch_size in (int(b) for b in args.batch_sizes.split(",")):
        t = time_alternately(args.steps, config, batch_size, device)
        row = {"batch": batch_size, **{f"{k}_ms": round(v * 1000, 1) for k, v in t.items()},
               "minicaps_images_per_s": round(batch_size / t["minicaps"], 1),
               "pytorch_images_per_s": round(batch_size / t["pytorch"], 1),
               "pytorch_time_over_minicaps": round(t["pytorch"] / t["minicaps"], 2)}
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
