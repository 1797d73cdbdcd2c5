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

from ..backend import xp_for
from ..fast import dispatch
from ..nets.kinds import build
from ..ops.conv import largest_group
from ..optim import Adam
from .plan import main_convolution, plan, spectral_geometry


def synchronize(xp):
    """Wait until the GPU has done what was asked of it (nothing to wait for on the CPU)."""
    if xp is not np:
        xp.cuda.Device().synchronize()


class MemoryMeter:
    """Bytes allocated now, and their high-water mark since restart_peak(): NumPy's through
    tracemalloc, CuPy's through its pool, with an allocator that notes the mark. A context
    manager: tracing starts on entry and stops (CuPy's allocator is put back) on exit."""

    def __init__(self, xp):
        self.xp = xp

    def __enter__(self):
        if self.xp is np:
            tracemalloc.start()
            return self
        self.pool = self.xp.get_default_memory_pool()
        self.high = self.pool.used_bytes()

        def tracking_malloc(size):
            memory = self.pool.malloc(size)
            self.high = max(self.high, self.pool.used_bytes())
            return memory

        self.xp.cuda.set_allocator(tracking_malloc)
        return self

    def __exit__(self, *exc):
        if self.xp is np:
            tracemalloc.stop()
        else:
            self.xp.cuda.set_allocator(self.pool.malloc)

    def now(self):
        return tracemalloc.get_traced_memory()[0] if self.xp is np else self.pool.used_bytes()

    def restart_peak(self):
        if self.xp is np:
            tracemalloc.reset_peak()
        else:
            self.high = self.now()

    def peak(self):
        return tracemalloc.get_traced_memory()[1] if self.xp is np else self.high


def peak_step_bytes(xp, step):
    """Peak bytes allocated while step() runs, above what was allocated before."""
    with MemoryMeter(xp) as meter:
        before = meter.now()
        meter.restart_peak()
        step()
        synchronize(xp)
        return meter.peak() - before


def _seconds(xp, step, steps, before=None, summary=np.median):
    """The median (or another summary) of the seconds of `steps` runs of step(); before()
    runs untimed ahead of each."""
    times = []
    for _ in range(steps):
        if before is not None:
            before()
        synchronize(xp)
        start = time.perf_counter()
        step()
        synchronize(xp)
        times.append(time.perf_counter() - start)
    return float(summary(times))


def benchmark(config, *, batch_size=32, steps=10, warmup=2, device="cpu", seed=0):
    """Time `steps` training steps (forward, backward, Adam) and as many inference passes.

    Returns a dict: images_per_s, step_s_median, infer_images_per_s, infer_s_median,
    peak_mem_bytes (what one training step allocates: activations, gradients, the update's
    temporaries; weights and Adam's moments not included), predicted_mem_bytes (the
    planner's figure for the same), gflops (the network's FLOPs as the direct path does
    them, per second: above the machine's GEMM peak where the primary capsules go through
    the DFT, which does fewer), and the configuration's sizes.
    """
    xp = xp_for(device)
    net = build(config, seed=seed, device=device)
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
    step_s = _seconds(xp, train_step, steps)
    infer_s = _seconds(xp, infer_step, steps)
    peak = peak_step_bytes(xp, train_step)
    planned = plan(config, batch_size, device)
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


# Matrix products this wide (output positions times batch: the paper's primary capsules at
# batch 128) already run at the machine's full rate: step_rates times wider ones at this
# width, so that calibrating a large batch costs no more than a middling one.
CALIBRATION_WIDTH = 4608
_EVICT_BYTES = 64 * 2 ** 20  # more than the CPU's last-level cache
SPECTRAL_CALIBRATION_BYTES = 16 * 2 ** 20  # of input spectrum in _spectral_rate
UPDATE_SAMPLE = 2 ** 22  # parameters: their Adam state (64 MB) outgrows the cache too


def step_rates(config, batch_size, device="cpu", repeats=5):
    """(GEMM GFLOP/s, copy GB/s, update GB/s) that a training step of `config` gets on this
    machine, for Plan.step_seconds: the first two measured on one channel group of its main
    convolution (minicaps.plan.main_convolution) at this batch, the group's three matrix
    products (output, weight gradient, column gradient) and the building of its columns;
    the last is update_gbs. Where the step takes the spectral path (plan.spectral_geometry),
    the GEMM rate is its products' and transforms' instead, on one chunk of its input
    terms (_spectral_rate), and the copy rate is still the columns' (the memory's speed for
    strided passes, which the spectral path's transposes and gathers are too).

    The first two depend on the shapes: at batch 1 a product 36 columns wide runs at a
    fraction of the rate of one 1152 wide, and im2col copying runs of one number at a
    fraction of runs of 32. A product wider than CALIBRATION_WIDTH is timed on fewer
    images, or on fewer of a large image's output rows, down to one image and one row.
    On the CPU the columns are built from a cold cache, as in a step, where the stages
    between one use of an array and the next push it out. The products' rate is from the fastest of `repeats`
    runs: on a shared machine another process's burst slows one run in a few by up to 2x,
    and would then set the rate for the whole prediction, where a step's median leaves such
    runs out. Copies vary from run to run by themselves (the cache's and memory's state):
    their rate is from the median."""
    gemm_gflops, copy_gbs = _convolution_rates(config, batch_size, device, repeats)
    return gemm_gflops, copy_gbs, update_gbs(device, config.dtype, repeats)


