"""The primary capsules' convolution through im2col and through the DFT, side by side.

Times forward and backward of the same convolution (random input, weights and output
gradient, float32) through the im2col path (minicaps.ops.conv with the fast columns of
minicaps.fast.dispatch) and minicaps.fast.spectral's, alternated round by round, at each
batch size; prints the medians, their ratio, which path a training step takes at that
batch (minicaps.fast.dispatch.takes_spectral_path) and the largest relative difference
between the two paths' results.

    python benchmarks/conv_paths.py --network paper --batch-sizes 8,16,20,24,32,128,256
    python benchmarks/conv_paths.py --network logos --batch-sizes 8,13,16,32
"""
import argparse
import time

# minicaps before NumPy, so that OpenBLAS's idle threads sleep (minicaps/fast/idle_threads.py)
from minicaps.fast import dispatch, spectral
import numpy as np

from minicaps.fast.allocator import reuse_freed_memory
from minicaps.ops import conv as im2col_conv
from minicaps.tools.plan import main_convolution
from sweep import LOGOS, PAPER  # benchmarks/sweep.py: the networks of the README's table

NETWORKS = {"paper": PAPER, "logos": LOGOS}


def both_paths(xt, w, b, dout, stride):
    """{path: function running forward and backward} for one convolution."""
    def im2col():
        _, cache = im2col_conv.conv2d_forward_batch_last(xt, w, b, stride=stride,
                                                         columns=dispatch.columns)
        return im2col_conv.conv2d_backward_batch_last(dout, cache, columns=dispatch.columns,
                                                      add_columns=dispatch.add_columns)

    def dft():
        return spectral.backward(dout, spectral.forward(xt, w, b, stride=stride)[1])

    return {"im2col": im2col, "dft": dft}


def compare(config, batch_size, rounds):
    conv = main_convolution(config)
    rng = np.random.default_rng(0)
    C, k, O = conv.in_channels, conv.kernel, conv.out_channels
    xt = rng.random((C, conv.in_h, conv.in_w, batch_size), dtype=np.float32)
    w = ((rng.random((C, k, k, O)) - 0.5) / 50).astype(np.float32)
    b = np.zeros(O, dtype=np.float32)
    oh, ow = conv.out_size
    dout = rng.standard_normal((O, oh, ow, batch_size)).astype(np.float32)
    paths = both_paths(xt, w, b, dout, conv.stride)
    results = {name: run() for name, run in paths.items()}  # warm-up, and the results
    difference = max(float(np.abs(a - e).max() / np.abs(e).max())
                     for a, e in zip(results["dft"], results["im2col"]))
    seconds = {name: [] for name in paths}
    for n in range(rounds):
        for name in (list(paths) if n % 2 == 0 else list(paths)[::-1]):
            start = time.perf_counter()
            paths[name]()
            seconds[name].append(time.perf_counter() - start)
    taken = "dft" if dispatch.takes_spectral_path(xt.shape, w.shape, stride=conv.stride) \
        else "im2col"
    return {name: float(np.median(s)) for name, s in seconds.items()}, taken, difference


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", choices=sorted(NETWORKS), default="paper")
    parser.add_argument("--batch-sizes", default="8,16,20,24,32,128")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    reuse_freed_memory()
    config = NETWORKS[args.network]
    print(f"the {args.network} network's primary capsules, forward and backward, medians of "
          f"{args.rounds} alternated rounds\n")
    print("| batch | im2col ms | DFT ms | im2col / DFT | a training step takes | "
          "largest relative difference |\n|---|---:|---:|---:|---|---:|")
    for batch_size in (int(b) for b in args.batch_sizes.split(",")):
        medians, taken, difference = compare(config, batch_size, args.rounds)
        print(f"| {batch_size} | {medians['im2col'] * 1e3:.1f} | {medians['dft'] * 1e3:.1f} | "
              f"{medians['im2col'] / medians['dft']:.2f} | {taken} | {difference:.1e} |",
              flush=True)


if __name__ == "__main__":
    main()
