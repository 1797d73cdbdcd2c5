"""Plan a training step before allocating anything: parameters, memory, FLOPs, time.

The memory model follows what the code keeps alive. A training step holds the forward
caches (the im2col columns of both convolutions dominate, then u_hat) until the backward
pass has used them; the backward pass adds its largest transient on top (the columns'
gradient in the primary capsules' backward, or du_hat and its transposed copy in routing).
Parameters, their gradients and Adam's two moments add four copies of the weights.
"""
import os
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

from .cnn import POOLED_LAYERS
from .conv import COLUMN_BYTES
from .errors import MinicapsError
from .network import input_channels
from .networks import kind_of

GIB = 2 ** 30


@dataclass(frozen=True)
class Plan:
    n_params: int
    param_bytes: int        # weights, gradients and Adam's two moments
    activation_bytes: int   # peak of the caches and transients of one training step
    flops_forward: float    # per image
    flops_train: float      # per image: forward, backward, update
    gemm_flops_train: float  # per image: the part done by large matrix products
    traffic_bytes: float    # per image: memory moved by copies and element-wise passes
    batch_size: int

    @property
    def total_bytes(self):
        return self.param_bytes + self.activation_bytes

    def step_seconds(self, gemm_gflops, bandwidth_gbs):
        """Predicted training-step time: the large matrix products at the machine's GEMM
        rate, plus the memory-bound rest (im2col, routing, transposes) at its bandwidth."""
        per_image = (self.gemm_flops_train / (gemm_gflops * 1e9)
                     + self.traffic_bytes / (bandwidth_gbs * 1e9))
        return per_image * self.batch_size


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


def _group_elements(config, batch_size, device, conv):
    """Elements of the im2col columns of one group of kernel rows (see conv.COLUMN_BYTES)."""
    C, K, k = input_channels(config), config.conv_channels, config.kernel_size
    (oh, ow), channels = ((config.conv1_size, C) if conv == "conv1" else (config.grid, K))
    row = channels * k * oh * ow * batch_size
    budget = COLUMN_BYTES["cupy" if device == "gpu" else "numpy"]
    return max(1, min(k, budget // (row * np.dtype(config.dtype).itemsize))) * row


def activation_bytes(config, batch_size, device="cpu"):
    """Peak bytes of one training step's activations: what the forward pass keeps for
    backward, plus the largest transient of any stage."""
    n = _sizes(config, batch_size)
    itemsize = np.dtype(config.dtype).itemsize
    cols1 = _group_elements(config, batch_size, device, "conv1")
    cols2 = _group_elements(config, batch_size, device, "primary")
    # Each convolution keeps its input in batch-last layout; conv1's ReLU keeps its output.
    cached = (2 * n["x"] + 2 * n["conv1_out"] + n["primary_out"] + 2 * n["u"] + n["u_hat"]
              + n["couplings"] + n["decoder"])
    forward_peak = max(cols1 + 2 * n["conv1_out"], cols2 + 2 * n["primary_out"])
    routing_backward = 2 * n["routing_left"] + 2 * n["u_hat"]  # lefts, stacked; du_hat
    shared = config.share_transforms and config.n_primary > config.primary_types
    predictions_backward = n["u_hat"] + (n["u"] * config.n_classes if shared else n["u_hat"])
    primary_backward = 2 * cols2 + 2 * n["conv1_out"]  # columns and their gradient; dx
    return itemsize * (cached + max(forward_peak, routing_backward, predictions_backward,
                                    primary_backward))


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


def traffic_per_image(config):
    """Bytes per image moved by the memory-bound work of a training step.

    im2col writes the columns twice (forward, and again in backward), and the primary
    convolution's backward writes their gradient and reads it back in col2im. Routing and the predictions pass over u_hat
    about 4R + 2 times: 2R - 1 reads forward, about 2R backward, writing u_hat and its
    gradient, and the copies between layouts."""
    n = _sizes(config, 1)
    itemsize = np.dtype(config.dtype).itemsize
    R = config.routing_iters
    passes = 4 * R + 2 if config.routing_grad == "full" else 2 * R + 3
    elements = (2 * n["conv1_cols"] + 4 * n["primary_cols"] + passes * n["u_hat"]
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


def _cnn_plan(config, batch_size, device):
    """The CNN baseline's plan, by the same accounting as the CapsNet's: each convolution
    keeps its padded batch-last input, its output and ReLU output (plus the pooled output
    and its int64 winners); the largest transient is a column group with the output it
    makes, a backward pass's columns, their gradient and dx (not in the first layer, which
    needs no dx), or a pooling backward (window gradients and dx). FLOPs: the convolutions
    and FC layers."""
    B, k, pad = batch_size, config.kernel_size, config.kernel_size // 2
    itemsize = np.dtype(config.dtype).itemsize
    budget = COLUMN_BYTES["cupy" if device == "gpu" else "numpy"] // itemsize
    cached = transient = conv_flops = traffic = 0
    for n, (C, K, H, W, pooled) in enumerate(_cnn_layers(config)):
        out = K * H * W
        pooled_out = out // 4 if pooled else 0
        cached += C * (H + 2 * pad) * (W + 2 * pad) + 2 * out + 3 * pooled_out
        row = C * k * H * W * B
        cols = max(1, min(k, budget // row)) * row
        backward = 2 * cols + 2 * C * (H + 2 * pad) * (W + 2 * pad) * B if n else cols
        transient = max(transient, cols + 2 * out * B, backward, 6 * out * B)
        conv_flops += 2 * K * C * k * k * H * W
        traffic += 2 * C * k * k * H * W + 8 * out
    shapes = config.param_shapes()
    fc_flops = sum(2 * int(np.prod(s)) for name, s in shapes.items()
                   if name.startswith("fc") and name.endswith(".w"))
    n = config.n_params()
    forward = conv_flops + fc_flops
    return Plan(n_params=n, param_bytes=4 * n * itemsize,
                activation_bytes=itemsize * (cached * B + transient),
                flops_forward=float(forward), flops_train=float(3 * forward),
                gemm_flops_train=float(3 * forward), traffic_bytes=float(traffic * itemsize),
                batch_size=batch_size)


def plan(config, batch_size, device="cpu"):
    """The Plan of a training step of `config` (a CapsNetConfig or CNNConfig)."""
    if kind_of(config) == "cnn":
        return _cnn_plan(config, batch_size, device)
    n = config.n_params()
    itemsize = np.dtype(config.dtype).itemsize
    forward, train = flops_per_image(config)
    f = _flop_parts(config)
    gemm = 3 * (f["conv1"] + f["primary"] + f["decoder"]) - f["conv1"]
    return Plan(n_params=n, param_bytes=4 * n * itemsize,
                activation_bytes=activation_bytes(config, batch_size, device),
                flops_forward=forward, flops_train=train, gemm_flops_train=float(gemm),
                traffic_bytes=traffic_per_image(config), batch_size=batch_size)


def available_bytes(device):
    """Memory a step may use: free GPU memory, or the host's available memory."""
    if device == "gpu":
        from .backend import require_gpu
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
    capped)."""
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