def _convolution_rates(config, batch_size, device, repeats):
    """step_rates' first two, from arrays freed when it returns."""
    xp = xp_for(device)
    copy_gbs = _columns_rate(config, batch_size, xp, repeats)
    spectral = spectral_geometry(config, batch_size, device)
    if spectral is not None:
        return _spectral_rate(spectral, batch_size, xp, config.dtype, repeats), copy_gbs
    conv, oh, ow, batch, g = _calibration_group(config, batch_size)
    k2, dtype = conv.kernel ** 2, np.dtype(config.dtype)
    rng = np.random.default_rng(0)
    cols, w, dout = (xp.asarray(rng.random(shape, dtype=dtype)) for shape in [
        (g * k2, oh * ow * batch), (g * k2, conv.out_channels),
        (conv.out_channels, oh * ow * batch)])

    def products():  # as minicaps.ops.conv multiplies: output, weight gradient, column gradient
        w.T @ cols, cols @ dout.T, w @ dout

    products()
    gemm_s = _seconds(xp, products, repeats, summary=min)
    return 3 * 2 * w.size * cols.shape[1] / gemm_s / 1e9, copy_gbs


def _calibration_group(config, batch_size):
    """(main convolution, oh, ow, batch, channels) of the channel group step_rates times:
    a large output cropped to its top rows, a large batch to fewer images."""
    conv = main_convolution(config)
    oh, ow = conv.out_size
    oh = min(oh, max(1, CALIBRATION_WIDTH // ow))  # the top rows of a very large output
    batch = min(batch_size, max(1, CALIBRATION_WIDTH // (oh * ow)))
    g = largest_group(conv.in_channels,
                      conv.kernel ** 2 * oh * ow * batch * np.dtype(config.dtype).itemsize)
    return conv, oh, ow, batch, g


def _columns_rate(config, batch_size, xp, repeats):
    """GB/s of building one channel group's im2col columns from a cold cache (the median
    of `repeats`): the rate charged for all copies and passes over activations."""
    conv, oh, ow, batch, g = _calibration_group(config, batch_size)
    in_h = (oh - 1) * conv.stride + conv.kernel
    xt = xp.asarray(np.random.default_rng(0).random((g, in_h, conv.in_w, batch),
                                                    dtype=np.dtype(config.dtype)))
    evict = np.ones(_EVICT_BYTES // 4, dtype=np.float32) if xp is np else None

    def evict_caches():
        if evict is not None:
            evict.sum()

    def build():
        return dispatch.columns(xt, conv.kernel, conv.kernel, oh, ow, conv.stride)

    nbytes = build().nbytes
    return nbytes / _seconds(xp, build, repeats, before=evict_caches) / 1e9


def _spectral_rate(g, batch_size, xp, dtype, repeats):
    """GFLOP/s of the spectral convolution's matrix products (minicaps.fast.spectral), timed on
    one chunk of its input terms at this batch (halved until the chunk's input spectrum
    fits in SPECTRAL_CALIBRATION_BYTES): per frequency the output's two products, the input
    gradient's two and the kernel gradient's two; the kernel's three transforms; and the
    input's transform and its way back for the chunk's terms (the fastest of `repeats`).
    That is the spectral part of Plan.gemm_flops_train, chunk for chunk (the output's small
    transforms left out): the products run at a rate set by their depth and width, the
    input's transforms (deep: ny*nx terms) at another, and their shares change with the grid
    (on large inputs the transforms are a large part of it). At a batch large enough to halve, the
    chunk is the halved batch's, shallower than the step's."""
    dtype = np.dtype(dtype)
    F, O, B = g.frequencies, g.O, batch_size
    m = min(g.terms, g.chunk(dtype.itemsize, B))
    while B > 1 and F * m * 2 * B * dtype.itemsize > SPECTRAL_CALIBRATION_BYTES:
        B //= 2
        m = min(g.terms, g.chunk(dtype.itemsize, B))
    rng = np.random.default_rng(0)
    X, K, E, D, taps, A, phases = (xp.asarray(rng.random(shape, dtype=dtype)) for shape in [
        (F, m, 2 * B), (F, 2, m, O), (F, 2 * B, 2 * O), (2 * F, g.taps ** 2),
        (g.taps ** 2, m * O), (2 * F, g.ny * g.nx), (g.ny * g.nx, m * B)])

    def products():  # as minicaps.fast.spectral multiplies, each result dropped at once
        XT = X.transpose(0, 2, 1)
        for part in (0, 1):
            XT @ K[:, part]
            K[:, part] @ E[:, :, part * O:(part + 1) * O].transpose(0, 2, 1)
            X @ E[:, :, part * O:(part + 1) * O]
            xp.matmul(D, taps, out=K.reshape(2 * F, -1))  # into K: no second chunk's worth
        D.T @ K.reshape(2 * F, -1)
        A.T @ (A @ phases)

    products()
    seconds = _seconds(xp, products, repeats, summary=min)
    flops = (g.product_flops(B) + g.kernel_transform_flops()
             + g.input_transform_flops(B)) * m / g.terms
    return flops / seconds / 1e9


def update_gbs(device="cpu", dtype="float32", repeats=5):
    """GB/s of Adam's update (Plan.update_bytes: weights, gradients and two moments read,
    three of them written) on UPDATE_SAMPLE parameters: its dozen element-wise passes run
    at about half the rate of one contiguous pass, as they go chunk by chunk."""
    xp = xp_for(device)
    params = {"w": xp.zeros(UPDATE_SAMPLE, dtype=dtype)}
    grads = {"w": xp.ones(UPDATE_SAMPLE, dtype=dtype)}
    optimizer = Adam(params, lr=1e-3)
    optimizer.step(grads)
    seconds = _seconds(xp, lambda: optimizer.step(grads), repeats)
    return 7 * params["w"].nbytes / seconds / 1e9
