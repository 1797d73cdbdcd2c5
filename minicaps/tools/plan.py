"""Plan a training step before allocating anything: parameters, memory, FLOPs, time.

The memory model follows what the code keeps alive, stage by stage. Going forward, each
stage adds its transient (a convolution's column group and output) to what the stages
before it keep for backward. Going backward, caches are dropped as they are used (routing's
u_hat once routing is done), each stage adds its transient (du_hat and the stacked
gradient paths in routing, the columns or their gradient and dx in a convolution), and the
gradients of the layers done so far are held. The weights and Adam's two moments come on
top, for the whole run.
"""
import os
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

from ..errors import MinicapsError
from ..fast.dispatch import examples_routed_at_once, takes_spectral_path
from ..fast.spectral import geometry_of
from ..nets.cnn import POOLED_LAYERS
from ..nets.kinds import kind_of
from ..nets.network import input_channels
from ..ops.conv import largest_group, output_size
from .plan_em import em_plan

GIB = 2 ** 30


@dataclass(frozen=True)
class Plan:
    n_params: int
    param_bytes: int        # weights and Adam's two moments
    step_bytes: int         # peak of one training step: activations and gradients
    flops_forward: float    # per image
    flops_train: float      # per image: forward, backward, update
    # Per image at this batch size (the spectral convolution's kernel transforms are a
    # fixed cost per step, shared by the batch): the part done by large matrix products,
    # and the memory moved by copies and element-wise passes.
    gemm_flops_train: float
    traffic_bytes: float
    batch_size: int

    @property
    def total_bytes(self):
        return self.param_bytes + self.step_bytes

    @property
    def update_bytes(self):
        """Bytes Adam's update moves per step: it reads the weights, their gradients and the
        two moments, and writes back the three of param_bytes."""
        return self.param_bytes // 3 * 7

    def step_seconds(self, gemm_gflops, copy_gbs, update_gbs):
        """Predicted training-step time: the large matrix products at the GEMM rate that
        this network's convolution gets, the copies and passes over activations (im2col,
        col2im, routing, transposes) at the rate that building its columns gets, and the
        optimizer's update at its own rate (minicaps.bench.step_rates measures all three
        for a configuration and batch)."""
        per_image = (self.gemm_flops_train / (gemm_gflops * 1e9)
                     + self.traffic_bytes / (copy_gbs * 1e9))
        return per_image * self.batch_size + self.update_bytes / (update_gbs * 1e9)


@dataclass(frozen=True)
class Convolution:
    """One convolution as minicaps.ops.conv runs it: its input already padded."""
    out_channels: int
    in_channels: int
    kernel: int
    in_h: int
    in_w: int
    stride: int

    @property
    def out_size(self):
        return tuple(output_size(n, self.kernel, self.stride, 0) for n in (self.in_h, self.in_w))


def main_convolution(config):
    """The convolution that does most of a training step's arithmetic: the primary
    capsules' of a CapsNet, a CNN's largest layer, an EM network's ReLU convolution."""
    if kind_of(config) == "em":
        _, H, W = config.in_shape
        return Convolution(config.conv_channels, input_channels(config), config.kernel_size,
                           H, W, config.conv_stride)
    if kind_of(config) == "cnn":
        pad = config.kernel_size // 2
        C, K, H, W, _ = max(_cnn_layers(config),
                            key=lambda layer: layer[0] * layer[1] * layer[2] * layer[3])
        return Convolution(K, C, config.kernel_size, H + 2 * pad, W + 2 * pad, 1)
    (h1, w1), k = config.conv1_size, config.kernel_size
    return Convolution(config.primary_types * config.primary_dim, config.conv_channels, k,
                       h1, w1, config.primary_stride)


