"""minicaps against PyTorch eager on the same network, same weights, same batches.

Training steps (forward, backward, Adam) of both are timed alternately, one step each in
turn, so that whatever else the machine is doing slows both alike; medians are reported
with their ratio. With --memory, the memory of training per image: how far the resident
set of a fresh process grows over three training steps, the same measurement for both
libraries (Linux: read from /proc/self/status; getrusage would report the high-water mark
of the parent that started the process).

    python benchmarks/compare_torch.py --batch-sizes 32,128 --steps 10
    python benchmarks/compare_torch.py --gpu --batch-sizes 32,128,256 --steps 20 --memory

On the GPU (--gpu) each step is timed between device synchronisations, both multiply in
full float32 (PyTorch would let cuDNN use TF32 by default; --tf32 lets both), and --memory
compares the peak bytes allocated during a training step (CuPy's pool against
torch.cuda.max_memory_allocated), in the same process.

Both run in one process, so both get the allocator setting that `minicaps bench` and
`minicaps train` use (minicaps/fast/allocator.py); --default-allocator leaves glibc's default.
NumPy's OpenBLAS lets its idle threads sleep (minicaps/fast/idle_threads.py): spinning, as
they did before, they took a core from PyTorch's steps as well as from minicaps' copies.

PyTorch is a dev-only reference here; minicaps never imports it.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

# minicaps before NumPy, so that OpenBLAS's idle threads sleep (minicaps/fast/idle_threads.py)
from minicaps import Adam, CapsNet, CapsNetConfig
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from minicaps.fast.allocator import reuse_freed_memory  # noqa: E402
from minicaps.backend import to_host, xp_for  # noqa: E402
from minicaps.tools.bench import peak_step_bytes, synchronize  # noqa: E402


def minicaps_step(net, optimizer, x, y):
    _, grads = net.loss_and_grads(x, y)
    optimizer.step(grads)


def make_torch(config, params, device="cpu"):
    import torch
    from torch_capsnet import TorchCapsNet
    model = TorchCapsNet(config, params, device=device)
    optimizer = torch.optim.Adam(list(model.params.values()), lr=1e-4)

    def step(x, y):
        optimizer.zero_grad(set_to_none=True)
        model.loss(x, y).backward()
        optimizer.step()
    return step


def synchronizers(device):
    """(minicaps', PyTorch's) wait-for-the-device functions: no-ops on the CPU."""
    if device == "cpu":
        return (lambda: None), (lambda: None)
    import torch
    return (lambda: synchronize(xp_for("gpu"))), torch.cuda.synchronize


def setup(config, batch_size, device, seed=0):
    """The same weights and batch for both: (minicaps step, PyTorch step), each taking no
    arguments."""
    import torch
    xp = xp_for(device)
    rng = np.random.default_rng(seed)
    x = rng.random((batch_size, *config.in_shape), dtype=np.float32)
    y = rng.integers(0, config.n_classes, batch_size)
    net = CapsNet.from_config(config, seed=seed, device=device)
    optimizer = Adam(net.params, lr=1e-4)
    torch_device = "cuda" if device == "gpu" else "cpu"
    torch_step = make_torch(config, {name: to_host(p) for name, p in net.params.items()},
                            torch_device)
    tx, ty = torch.from_numpy(x).to(torch_device), torch.from_numpy(y).to(torch_device)
    x, y = xp.asarray(x), xp.asarray(y)
    return (lambda: minicaps_step(net, optimizer, x, y)), (lambda: torch_step(tx, ty))


def alternate(config, batch_size, steps, warmup, device="cpu", seed=0):
    """Seconds of each training step, (minicaps', PyTorch's), one step of each in turn."""
    return alternate_steps(*setup(config, batch_size, device, seed), steps, warmup, device)


def alternate_steps(ours_step, theirs_step, steps, warmup, device="cpu"):
    """Seconds of `steps` calls of each step function, (ours, theirs), one call of each in
    turn after `warmup` untimed ones: whatever else the machine does slows both alike."""
    ours_sync, theirs_sync = synchronizers(device)
    ours, theirs = [], []
    for n in range(warmup + steps):
        ours_sync()
        t0 = time.perf_counter()
        ours_step()
        ours_sync()
        t1 = time.perf_counter()
        theirs_step()
        theirs_sync()
        t2 = time.perf_counter()
        if n >= warmup:
            ours.append(t1 - t0)
            theirs.append(t2 - t1)
    return np.array(ours), np.array(theirs)


def gpu_peak_bytes(config, batch_size):
    """(minicaps, PyTorch) peak GPU bytes allocated during one training step (after a
    warm-up step, so Adam's state exists before), above what was allocated before it."""
    import torch
    ours_step, theirs_step = setup(config, batch_size, "gpu")
    ours_step()
    ours = peak_step_bytes(xp_for("gpu"), ours_step)
    theirs_step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    theirs_step()
    torch.cuda.synchronize()
    return ours, torch.cuda.max_memory_allocated() - before


PEAK_RSS = r"""
import sys, json, numpy as np
sys.path.insert(0, {bench!r})
from minicaps import CapsNet, CapsNetConfig, Adam
from minicaps.fast.allocator import reuse_freed_memory
if {reuse}:
    reuse_freed_memory()
config = CapsNetConfig(**json.loads({config!r}))
B = {batch}
rng = np.random.default_rng(0)
x = rng.random((B, *config.in_shape), dtype=np.float32); y = rng.integers(0, config.n_classes, B)
net = CapsNet.from_config(config)
if {use_torch}:
    import torch
    from compare_torch import make_torch
    step = make_torch(config, net.params); x, y = torch.from_numpy(x), torch.from_numpy(y)
    del net
else:
    from compare_torch import minicaps_step
    opt = Adam(net.params, lr=1e-4)
    step = lambda x, y: minicaps_step(net, opt, x, y)
def kib(field):  # this process's own figures: getrusage's ru_maxrss keeps the parent's
    for line in open("/proc/self/status"):  # high-water mark across fork and exec
        if line.startswith(field + ":"):
            return int(line.split()[1])
before = kib("VmHWM")  # libraries, weights, batch
for _ in range(3):
    step(x, y)
print(json.dumps({{"before": before, "peak": kib("VmHWM")}}))
"""


def peak_rss(config, batch_size, use_torch, reuse):
    """(peak, before) resident KiB of a process that takes training steps, and before its
    first step (libraries, weights and the batch loaded): their difference is what the
    steps need (activations, gradients, optimizer state, allocator caches). `reuse`: the
    allocator setting of the measuring process, so both measurements see the same."""
    import dataclasses
    code = PEAK_RSS.format(bench=str(Path(__file__).parent),
                           config=json.dumps(dataclasses.asdict(config)), batch=batch_size,
                           use_torch=use_torch, reuse=reuse)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return r["peak"], r["before"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", default="32,128")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--memory", action="store_true",
                        help="also measure memory (peak RSS on the CPU, allocations on the GPU)")
    parser.add_argument("--gpu", action="store_true",
                        help="both on the GPU: minicaps with CuPy, PyTorch with CUDA")
    parser.add_argument("--tf32", action="store_true",
                        help="GPU: let both multiply float32 matrices on the tensor cores "
                             "in TF32 (10-bit mantissas); without it neither does")
    parser.add_argument("--default-allocator", action="store_true",
                        help="leave glibc's allocator settings alone (see minicaps/fast/allocator.py)")
    args = parser.parse_args()
    import torch
    reused = not args.default_allocator and reuse_freed_memory()
    config = CapsNetConfig()  # the paper's MNIST network, float32, with the decoder
    device = "gpu" if args.gpu else "cpu"
    if args.gpu:  # PyTorch's default lets cuDNN's convolutions use TF32: set both alike
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = args.tf32
        os.environ["CUPY_TF32"] = "1" if args.tf32 else "0"  # read at CuPy's first product
    where = (f"{torch.cuda.get_device_name()}, {'TF32' if args.tf32 else 'float32'} products"
             if args.gpu
             else f"{torch.get_num_threads()} threads; freed memory "
                  f"{'reused' if reused else 'returned (glibc default)'}")
    print(f"PyTorch {torch.__version__}, {where}; the paper's network, "
          f"{config.n_params():,} parameters")
    for B in (int(b) for b in args.batch_sizes.split(",")):
        line = f"batch {B:4d}: "
        if args.memory and args.gpu:
            ours, theirs = gpu_peak_bytes(config, B)
            line += (f"GPU memory of a training step per image: minicaps "
                     f"{ours / B / 2 ** 20:.2f} MiB, PyTorch {theirs / B / 2 ** 20:.2f} MiB; ")
        elif args.memory:  # first, in fresh subprocesses, before this process grows
            (peak, before), (t_peak, t_before) = (peak_rss(config, B, False, reused),
                                                  peak_rss(config, B, True, reused))
            line += (f"memory of training per image: minicaps {(peak - before) / B / 1024:.2f}"
                     f" MiB, PyTorch {(t_peak - t_before) / B / 1024:.2f} MiB "
                     f"(peak RSS {peak / 1024:.0f} / {t_peak / 1024:.0f} MiB); ")
        ours, theirs = alternate(config, B, args.steps, args.warmup, device)
        # The ratio of the medians, and the quartiles of the ratios of steps taken one
        # after the other: how much the machine's own variations moved it.
        low, high = np.percentile(theirs / ours, [25, 75])
        ours, theirs = np.median(ours), np.median(theirs)
        line += (f"minicaps {B / ours:6.1f} images/s, PyTorch {B / theirs:6.1f} images/s, "
                 f"ratio {theirs / ours:.2f} (medians of {args.steps} alternated steps; "
                 f"step by step {low:.2f}-{high:.2f})")
        print(line, flush=True)


if __name__ == "__main__":
    main()
