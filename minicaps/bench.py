"""Measure training and inference speed and peak memory of a configuration.

Steps are timed one by one after a warm-up (synchronising the GPU around each), and the
median is reported: a 2-core machine's timings are noisy, and the median ignores the odd
slow step. Peak memory is measured in one extra step of its own, with tracemalloc on the
CPU (NumPy reports its buffers to it) or the CuPy pool's high-water mark on the GPU, so the
tracking costs nothing in the timed steps.
"""
import time
import tracemalloc

import numpy as np

from .backend import xp_for
from .model import CapsNet
from .optim import Adam
from .plan import plan


def synchronize(xp):
    """Wait until the GPU has done what was asked of it (nothing to wait for on the CPU)."""
    if xp is not np:
        xp.cuda.Device().synchronize()


def peak_step_bytes(xp, step):
    """Peak bytes allocated while step() runs, above what was allocated before."""
    if xp is np:
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        step()
        peak = tracemalloc.get_traced_memory()[1] - before
        tracemalloc.stop()
        return peak
    pool = xp.get_default_memory_pool()
    before, peak = pool.used_bytes(), [pool.used_bytes()]

    def tracking_malloc(size):
        memory = pool.malloc(size)
        peak[0] = max(peak[0], pool.used_bytes())
        return memory

    xp.cuda.set_allocator(tracking_malloc)
    try:
        step()
        synchronize(xp)
    finally:
        xp.cuda.set_allocator(pool.malloc)
    return peak[0] - before


def _median_seconds(xp, step, steps):
    times = []
    for _ in range(steps):
        synchronize(xp)
        start = time.perf_counter()
        step()
        synchronize(xp)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def benchmark(config, *, batch_size=32, steps=10, warmup=2, device="cpu", seed=0):
    """Time `steps` training steps (forward, backward, Adam) and as many inference passes.

    Returns a dict: images_per_s, step_s_median, infer_images_per_s, infer_s_median,
    peak_mem_bytes (what one training step allocates: activations, gradients, the update's
    temporaries; weights and Adam's moments not included), predicted_mem_bytes (the
    planner's figure for the same), gflops
    (achieved, from the planner's FLOP count), and the configuration's sizes.
    """
    xp = xp_for(device)
    net = CapsNet.from_config(config, seed=seed, device=device)
    optimizer = Adam(net.params, lr=1e-4)
    rng = np.random.default_rng(seed)
    x = xp.asarray(rng.random((batch_size, *config.in_shape), dtype=np.float32))
    y = xp.asarray(rng.integers(0, config.n_classes, batch_size))

    def train_step():
        _, grads = net.loss_and_grads(x, y)
        optimizer.step(grads)

    def infer_step():
        net.predict(x)

    for _ in range(warmup):
        train_step()
        infer_step()
    step_s = _median_seconds(xp, train_step, steps)
    infer_s = _median_seconds(xp, infer_step, steps)
    peak = peak_step_bytes(xp, train_step)
    planned = plan(config, batch_size)
    return {
        "device": device,
        "batch_size": batch_size,
        "steps": steps,
        "images_per_s": batch_size / step_s,
        "step_s_median": step_s,
        "infer_images_per_s": batch_size / infer_s,
        "infer_s_median": infer_s,
        "peak_mem_bytes": int(peak),
        "predicted_mem_bytes": int(planned.step_bytes),
        "gflops": planned.flops_train * batch_size / step_s / 1e9,
        "n_params": planned.n_params,
        "flops_per_image": planned.flops_train,
    }


def gemm_gflops(device="cpu", shape=(256, 2304, 1152), repeats=5):
    """Achieved GFLOP/s of a float32 product (M x K) @ (K x N): the rate the convolutions'
    products get. The default is one kernel-row group of the paper's primary capsules at
    batch 32 (M = 256 channels, K = 256 x 9, N = 6 x 6 x 32), which runs at about half the
    rate of a large square product on the CPU; predictions use this, not the peak."""
    xp = xp_for(device)
    M, K, N = shape
    rng = np.random.default_rng(0)
    a = xp.asarray(rng.random((M, K), dtype=np.float32))
    b = xp.asarray(rng.random((K, N), dtype=np.float32))
    a @ b
    seconds = _median_seconds(xp, lambda: a @ b, repeats)
    return 2 * M * K * N / seconds / 1e9


def bandwidth_gbs(device="cpu", mib=64, repeats=5):
    """Achieved GB/s of an element-wise add over float32 arrays of `mib` MiB (two reads,
    one write): what copies and routing's passes get."""
    xp = xp_for(device)
    n = mib * 2 ** 20 // 4
    a, b = xp.ones(n, dtype=np.float32), xp.ones(n, dtype=np.float32)
    out = xp.empty_like(a)
    xp.add(a, b, out=out)
    seconds = _median_seconds(xp, lambda: xp.add(a, b, out=out), repeats)
    return 3 * 4 * n / seconds / 1e9
