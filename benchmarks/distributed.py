"""Data-parallel training measured here and reckoned for N machines: images/s of one
process with 2 threads against 2 MPI ranks with 1 thread each (and, as a control, one
process with 1 thread), on the paper's network and
the logo network at batch 32 and 128, and the allreduce's share of a step; then what a step
exchanges, a ring allreduce's time at 10 and 100 Gbit/s, and the N at which it would take
as long as the computing.

    python benchmarks/distributed.py [--steps 3] > distributed.md    (needs minicaps[mpi])

Each measurement runs this script in a child process (--worker), alone or under
`mpiexec -n 2`. A step is a whole training step (the gradients of the rank's share, their
sum over the ranks, the Adam update) on seeded random images; the median of --steps steps
after a warm-up. The allreduce is timed after a barrier, so its time is the exchange alone
(waiting for the slower rank counts as computing).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from sweep import LOGOS, PAPER  # the networks of the README's sweep

NETWORKS = {"paper": PAPER, "logo": LOGOS}
BATCHES = (32, 128)
GBIT = {"10 Gbit/s": 10e9 / 8, "100 Gbit/s": 100e9 / 8}  # bytes per second


def worker(name, batch, steps, one_thread):
    """Time training steps as this process's part of the run; rank 0 prints JSON."""
    if one_thread:  # 1 thread per rank: minicaps' own element-wise threads off too
        from minicaps.fast import parallel
        parallel._pool = None
    from minicaps.nets.capsnet import CapsNet
    from minicaps.optim import Adam
    from minicaps.training import distributed

    world = distributed.join()
    config = NETWORKS[name]
    net = CapsNet.from_config(config, seed=0)
    opt = Adam(net.params, lr=1e-4)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (batch, *config.in_shape), dtype=np.uint8)
    y = rng.integers(0, config.n_classes, batch)
    exchanges = []
    if world.size > 1:
        summed = world._sum

        def timed_sum(buffer):
            world.comm.Barrier()
            t0 = time.perf_counter()
            summed(buffer)
            exchanges.append(time.perf_counter() - t0)
        world._sum = timed_sum

    def work(xs, ys):
        return (*net.loss_and_grads(xs, ys), 0)

    times = []
    for _ in range(steps + 1):  # the first is the warm-up
        t0 = time.perf_counter()
        _, grads, _ = world.batch_gradients(work, x, y, net.params)
        opt.step(grads)
        times.append(time.perf_counter() - t0)
    if world.lead:
        print(json.dumps({"step_s": float(np.median(times[1:])),
                          "allreduce_s": float(np.median(exchanges[1:])) if exchanges else 0.0,
                          "params": config.n_params()}))


def measure(name, batch, steps, ranks, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
    command = [sys.executable, __file__, "--worker", name, str(batch), str(steps)]
    if threads == 1:
        command.append("--one-thread")
    if ranks > 1:
        mpiexec = Path(sys.executable).parent / "mpiexec"
        command = [str(mpiexec) if mpiexec.exists() else shutil.which("mpiexec"), "-n",
                   str(ranks), *command]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--worker", nargs=3, metavar=("NETWORK", "BATCH", "STEPS"))
    parser.add_argument("--one-thread", action="store_true")
    args = parser.parse_args()
    if args.worker:
        name, batch, steps = args.worker
        worker(name, int(batch), int(steps), args.one_thread)
        return
    load_before = os.getloadavg()[0]
    rows = [(name, batch, measure(name, batch, args.steps, 1, 2),
             measure(name, batch, args.steps, 2, 1), measure(name, batch, args.steps, 1, 1))
            for name in NETWORKS for batch in BATCHES]
    print(f"Load average (1 min) before: {load_before:.1f}, after: {os.getloadavg()[0]:.1f}, "
          f"on {os.cpu_count()} cores.")
    print()
    print("| network | parameters | batch | 1 process, 2 threads: images/s | 2 ranks, 1 thread "
          "each: images/s | 2 ranks / 1 process | allreduce ms | allreduce share of the step "
          "| control: 1 process, 1 thread: images/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, batch, alone, ranks, single in rows:
        print(f"| {name} | {alone['params']:,} | {batch} | {batch / alone['step_s']:.1f} | "
              f"{batch / ranks['step_s']:.1f} | {alone['step_s'] / ranks['step_s']:.2f} | "
              f"{1e3 * ranks['allreduce_s']:.1f} | "
              f"{ranks['allreduce_s'] / ranks['step_s']:.1%} | "
              f"{batch / single['step_s']:.1f} |")
    print()
    print("On paper, N machines like this one sharing the global batch: a step's computing "
          "takes T / N (T: one machine's step, the faster of one process with 2 threads and "
          "with 1), a ring allreduce "
          "2 (N - 1) / N * bytes / bandwidth; they are even at N = 1 + T * bandwidth / "
          "(2 * bytes), and past it the exchange dominates.")
    print()
    print("| network | bytes a step | batch | T (one machine) | " + " | ".join(
        f"ring allreduce, large N, {bw} | even at N ({bw})" for bw in GBIT) + " |")
    print("|---|---|---|---|" + "---|---|" * len(GBIT))
    for name, batch, alone, _, single in rows:
        size = 4 * (alone["params"] + 2)  # float32 gradients, the loss and the hits
        step = min(alone["step_s"], single["step_s"])
        cells = []
        for bandwidth in GBIT.values():
            even = 1 + step * bandwidth / (2 * size)
            # a rank needs an image at least: past N = batch the exchange never dominates
            capped = f"{even:.0f}" if even <= batch else f"{even:.0f} (> batch: never)"
            cells += [f"{1e3 * 2 * size / bandwidth:.1f} ms", capped]
        print(f"| {name} | {size / 1e6:.1f} MB | {batch} | {1e3 * step:.0f} ms | "
              + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
