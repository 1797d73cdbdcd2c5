"""Where a training step's time goes, stage by stage (cProfile; the CPU, or the GPU with --gpu).

Runs a few training steps (forward, backward, Adam) of the paper's MNIST network or of the
R&S defaults' network on random input and prints each stage's share of the profiled time:
the two convolutions, the predictions, routing, the decoder, the loss and Adam. A stage's
time includes everything it calls (its matrix products, im2col and copies); the shares are
of the same steps, so they can be compared with each other, not with `minicaps bench`
(profiling slows the many small Python calls more than the large products).

    python benchmarks/profile_step.py --network paper --batch-size 32 --steps 5
    python benchmarks/profile_step.py --network logos --batch-size 32 --steps 5
    python benchmarks/profile_step.py --gpu --batch-size 128 --steps 20

With --gpu the steps run on CuPy with CUDA_LAUNCH_BLOCKING=1: every kernel launch waits
for its kernel, so the profiler charges each stage with its own GPU time (plus one
synchronisation per launch, which a normal step does not pay: compare shares, not totals).

--conv-parts instead times the parts of the primary capsules' convolution alone, outside a
step and without the profiler (medians of --steps runs): building the columns, the three
matrix products (output, weight gradient, column gradient) and adding the column gradient
back (col2im), each with its achieved GFLOP/s. It answers what a stage profile cannot:
whether that convolution's time is its products or its copies. These are the parts of the
im2col path; from some batch size on (24 for the paper's network, 18 for the logo
network's) the CPU takes the spectral path instead (minicaps/fast/spectral.py; the header says
which), whose stages the step profile shows.
"""
import argparse
import cProfile
import os
import pstats
import time
from contextlib import contextmanager

# minicaps before NumPy, so that OpenBLAS's idle threads sleep (minicaps/fast/idle_threads.py)
from minicaps import Adam, CapsNet, CapsNetConfig
import numpy as np

from minicaps.fast.allocator import reuse_freed_memory
from minicaps.backend import xp_for
from minicaps.tools.bench import synchronize
from minicaps.tools.plan import spectral_geometry
from minicaps.fast.dispatch import add_columns, columns
from minicaps.ops.conv import group_weights, groups
from minicaps.training.config import TrainConfig
from minicaps.training.presets import RS_DEFAULTS

NETWORKS = {
    "paper": CapsNetConfig(),
    # The R&S defaults' network: training's corner crop, 16 classes, contrast channels.
    "logos": CapsNetConfig(in_shape=TrainConfig().crop.shape, n_classes=16, reconstruction=False,
                           **{k: RS_DEFAULTS[k] for k in (
                               "conv_channels", "kernel_size", "conv_stride", "primary_types",
                               "primary_dim", "primary_stride", "class_dim", "routing_iters",
                               "contrast_window")}),
}

# (stage, function name, the caller it is counted under or None for every caller): the
# convolution functions serve both conv1 and the primary capsules, told apart by caller.
# Only the functions the network calls count (STAGE_FILES): the ops it calls through
# minicaps/fast/dispatch.py, whose substitutes and references carry the same names.
STAGES = [
    ("input (standardise, contrast channels)", "_prepared", None),
    ("conv1 forward", "conv2d_forward_batch_last", "_capsules"),
    ("primary capsules forward", "primary_capsules_forward", None),
    ("predictions forward", "predictions_forward", None),
    ("routing forward", "routing_forward", None),
    ("decoder forward", "_decode", None),
    ("decoder backward", "_decode_backward", None),
    ("routing backward", "routing_backward", None),
    ("predictions backward", "predictions_backward", None),
    ("primary capsules backward", "primary_capsules_backward", None),
    ("conv1 backward", "conv2d_backward_batch_last", "_capsules_backward"),
    ("Adam", "step", None),
]
STAGE_FILES = ("dispatch.py", "capsnet.py", "network.py", "optim.py")


def stage_seconds(stats, name, caller):
    """Cumulative seconds of the functions called `name` (from `caller` only, if given)."""
    total = 0.0
    for (filename, _, function), (_, _, _, cumulative, callers) in stats.stats.items():
        if function != name or not filename.endswith(STAGE_FILES):
            continue
        if caller is None:
            total += cumulative
        else:
            total += sum(c[3] for (_, _, f), c in callers.items() if f == caller)
    return total


COLUMNS, OUTPUT, WEIGHT_GRADIENT, COLUMN_GRADIENT, COL2IM = CONV_PARTS = (
    "columns (forward and again in backward)", "output product",
    "weight-gradient product (written into dw)", "column-gradient product",
    "col2im (adding the column gradient back)")