def _dims(config):
    """The sizes a step's arrays are made of: C, H, W (the image), C1 (the channels conv1
    sees), K (conv channels), k (kernel), h1, w1 (conv1's output), gh, gw (the capsule
    grid), I, J, E, D, R (routing iterations)."""
    C, H, W = config.in_shape
    h1, w1 = config.conv1_size
    gh, gw = config.grid
    return SimpleNamespace(C=C, C1=input_channels(config), H=H, W=W, K=config.conv_channels,
                           k=config.kernel_size, h1=h1, w1=w1, gh=gh, gw=gw, I=config.n_primary,
                           J=config.n_classes, E=config.class_dim, D=config.primary_dim,
                           R=config.routing_iters, TD=config.primary_types * config.primary_dim)


def _sizes(config, B):
    """Element counts of the arrays a step of batch B creates, by name."""
    d = _dims(config)
    full = config.routing_grad == "full"
    return {
        # The prepared input. The local contrast's float64 tables are left out: they are
        # freed before conv1 runs, long before the step's peak.
        "x": B * d.C1 * d.H * d.W,
        "conv1_cols": d.C1 * d.k * d.k * B * d.h1 * d.w1,
        "conv1_out": B * d.K * d.h1 * d.w1,
        "primary_cols": d.K * d.k * d.k * B * d.gh * d.gw,
        "primary_out": B * d.TD * d.gh * d.gw,
        "u": B * d.I * d.D,
        "u_hat": B * d.J * d.I * d.E,
        "couplings": B * d.J * d.I * (d.R if full else 1),
        "decoder": B * (d.J * d.E + 2 * 512 + 2 * 1024 + 2 * d.C * d.H * d.W)
        if config.reconstruction else 0,
        "routing_left": B * d.J * d.I * (2 * d.R - 1 if full else 1),
    }


def _largest_group(channels, channel_elements, itemsize):
    """Elements of the largest of conv.channel_groups' column groups."""
    return largest_group(channels, channel_elements * itemsize) * channel_elements


def _group_elements(config, batch_size, conv):
    """Elements of the im2col columns of the largest group of input channels."""
    C, K, k = input_channels(config), config.conv_channels, config.kernel_size
    (oh, ow), channels = ((config.conv1_size, C) if conv == "conv1" else (config.grid, K))
    return _largest_group(channels, k * k * oh * ow * batch_size,
                          np.dtype(config.dtype).itemsize)


def spectral_geometry(config, batch_size, device="cpu"):
    """The minicaps.fast.spectral.Geometry of the primary capsules' convolution where a
    step of this batch takes the spectral path (dispatch.takes_spectral_path), else None."""
    if kind_of(config) != "capsnet":
        return None
    conv = main_convolution(config)
    xt_shape = (conv.in_channels, conv.in_h, conv.in_w, batch_size)
    w_shape = (conv.in_channels, conv.kernel, conv.kernel, conv.out_channels)
    if not takes_spectral_path(xt_shape, w_shape, stride=conv.stride, device=device):
        return None
    return geometry_of(xt_shape, w_shape, conv.stride)


def _spectral_elements(config, batch_size, g):
    """Elements of the primary capsules' convolution through the DFT, of Geometry g
    (spectral_geometry): the input's spectrum, kept for backward; the most that forward and
    backward hold at once besides (backward's dxt included, its dw not: that is counted
    with the gradients)."""
    B, F, M, O = batch_size, g.frequencies, g.terms, g.O
    chunk = min(M, g.chunk(np.dtype(config.dtype).itemsize, B))
    phases, spectrum = g.ny * g.nx * M * B, 2 * F * M * B  # the input's, and its spectrum's
    kernel, taps = 2 * F * chunk * O, g.taps ** 2 * chunk * O  # a chunk's spectrum, taps
    products = 2 * F * B * O  # each of a frequency's products (B x O real and imaginary)
    dxt = config.conv_channels * int(np.prod(config.conv1_size)) * B
    forward = max(phases + spectrum, 2 * spectrum, spectrum + kernel + taps + 4 * products,
                  spectrum + 3 * products)
    gradient = 2 * products  # E: the output spectrum's gradient, both arrangements
    backward = max(gradient + spectrum + kernel + max(taps, 2 * F * chunk * B),
                   2 * spectrum, spectrum + phases + dxt)  # E freed after the chunks
    return {"kept": spectrum, "forward": forward, "backward": backward}


