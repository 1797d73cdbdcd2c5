"""Where a training step's memory peaks: bytes live at each stage's start and at its peak.

Wraps the stages of the paper's network (the functions of minicaps.fast.dispatch that
minicaps.nets.capsnet calls; a stage's own calls of them count in the stage) and records,
per image, the bytes allocated when a stage starts (what earlier stages keep) and the most
allocated while it runs; the step's peak is the largest of those. On the CPU the bytes
are NumPy's, through tracemalloc; on the GPU (--gpu) CuPy's pool, through an allocator
that notes its high-water mark. The planner (minicaps/tools/plan.py) models the same stages.

    python benchmarks/memory_stages.py --batch-size 32
    python benchmarks/memory_stages.py --gpu --batch-size 32
"""
import argparse

import numpy as np

from minicaps import CapsNet, CapsNetConfig
from minicaps.fast import dispatch
from minicaps.backend import xp_for
from minicaps.tools.bench import MemoryMeter, synchronize
from minicaps.tools.plan import plan

STAGES = ["conv2d_forward_batch_last", "primary_capsules_forward", "predictions_forward",
          "routing_forward", "routing_backward", "predictions_backward",
          "primary_capsules_backward", "conv2d_backward_batch_last"]


def measure(config, batch_size, device):
    """[(stage, bytes live at its start, peak bytes while it runs)] of one loss_and_grads,
    all above what was allocated before the step (weights, the batch)."""
    xp = xp_for(device)
    net = CapsNet.from_config(config, device=device)
    rng = np.random.default_rng(0)
    x = xp.asarray(rng.random((batch_size, *config.in_shape), dtype=np.float32))
    y = xp.asarray(rng.integers(0, config.n_classes, batch_size))
    net.loss_and_grads(x, y)  # warm-up: CuPy's handles and workspaces
    records, originals = [], {name: getattr(dispatch, name) for name in STAGES}
    running = []  # the stage being measured, if any

    def wrapped(name):
        def stage(*args, **kwargs):
            if running:  # the primary capsules' convolution, inside their stage
                return originals[name](*args, **kwargs)
            running.append(name)
            synchronize(xp)
            start = meter.now()
            meter.restart_peak()
            result = originals[name](*args, **kwargs)
            records.append((name, start, meter.peak()))
            meter.restart_peak()
            running.pop()
            return result
        return stage

    for name in STAGES:
        setattr(dispatch, name, wrapped(name))
    try:
        with MemoryMeter(xp) as meter:
            base = meter.now()
            meter.restart_peak()
            net.loss_and_grads(x, y)
    finally:
        for name, function in originals.items():
            setattr(dispatch, name, function)
    return [(name, start - base, peak - base) for name, start, peak in records]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--gpu", action="store_true")
    args = parser.parse_args()
    device = "gpu" if args.gpu else "cpu"
    config, B = CapsNetConfig(), args.batch_size
    records = measure(config, B, device)
    mib = lambda b: b / B / 2 ** 20  # noqa: E731
    print(f"the paper's network on the {device}, batch {B}: MiB per image above the weights\n")
    print("| stage | live at its start | peak while it runs |\n|---|---:|---:|")
    for name, start, peak in records:
        print(f"| {name} | {mib(start):.2f} | {mib(peak):.2f} |")
    peak = max(p for _, _, p in records)
    print(f"\nstep peak {mib(peak):.2f} MiB per image; planned "
          f"{mib(plan(config, B, device).step_bytes):.2f}")


if __name__ == "__main__":
    main()
