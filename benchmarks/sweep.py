"""Images/s, memory and the planner's predictions across batch size, routing iterations,
number of classes and input size, for the README's table.

    python benchmarks/sweep.py [--gpu] [--steps 5] > sweep.md

Every row is `minicaps bench` (medians of --steps training steps after a warm-up) beside
`minicaps plan` (predicted step time and memory), so the planner's error is measured in
the same run.
"""
import argparse
import dataclasses

from minicaps import CapsNetConfig
from minicaps.fast.allocator import reuse_freed_memory
from minicaps.tools.bench import benchmark, step_rates
from minicaps.tools.plan import plan

PAPER = CapsNetConfig()
# The R&S network (minicaps/training/presets.py) before its local contrast channels and its
# finer crops, as the README's table measured it: three corners at 3x48x96, 16 classes.
LOGOS = CapsNetConfig(in_shape=(3, 48, 96), n_classes=16, conv_channels=128, kernel_size=9,
                      conv_stride=2, primary_types=16, reconstruction=False)


def rows():
    for b in (1, 8, 32, 128, 256):
        yield "batch size", b, PAPER, b
    for r in (1, 2, 3, 4, 5):
        yield "routing iterations", r, dataclasses.replace(PAPER, routing_iters=r), 32
    for j in (10, 16, 32, 59):
        yield "classes", j, dataclasses.replace(PAPER, n_classes=j), 32
    for size in (28, 40, 56):
        yield "input size", f"{size}x{size}", dataclasses.replace(PAPER, in_shape=(1, size, size)), 32
    yield ("logo corners (the R&S network at half size without the contrast channels: "
           "3x48x96, conv 128 9x9 stride 2, no decoder)", "-", LOGOS, 32)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", action="store_true")
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    reuse_freed_memory()  # as `minicaps bench` does
    device = "gpu" if args.gpu else "cpu"
    print("| varied | value | batch | train images/s | infer images/s | GFLOP/s | "
          "peak memory (MiB) | planned memory (MiB) | predicted images/s (its GEMM GFLOP/s, "
          "copy GB/s, update GB/s) | measured / predicted |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for what, value, config, batch in rows():
        r = benchmark(config, batch_size=batch, steps=args.steps, warmup=1, device=device)
        gemm, copy, update = step_rates(config, batch, device)
        predicted = batch / plan(config, batch, device).step_seconds(gemm, copy, update)
        print(f"| {what} | {value} | {batch} | {r['images_per_s']:.1f} | "
              f"{r['infer_images_per_s']:.1f} | {r['gflops']:.0f} | "
              f"{r['peak_mem_bytes'] / 2**20:.0f} | {r['predicted_mem_bytes'] / 2**20:.0f} | "
              f"{predicted:.1f} ({gemm:.0f}, {copy:.1f}, {update:.0f}) | "
              f"{r['images_per_s'] / predicted:.2f} |", flush=True)


if __name__ == "__main__":
    main()
