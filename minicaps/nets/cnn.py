"""The baseline the paper compares capsules with: a CNN with max pooling, in the same engine.

    x (B, C, H, W)
    -> [conv k x k ("same" padding), ReLU, max pool 2] for the first two conv layers
    -> conv, ReLU for the others
    -> FC hidden[0], ReLU -> FC hidden[1], ReLU -> FC n_classes, softmax cross-entropy

The paper's MNIST baseline had conv layers of 256, 256 and 128 channels (5x5) and FC
layers of 328 and 192; those are the defaults. `predict` returns softmax probabilities,
the counterpart of the capsule lengths.
"""
from dataclasses import dataclass

import numpy as np

from ..errors import MinicapsError
from ..fast import dispatch
from ..ops.layers import linear_backward, linear_forward, relu_backward, relu_forward
from ..ops.losses import softmax_cross_entropy_backward, softmax_cross_entropy_forward
from .network import (Network, NetworkConfig, check_input_options, contrast_window_option,
                      fan_in_uniform, in_shape_option, input_channels, n_classes_option)
from ..option import check, option
from ..ops.pooling import maxpool_backward, maxpool_forward

POOLED_LAYERS = 2  # max pooling after the first two convolutions


@dataclass(frozen=True)
class CNNConfig(NetworkConfig):
    """The CNN's shape; defaults: the paper's MNIST baseline. Options declared as
    CapsNetConfig's are."""
    in_shape: tuple = in_shape_option()
    n_classes: int = n_classes_option()
    channels: tuple = option((256, 256, 128), "Channels of its convolutions (max pooling "
                                              "after the first two).", minimum=1)
    kernel_size: int = option(5, "Kernel size of its convolutions (odd).", minimum=1)
    hidden: tuple = option((328, 192), "Widths of its hidden fully connected layers.",
                           minimum=1)
    input_mean: tuple = None  # per-channel input statistics, as CapsNetConfig's
    input_std: tuple = None
    contrast_window: int = contrast_window_option()
    dtype: str = "float32"

    def __post_init__(self):
        for name in ("in_shape", "channels", "hidden"):
            object.__setattr__(self, name, tuple(int(n) for n in getattr(self, name)))
        check_input_options(self)
        check(self)
        if not self.channels:
            raise MinicapsError("the CNN needs at least one convolution")
        if self.kernel_size % 2 == 0:
            raise MinicapsError("the CNN's kernel size must be odd (for 'same' padding)")
        h, w = self.feature_size
        if h < 1 or w < 1:
            raise MinicapsError(f"input {self.in_shape[1]}x{self.in_shape[2]} is too small "
                                f"for {min(POOLED_LAYERS, len(self.channels))} poolings")

    @property
    def feature_size(self):
        _, H, W = self.in_shape
        pools = min(POOLED_LAYERS, len(self.channels))
        return H // 2 ** pools, W // 2 ** pools

    def param_shapes(self):
        shapes, c_in, k = {}, input_channels(self), self.kernel_size
        for n, c_out in enumerate(self.channels):
            shapes[f"conv{n}.w"], shapes[f"conv{n}.b"] = (c_in, k, k, c_out), (c_out,)
            c_in = c_out
        h, w = self.feature_size
        widths = (c_in * h * w, *self.hidden, self.n_classes)
        for n, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
            shapes[f"fc{n}.w"], shapes[f"fc{n}.b"] = (n_in, n_out), (n_out,)
        return shapes

    def conv_weight_names(self):
        """The parameters that are convolution weights, (in, kh, kw, out)."""
        return tuple(f"conv{n}.w" for n in range(len(self.channels)))


def init_cnn_params(config, seed=0):
    """Uniform in +-1/sqrt(fan_in), weights and biases (PyTorch's default), host arrays."""
    rng = np.random.default_rng(seed)
    shapes = config.param_shapes()
    return {name: fan_in_uniform(rng, shapes, name).astype(config.dtype) for name in shapes}


class PoolingCNN(Network):
    """A CNN with max pooling: the same params/loss_and_grads/predict interface as CapsNet."""

    config_class = CNNConfig
    init_params = staticmethod(init_cnn_params)
    loss_term_names = ("cross_entropy",)

    def _logits(self, x):
        p, cfg = self.params, self.config
        caches, h = [], self._prepared(x)
        for n in range(len(cfg.channels)):
            h, conv_cache = dispatch.conv2d_forward(h, p[f"conv{n}.w"], p[f"conv{n}.b"],
                                           pad=cfg.kernel_size // 2)
            h, relu_cache = relu_forward(h)
            pool_cache = None
            if n < POOLED_LAYERS:
                h, pool_cache = maxpool_forward(h, size=2)
            caches.append((conv_cache, relu_cache, pool_cache))
        feature_shape = h.shape
        h = h.reshape(h.shape[0], -1)  # (B, C*h*w)
        n_fc = len(cfg.hidden) + 1
        for n in range(n_fc):
            h, lin_cache = linear_forward(h, p[f"fc{n}.w"], p[f"fc{n}.b"])
            relu_cache = None
            if n < n_fc - 1:
                h, relu_cache = relu_forward(h)
            caches.append((lin_cache, relu_cache))
        return h, (caches, feature_shape)

    def _forward_loss(self, x, y):
        logits, (caches, feature_shape) = self._logits(self._as_input(x))
        loss, ce_cache = softmax_cross_entropy_forward(logits, self._as_labels(y))
        parts = {"cross_entropy": loss, "lengths": ce_cache[0]}  # probabilities as scores
        return loss, parts, (caches, feature_shape, ce_cache)

    def _backward(self, all_caches):
        caches, feature_shape, ce_cache = all_caches
        n_conv = len(self.config.channels)
        grads = {}
        dh = softmax_cross_entropy_backward(1.0, ce_cache)
        for n in range(len(caches) - n_conv - 1, -1, -1):
            lin_cache, relu_cache = caches[n_conv + n]
            if relu_cache is not None:
                dh = relu_backward(dh, relu_cache)
            dh, grads[f"fc{n}.w"], grads[f"fc{n}.b"] = linear_backward(dh, lin_cache)
        dh = dh.reshape(feature_shape)
        for n in range(n_conv - 1, -1, -1):
            conv_cache, relu_cache, pool_cache = caches[n]
            if pool_cache is not None:
                dh = maxpool_backward(dh, pool_cache)
            dh = relu_backward(dh, relu_cache)
            dh, grads[f"conv{n}.w"], grads[f"conv{n}.b"] = dispatch.conv2d_backward(
                dh, conv_cache, need_dx=n > 0)
        return grads

    def _kinks(self, all_caches):
        """Sides of every ReLU unit, and which entry wins each pooling window, by layer."""
        caches, _, _ = all_caches
        n_conv = len(self.config.channels)
        kinks = {}
        for n, (_, relu_cache, pool_cache) in enumerate(caches[:n_conv]):
            kinks[f"conv{n} ReLU"] = relu_cache > 0
            if pool_cache is not None:
                kinks[f"conv{n} max pooling"] = pool_cache[0]  # argmax of each window
        for n, (_, relu_cache) in enumerate(caches[n_conv:]):
            if relu_cache is not None:
                kinks[f"fc{n} ReLU"] = relu_cache > 0
        return kinks

    def predict(self, x):
        """Softmax probabilities (B, n_classes)."""
        logits, _ = self._logits(self._as_input(x))
        return dispatch.softmax(logits, axis=1)