def conv_parts(config, batch_size, runs, device="cpu"):
    """{part: median seconds} of the primary capsules' convolution, forward and backward,
    done group by group as minicaps.ops.conv does it (the same helpers, with the columns of
    minicaps.fast.dispatch), and its FLOPs per part."""
    rng = np.random.default_rng(0)
    xp = xp_for(device)
    C, k, s = config.conv_channels, config.kernel_size, config.primary_stride
    (h1, w1), (oh, ow) = config.conv1_size, config.grid
    O = config.primary_types * config.primary_dim
    xt = xp.asarray(rng.random((C, h1, w1, batch_size), dtype=np.float32))
    w = xp.asarray(rng.random((C, k, k, O), dtype=np.float32))
    dw = xp.empty_like(w)
    dout = xp.asarray(rng.random((O, oh * ow * batch_size), dtype=np.float32))
    channel_groups = groups(xt, k, k, oh, ow)

    def one_run():
        seconds = dict.fromkeys(CONV_PARTS, 0.0)

        @contextmanager
        def timing(part):
            synchronize(xp)
            start = time.perf_counter()
            yield
            synchronize(xp)
            seconds[part] += time.perf_counter() - start

        def group_columns(group):
            with timing(COLUMNS):
                cols = columns(xt[group], k, k, oh, ow, s)
            return cols, cols.reshape(-1, dout.shape[1])

        for group in channel_groups:  # forward
            _, cols_2d = group_columns(group)
            with timing(OUTPUT):
                group_weights(w, group).T @ cols_2d
        dxt = xp.zeros_like(xt)
        for group in channel_groups:  # backward, which rebuilds the columns
            cols, cols_2d = group_columns(group)
            with timing(WEIGHT_GRADIENT):
                xp.matmul(cols_2d, dout.T, out=group_weights(dw, group))
            with timing(COLUMN_GRADIENT):
                dcols = group_weights(w, group) @ dout
            with timing(COL2IM):
                add_columns(dxt[group], dcols.reshape(cols.shape), s)
        return seconds

    one_run()  # warm-up
    times = [one_run() for _ in range(runs)]
    product_flops = 2 * O * C * k * k * oh * ow * batch_size
    return {part: float(np.median([t[part] for t in times])) for part in times[0]}, \
        product_flops, len(channel_groups)


def print_conv_parts(config, batch_size, runs, device):
    parts, flops, n_groups = conv_parts(config, batch_size, runs, device)
    total = sum(parts.values())
    path = ("the spectral path, not these parts" if spectral_geometry(config, batch_size, device)
            else "this path")
    print(f"the primary capsules' convolution through im2col on the {device}, batch "
          f"{batch_size}, {n_groups} groups of input channels: {total * 1e3:.1f} ms forward "
          f"and backward (medians of {runs}; a training step at this batch takes {path})\n")
    print("| part | ms | share | GFLOP/s |\n|---|---:|---:|---:|")
    for part, seconds in parts.items():
        rate = f"{flops / seconds / 1e9:.0f}" if "product" in part else ""
        print(f"| {part} | {seconds * 1e3:.1f} | {seconds / total:.0%} | {rate} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", choices=sorted(NETWORKS), default="paper")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--gpu", action="store_true", help="profile the CuPy path (see above)")
    parser.add_argument("--conv-parts", action="store_true",
                        help="time the parts of the primary capsules' convolution instead")
    args = parser.parse_args()
    reuse_freed_memory()
    config = NETWORKS[args.network]
    device = "gpu" if args.gpu else "cpu"
    if args.conv_parts:
        print_conv_parts(config, args.batch_size, args.steps, device)
        return
    if args.gpu:
        os.environ["CUDA_LAUNCH_BLOCKING"] = "1"  # read when CUDA starts: before any array
    net = CapsNet.from_config(config, device=device)
    optimizer = Adam(net.params, lr=1e-4)
    rng = np.random.default_rng(0)
    xp = xp_for(device)
    x = xp.asarray(rng.random((args.batch_size, *config.in_shape), dtype=np.float32))
    y = xp.asarray(rng.integers(0, config.n_classes, args.batch_size))

    def train_step():
        _, grads = net.loss_and_grads(x, y)
        optimizer.step(grads)

    train_step()  # warm-up: first-touch of every buffer
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(args.steps):
        train_step()
    profiler.disable()
    stats = pstats.Stats(profiler)
    total = stats.total_tt
    print(f"{args.network} network, {device}, batch {args.batch_size}: "
          f"{total / args.steps:.3f} s a profiled step ({args.steps} steps)\n")
    print("| stage | s per step | share |\n|---|---:|---:|")
    counted = 0.0
    for stage, name, caller in STAGES:
        seconds = stage_seconds(stats, name, caller)
        counted += seconds
        if seconds:
            print(f"| {stage} | {seconds / args.steps:.3f} | {seconds / total:.0%} |")
    rest = total - counted
    print(f"| the rest (loss, lengths, batch preparation) | {rest / args.steps:.3f} | "
          f"{rest / total:.0%} |")


if __name__ == "__main__":
    main()