def step_bytes(config, batch_size, device="cpu", spectral=None):
    """Peak bytes of one training step on `device`, its primary capsules through the DFT
    where `spectral` is their Geometry (spectral_geometry): at each stage, what the stages
    before it keep for backward and is still held, that stage's transient, and the
    gradients made so far."""
    n = _sizes(config, batch_size)
    itemsize = np.dtype(config.dtype).itemsize
    # Routing's gradient paths exist for the examples routed at once, not the whole batch.
    routed = examples_routed_at_once(batch_size, n["u_hat"] // batch_size * itemsize, device)
    paths = n["routing_left"] // batch_size * routed
    cols1 = _group_elements(config, batch_size, "conv1")
    cols2 = _group_elements(config, batch_size, "primary")
    shapes = config.param_shapes()
    # Elements of the gradients of the parameters named prefix*, once backward has made them.
    grads = lambda prefix: sum(int(np.prod(s)) for name, s in shapes.items()  # noqa: E731
                               if name.startswith(prefix))
    # conv1 keeps its batch-last input (and the loss the image), its ReLU output (which is
    # also the primary capsules' input); the primary capsules keep their squash's input
    # and the predictions their input u; routing keeps u_hat and the couplings.
    conv_kept = 2 * n["x"] + n["conv1_out"]
    spectral = _spectral_elements(config, batch_size, spectral) if spectral else None
    # The primary capsules keep their input's spectrum where they go through the DFT.
    cached = (conv_kept + 2 * n["u"] + n["u_hat"] + n["couplings"] + n["decoder"]
              + (spectral["kept"] if spectral else 0))
    after_routing = cached - n["u_hat"] - n["couplings"]
    # Forward: one group's columns at a time, the output and a group's part of it.
    forward = max(2 * n["x"] + cols1 + 2 * n["conv1_out"],
                  conv_kept + (spectral["forward"] if spectral else cols2 + 2 * n["primary_out"]))
    routing_backward = (cached + 2 * paths + n["u_hat"]  # paths, stacked; du_hat
                        + grads("decoder"))
    shared = config.share_transforms and config.n_primary > config.primary_types
    # du_hat, and with shared transforms du before its sum over the classes (unshared ones
    # go through du_hat in small tiles).
    per_class_du = n["u"] * config.n_classes if shared else 0
    predictions_backward = (after_routing + n["u_hat"] + per_class_du + grads("decoder")
                            + grads("caps"))
    # A convolution's backward holds dx and, at a time, one group's columns or their
    # gradient (each group's weight gradient is written straight into dw); conv1's needs
    # no dx (its input is the image).
    primary_backward = (after_routing - n["u"] + grads("decoder") + grads("caps")
                        + grads("primary")
                        + (spectral["backward"] if spectral else n["conv1_out"] + cols2))
    conv1_backward = conv_kept + n["conv1_out"] + cols1 + config.n_params()
    return itemsize * max(forward, routing_backward, predictions_backward, primary_backward,
                          conv1_backward)


def _flop_parts(config):
    """Forward FLOPs per image (a multiply-add is 2) of each stage."""
    d = _dims(config)
    return {
        "conv1": 2 * d.K * d.C1 * d.k * d.k * d.h1 * d.w1,
        "primary": 2 * d.TD * d.K * d.k * d.k * d.gh * d.gw,
        "predictions": 2 * d.I * d.J * d.E * d.D,
        "routing": 2 * d.J * d.I * d.E * (2 * d.R - 1),
        "decoder": 2 * (d.J * d.E * 512 + 512 * 1024 + 1024 * d.C * d.H * d.W)
        if config.reconstruction else 0,
    }


def flops_per_image(config):
    """(forward, training) floating-point operations per image.

    Backward: each product once more for the weights, once more for the inputs (not for
    conv1, whose input is the image); routing's backward is about twice its forward."""
    f = _flop_parts(config)
    forward = sum(f.values())
    backward = f["conv1"] + 2 * (f["primary"] + f["predictions"] + f["decoder"]) \
        + 2 * f["routing"]
    return float(forward), float(forward + backward)


def traffic_per_image(config, batch_size=1, spectral=None):
    """Bytes per image moved by the memory-bound work of a training step of this batch,
    its primary capsules through the DFT where `spectral` is their Geometry.

    im2col writes the columns twice (forward, and again in backward), and the primary
    convolution's backward writes their gradient and reads it back in col2im; through the
    DFT instead, the input's phases and spectrum, the spectrum's gradient and their
    transposes are about eight passes over the spectrum and two over
    the phases per image, and the kernel's spectrum is written three times a step (twice,
    and its gradient), shared by the batch. Routing and the predictions pass over u_hat
    4R + 2 times (2R + 3 with routing_grad "last"): five of them go to memory (the
    predictions write u_hat, routing reads it forward and again backward, writes its
    gradient, the predictions read that), the rest are routing's iterations over a tile of
    examples held in cache (minicaps.fast.tiles.ROUTING_TILE_BYTES), counted at half a pass each:
    routing in tiles took half the time it took passing over the whole batch (a CPU
    figure; the GPU routes the batch at once)."""
    n = _sizes(config, 1)
    itemsize = np.dtype(config.dtype).itemsize
    R = config.routing_iters
    in_cache = 4 * R - 3 if config.routing_grad == "full" else 2 * R - 2
    passes = 5 + in_cache / 2
    if spectral is None:
        primary = 4 * n["primary_cols"]
    else:
        g = spectral
        primary = (8 * 2 * g.frequencies * g.terms + 2 * g.ny * g.nx * g.terms
                   + 3 * g.spectrum_elements() / batch_size)
    elements = (2 * n["conv1_cols"] + primary + passes * n["u_hat"]
                + 6 * n["conv1_out"])  # ReLU, bias, transposes of conv1's output
    return float(elements * itemsize)


def _cnn_layers(config):
    """(input channels, output channels, height, width, pooled) of each CNN convolution,
    at the resolution it runs ('same' padding: its input's)."""
    (_, H, W), C, layers = config.in_shape, input_channels(config), []
    for n, K in enumerate(config.channels):
        pooled = n < POOLED_LAYERS
        layers.append((C, K, H, W, pooled))
        C, H, W = K, (H // 2 if pooled else H), (W // 2 if pooled else W)
    return layers


def _cnn_plan(config, batch_size):
    """The CNN baseline's plan, by the same accounting as the CapsNet's: each convolution
    keeps its padded batch-last input, its output and ReLU output (plus the pooled output
    and its int64 winners). Going forward, a layer's column group and the output it makes
    come on top of what the layers before it keep; going backward (every cache is held
    until the end), a layer's columns or their gradient and dx (not in the first layer,
    which needs no dx), or a pooling backward (the window gradients, their reordered copy
    and dx), come on top of all of them, and of all the gradients (counted from the start
    of backward: a CNN's are small). FLOPs: the convolutions and FC layers."""
    B, k, pad = batch_size, config.kernel_size, config.kernel_size // 2
    itemsize = np.dtype(config.dtype).itemsize
    cached = forward_peak = backward_transient = conv_flops = traffic = 0
    for n, (C, K, H, W, pooled) in enumerate(_cnn_layers(config)):
        out = K * H * W
        pooled_out = out // 4 if pooled else 0
        padded_in = C * (H + 2 * pad) * (W + 2 * pad)
        cols = _largest_group(C, k * k * H * W * B, itemsize)
        forward_peak = max(forward_peak, cached * B + cols + 2 * out * B)
        cached += padded_in + 2 * out + 3 * pooled_out
        backward = cols + 2 * padded_in * B if n else cols
        backward_transient = max(backward_transient, backward, 3 * out * B)
        conv_flops += 2 * K * C * k * k * H * W
        traffic += 2 * C * k * k * H * W + 8 * out
    shapes = config.param_shapes()
    fc_flops = sum(2 * int(np.prod(s)) for name, s in shapes.items()
                   if name.startswith("fc") and name.endswith(".w"))
    n = config.n_params()
    forward = conv_flops + fc_flops
    return Plan(n_params=n, param_bytes=3 * n * itemsize,
                step_bytes=itemsize * max(forward_peak, cached * B + backward_transient + n),
                flops_forward=float(forward), flops_train=float(3 * forward),
                gemm_flops_train=float(3 * forward), traffic_bytes=float(traffic * itemsize),
                batch_size=batch_size)


def plan(config, batch_size, device="cpu"):
    """The Plan of a training step of `config` (a CapsNetConfig, CNNConfig or
    EMCapsNetConfig) on `device`. Both devices build the columns in groups of the same size;
    only the CPU routes in tiles of examples (minicaps.fast.dispatch.examples_routed_at_once)."""
    if kind_of(config) == "em":
        return em_plan(config, batch_size, Plan, device)
    if kind_of(config) == "cnn":
        return _cnn_plan(config, batch_size)
    n = config.n_params()
    itemsize = np.dtype(config.dtype).itemsize
    forward, train = flops_per_image(config)
    f = _flop_parts(config)
    g = spectral_geometry(config, batch_size, device)
    primary = (3 * f["primary"] if g is None else
               (g.product_flops(batch_size) + g.kernel_transform_flops()
                + g.image_transform_flops(batch_size)) / batch_size)
    gemm = 3 * (f["conv1"] + f["decoder"]) - f["conv1"] + primary
    return Plan(n_params=n, param_bytes=3 * n * itemsize,
                step_bytes=step_bytes(config, batch_size, device, g),
                flops_forward=forward, flops_train=train, gemm_flops_train=float(gemm),
                traffic_bytes=traffic_per_image(config, batch_size, g),
                batch_size=batch_size)


def available_bytes(device):
    """Memory a step may use: free GPU memory, or the host's available memory."""
    if device == "gpu":
        from ..backend import require_gpu
        free, _ = require_gpu().cuda.runtime.memGetInfo()
        return free
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def largest_batch(config, budget_bytes, device="cpu"):
    """The largest batch size whose step fits in budget_bytes (0 if none does), by
    bisection: memory grows with the batch, but not in proportion (the im2col columns are
    built in groups)."""
    fits = lambda b: plan(config, b, device).total_bytes <= budget_bytes  # noqa: E731
    if not fits(1):
        return 0
    low, high = 1, 2
    while fits(high):
        low, high = high, high * 2
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if fits(mid) else (low, mid)
    return low


def check_fits(config, batch_size, device="cpu", *, headroom=0.9):
    """Raise MinicapsError, with a batch size that would fit, when a training step of this
    configuration needs more than `headroom` of the device's available memory."""
    need = plan(config, batch_size, device).total_bytes
    budget = headroom * available_bytes(device)
    if need <= budget:
        return
    fits = largest_batch(config, budget, device)
    hint = (f"try --batch-size {fits}" if fits >= 1 else
            "even one image does not fit: use a smaller input, crop, or fewer capsules")
    raise MinicapsError(f"a training step needs {need / GIB:.1f} GiB at batch size "
                        f"{batch_size}, but only {budget / GIB:.1f} GiB is available on the "
                        f"{device}: {hint}")
