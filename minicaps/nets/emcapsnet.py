"""EMCapsNet: matrix capsules with EM routing (Hinton, Sabour & Frosst, ICLR 2018), every
pass written out, over one dict of parameters.

    x (B, C, H, W)
    -> conv1 K x K, stride, ReLU               (B, A, g0, g0)
    -> primary capsules, 1x1                   poses (B, g0, g0, T0, 16), activations
    -> convolutional capsules, EM routing      (B, g1, g1, T1, 16), one layer per caps_types
    -> class capsules: votes through transforms shared over positions (or each
       capsule's own), coordinate addition, EM routing    activations (B, n_classes)
    -> spread loss, its margin growing from margin_start to margin_end over training

The defaults are the paper's small network for MNIST (A=64, B=8, C=D=16: 68K parameters).
The backward pass is the forward pass read in reverse (minicaps.ops.em_routing for the
routing's). Parameters: conv weights (in, kh, kw, out) as CapsNet's; a capsule layer's
transforms (types in, types out, 4, 4), a convolutional layer's types in being a field's
(row, column, type) flattened (and the class layer's, with its own transforms, the last
grid's (row, column, type)), and beta_u, beta_a (types out,).

The spread loss's margin depends on how far training has got, which the network does not
know: the trainer tells it with set_training_progress(fraction) before each step (until it
does, the margin stays at margin_start).
"""
from dataclasses import dataclass

import numpy as np

from ..backend import get_array_module
from ..errors import MinicapsError
from ..ops.conv import conv2d_backward, conv2d_forward, output_size
from ..fast.dispatch import em_routing_backward, em_routing_forward
from ..ops.em_routing import EM_GRADS, inverse_temperatures
from ..ops.layers import relu_backward, relu_forward
from ..ops.losses import spread_loss_backward, spread_loss_forward, spread_margin
from ..ops.matrix_capsules import (POSE, Windows, coordinate_addition_backward,
                                   coordinate_addition_forward, primary_backward,
                                   primary_forward, receptive_field_centres, votes_backward,
                                   votes_forward, windows_backward, windows_forward)
from ..option import option
from .network import (Network, NetworkConfig, check_input_options, contrast_window_option,
                      fan_in_uniform, in_shape_option, input_channels, n_classes_option)

H = POSE * POSE
# Transforms' initial std. A vote entry sums 4 products, so std 0.5 would keep votes at the
# poses' scale, but the primary poses start small and the cost's log sigma then starts far
# below 0: the class activations began on the logistic's flat top. With 2 the votes spread
# by 0.5 to 2 on the bundled sample, log sigma starts near 0, activations near 1/2.
TRANSFORM_STD = 2.0


@dataclass(frozen=True)
class EMCapsNetConfig(NetworkConfig):
    """Everything that fixes the network's shape and behaviour. Defaults: the paper's small
    MNIST network (A=64, B=8, C=D=16)."""
    in_shape: tuple = in_shape_option()
    n_classes: int = n_classes_option()
    conv_channels: int = option(64, "A: channels of the ReLU convolution.", minimum=1)
    kernel_size: int = option(5, "Kernel size of the ReLU convolution.", minimum=1)
    conv_stride: int = option(2, "Stride of the ReLU convolution.", minimum=1)
    primary_types: int = option(8, "B: primary capsule types (a 1x1 convolution).", minimum=1)
    caps_types: tuple = option((16, 16), "Types of each convolutional capsule layer (C, D).",
                               minimum=1)
    caps_kernel: int = option(3, "K: kernel of the convolutional capsule layers.", minimum=1)
    caps_strides: tuple = option((2, 1), "Stride of each convolutional capsule layer.",
                                 minimum=1)
    # Three iterations collapsed parents onto single children in our first runs
    # (docs/studies/em.md), hence two.
    routing_iters: int = option(2, "EM iterations in every capsule layer.", minimum=1)
    routing_grad: str = option("full", "Backpropagate through every M- and E-step, or hold "
                                       "the last assignments constant.", choices=EM_GRADS)
    lambda_first: float = option(0.01, "Inverse temperature of the first M-step.",
                                 minimum=0, min_open=True)
    lambda_last: float = option(0.01, "Inverse temperature of the last M-step (linear "
                                      "between).", minimum=0, min_open=True)
    coordinate_addition: bool = option(True, "Add each class vote's scaled receptive-field "
                                             "centre to its pose's right-hand column.")
    # Own transforms: what the dynamic-routing logo network needed (docs/studies/logos.md):
    # a small logo's few capsules, among hundreds of background ones, vote through
    # transforms of their own positions. On logo corners they fit a few examples far
    # faster, but did not keep the full run from calling every corner nologo (em.md).
    share_class_transforms: bool = option(
        True, "One class transform per capsule type of the last grid, shared by its "
              "positions (the paper's), or one per capsule.")
    margin_start: float = option(0.2, "The spread loss's margin at the start of training.",
                                 minimum=0, maximum=1)
    margin_end: float = option(0.9, "The spread loss's margin at the end of training.",
                               minimum=0, maximum=1)
    # Per-channel input statistics, (x - mean) / std before the convolution (None: raw
    # pixels); set by training from its data (train --standardize).
    input_mean: tuple = None
    input_std: tuple = None
    contrast_window: int = contrast_window_option()
    dtype: str = "float32"  # float32 to train, float64 to check gradients

    def __post_init__(self):
        for name in ("in_shape", "caps_types", "caps_strides"):  # JSON gives lists
            object.__setattr__(self, name, tuple(int(n) for n in getattr(self, name)))
        check_input_options(self)
        if self.routing_grad not in EM_GRADS:
            raise MinicapsError(f"routing_grad must be one of {EM_GRADS}, "
                                f"not {self.routing_grad!r}")
        if self.dtype not in ("float32", "float64"):
            raise MinicapsError(f"dtype must be float32 or float64, not {self.dtype!r}")
        for name in ("n_classes", "conv_channels", "kernel_size", "conv_stride",
                     "primary_types", "caps_kernel", "routing_iters"):
            if getattr(self, name) < 1:
                raise MinicapsError(f"{name} must be at least 1, not {getattr(self, name)}")
        if len(self.caps_types) != len(self.caps_strides) or \
                min(self.caps_types + self.caps_strides, default=1) < 1:
            raise MinicapsError("caps_types and caps_strides need one positive entry per "
                                "convolutional capsule layer")
        if self.lambda_first <= 0 or self.lambda_last <= 0:
            raise MinicapsError("the inverse temperatures must be positive")
        if not 0 <= self.margin_start <= 1 or not 0 <= self.margin_end <= 1:
            raise MinicapsError("the spread loss's margins must lie in [0, 1]")
        gh, gw = self.grids[-1]
        if gh < 1 or gw < 1:
            raise MinicapsError(f"input {self.in_shape[1]}x{self.in_shape[2]} is too small "
                                f"for the convolution and {len(self.caps_types)} capsule layers")

    def _layers(self):
        """(kernel, stride) of every layer before the class capsules."""
        return [(self.kernel_size, self.conv_stride), (1, 1),
                *((self.caps_kernel, s) for s in self.caps_strides)]

    @property
    def grids(self):
        """(gh, gw) of the primary capsules and of each convolutional capsule layer."""
        _, h, w = self.in_shape
        grids = []
        for kernel, stride in self._layers():
            h, w = output_size(h, kernel, stride, 0), output_size(w, kernel, stride, 0)
            grids.append((h, w))
        return grids[1:]

    @property
    def types(self):
        """Capsule types of the primary layer and of each convolutional capsule layer."""
        return (self.primary_types, *self.caps_types)

    def class_coordinates(self):
        """(rows, cols): the scaled receptive-field centres of the last capsule grid."""
        _, h, w = self.in_shape
        return (receptive_field_centres(h, self._layers()),
                receptive_field_centres(w, self._layers()))

    def inverse_temperatures(self):
        return inverse_temperatures(self.routing_iters, self.lambda_first, self.lambda_last)

    def param_shapes(self):
        A, B = self.conv_channels, self.primary_types
        K = self.caps_kernel
        shapes = {"conv1.w": (input_channels(self), self.kernel_size, self.kernel_size, A),
                  "conv1.b": (A,), "primary.w": (A, 1, 1, B * (H + 1)),
                  "primary.b": (B * (H + 1),)}
        layers = [(f"convcaps{n + 1}", K * K * t_in, t_out) for n, (t_in, t_out)
                  in enumerate(zip(self.types[:-1], self.types[1:]))]
        gh, gw = self.grids[-1]
        class_in = self.types[-1] * (1 if self.share_class_transforms else gh * gw)
        layers.append(("class", class_in, self.n_classes))
        for name, t_in, t_out in layers:
            shapes[f"{name}.w"] = (t_in, t_out, POSE, POSE)
            shapes[f"{name}.beta_u"] = (t_out,)
            shapes[f"{name}.beta_a"] = (t_out,)
        return shapes

    @staticmethod
    def conv_weight_names():
        """The parameters that are convolution weights, (in, kh, kw, out)."""
        return ("conv1.w", "primary.w")


def _layer_paths(paths, layer):
    """The dict em_routing_backward records `layer`'s gradient paths in (None: none)."""
    return None if paths is None else paths.setdefault(layer, {})


def init_params(config, seed=0):
    """Host arrays from a seeded generator. Convolutions: uniform in +-1/sqrt(fan_in)
    (PyTorch's default), biases likewise; transforms normal with TRANSFORM_STD; betas 0."""
    rng = np.random.default_rng(seed)
    shapes = config.param_shapes()
    params = {}
    for name, shape in shapes.items():
        if name.endswith(".w") and len(shape) == 4 and shape[-2:] == (POSE, POSE):
            p = rng.normal(0.0, TRANSFORM_STD, shape)
        elif ".beta_" in name:
            p = np.zeros(shape)
        else:
            p = fan_in_uniform(rng, shapes, name)
        params[name] = p.astype(config.dtype)
    return params


class EMCapsNet(Network):
    """Matrix capsules with EM routing. `net.params` maps stable names to arrays;
    `loss_and_grads` returns gradients under the same names; nothing is updated in place."""

    init_params = staticmethod(init_params)
    loss_term_names = ("spread",)
    progress = 0.0  # how far training has got, 0..1: sets the spread loss's margin

    def __init__(self, *, seed=0, device="cpu", **config_fields):
        config = EMCapsNetConfig(**config_fields)
        self._build(config, init_params(config, seed), device)

    def set_training_progress(self, fraction):
        """Tell the network how far training has got (0 at the first step, 1 at the last)."""
        self.progress = float(fraction)

    @property
    def margin(self):
        return spread_margin(self.progress, self.config.margin_start, self.config.margin_end)

    def _route(self, votes, activations, name, children=None):
        p, cfg = self.params, self.config
        return em_routing_forward(votes, activations, p[f"{name}.beta_u"], p[f"{name}.beta_a"],
                                  inverse_temperatures=cfg.inverse_temperatures(),
                                  children=children, grad=cfg.routing_grad)

    def _conv_caps(self, poses, activations, n):
        """Convolutional capsule layer n (from 1): poses (B, gh, gw, T, H) and activations
        (B, gh, gw, T) to the next grid's, each output position routing from its field."""
        cfg = self.config
        B, gh, gw, T, _ = poses.shape
        K, stride = cfg.caps_kernel, cfg.caps_strides[n - 1]
        name = f"convcaps{n}"
        field_poses, poses_cache = windows_forward(poses, kernel=K, stride=stride)
        field_acts, acts_cache = windows_forward(activations, kernel=K, stride=stride)
        _, oh, ow = field_acts.shape[:3]
        P, I = oh * ow, K * K * T
        votes, votes_cache = votes_forward(field_poses.reshape(B, P, I, H),
                                           self.params[f"{name}.w"])  # (B, P, J, I, H)
        children = Windows(grid=(gh, gw), types=T, kernel=K, stride=stride)
        (out_poses, out_acts), routing_cache = self._route(
            votes, field_acts.reshape(B, P, I), name, children)  # (B, P, J, H), (B, P, J)
        J = out_acts.shape[-1]
        caches = (poses_cache, acts_cache, votes_cache, routing_cache, field_poses.shape)
        return (out_poses.reshape(B, oh, ow, J, H), out_acts.reshape(B, oh, ow, J)), caches

    def _conv_caps_backward(self, dposes, dacts, caches, n, grads, paths):
        poses_cache, acts_cache, votes_cache, routing_cache, field_shape = caches
        B, oh, ow, J = dacts.shape
        name = f"convcaps{n}"
        dvotes, dfield_acts, grads[f"{name}.beta_u"], grads[f"{name}.beta_a"] = \
            em_routing_backward((dposes.reshape(B, oh * ow, J, H),
                                 dacts.reshape(B, oh * ow, J)), routing_cache,
                                _layer_paths(paths, name))
        dfield_poses, grads[f"{name}.w"] = votes_backward(dvotes, votes_cache)
        return (windows_backward(dfield_poses.reshape(field_shape), poses_cache),
                windows_backward(dfield_acts.reshape(field_shape[:-1]), acts_cache))

    def _class_caps(self, poses, activations):
        """Class capsules: every capsule of the last grid votes for every class through
        its type's transform (or its own: votes_forward shares a transform over the
        positions that the transforms' first axis does not count); activations
        (B, n_classes)."""
        cfg = self.config
        B, gh, gw, T, _ = poses.shape
        votes, votes_cache = votes_forward(poses.reshape(B, 1, gh * gw * T, H),
                                           self.params["class.w"])  # (B, 1, J, I, H)
        if cfg.coordinate_addition:
            rows, cols = cfg.class_coordinates()
            votes, _ = coordinate_addition_forward(votes, rows=rows, cols=cols)
        (_, out_acts), routing_cache = self._route(
            votes, activations.reshape(B, 1, gh * gw * T), "class")
        return out_acts[:, 0], (votes_cache, routing_cache, poses.shape)

    def _class_caps_backward(self, dacts, caches, grads, paths):
        votes_cache, routing_cache, poses_shape = caches
        B, J = dacts.shape
        # The class capsules' poses reach no loss: their gradient is zero.
        dposes_out = get_array_module(dacts).zeros((B, 1, J, H), dtype=dacts.dtype)
        dvotes, dacts_in, grads["class.beta_u"], grads["class.beta_a"] = \
            em_routing_backward((dposes_out, dacts[:, None]), routing_cache,
                                _layer_paths(paths, "class"))
        if self.config.coordinate_addition:
            dvotes = coordinate_addition_backward(dvotes, None)
        dposes, grads["class.w"] = votes_backward(dvotes, votes_cache)
        return dposes.reshape(poses_shape), dacts_in.reshape(poses_shape[:-1])

    def _capsules(self, x):
        """Class activations (B, n_classes) of a prepared batch, with the caches."""
        p = self.params
        h, conv_cache = conv2d_forward(self._prepared(x), p["conv1.w"], p["conv1.b"],
                                       stride=self.config.conv_stride)
        h, relu_cache = relu_forward(h)  # (B, A, g0, g0)
        (poses, acts), primary_cache = primary_forward(h, p["primary.w"], p["primary.b"],
                                                       types=self.config.primary_types)
        caps_caches = []
        for n in range(1, len(self.config.caps_types) + 1):
            (poses, acts), cache = self._conv_caps(poses, acts, n)
            caps_caches.append(cache)
        activations, class_cache = self._class_caps(poses, acts)
        return activations, (conv_cache, relu_cache, primary_cache, caps_caches, class_cache)

    def _forward_loss(self, x, y):
        """Loss, its parts (the spread term and the class activations), and the caches."""
        activations, caps_caches = self._capsules(self._as_input(x))
        loss, spread_cache = spread_loss_forward(activations, self._as_labels(y),
                                                 margin=self.margin)
        return loss, {"spread": loss, "lengths": activations}, \
            {"capsules": caps_caches, "spread": spread_cache}

    def _backward(self, caches, paths=None):
        grads = {}
        conv_cache, relu_cache, primary_cache, caps_caches, class_cache = caches["capsules"]
        dacts = spread_loss_backward(1.0, caches["spread"])
        dposes, dacts = self._class_caps_backward(dacts, class_cache, grads, paths)
        for n in range(len(caps_caches), 0, -1):
            dposes, dacts = self._conv_caps_backward(dposes, dacts, caps_caches[n - 1], n,
                                                     grads, paths)
        dh, grads["primary.w"], grads["primary.b"] = primary_backward((dposes, dacts),
                                                                      primary_cache)
        dh = relu_backward(dh, relu_cache)
        _, grads["conv1.w"], grads["conv1.b"] = conv2d_backward(dh, conv_cache, need_dx=False)
        return grads

    def routing_gradient_paths(self, x, y):
        """How the loss's gradient reaches each routing layer's votes on this batch:
        {(layer, "m-step" | "e-step", t): norm}, through M-step t's means and variances
        directly and through E-step t's assignments (minicaps.ops.em_routing's paths);
        layers "convcaps1", ..., "class"."""
        _, _, caches = self._forward_loss(self._as_input(x), y)
        by_layer = {}
        self._backward(caches, by_layer)
        return {(layer, kind, t): norm for layer, paths in by_layer.items()
                for (kind, t), norm in paths.items()}

    def _kinks(self, caches):
        """Sides of conv1's ReLU units and of the spread loss's hinges, by group."""
        _, hinge = caches["spread"]
        return {"conv1 ReLU": caches["capsules"][1] > 0, "spread hinges": hinge > 0}

    def predict(self, x):
        """Class-capsule activations (B, n_classes): the network's confidence in each class."""
        return self._capsules(self._as_input(x))[0]

    def class_capsules(self, x):
        """The class activations (B, n_classes) and the class capsules' routing cache (a
        minicaps.ops.em_routing.EMRoutingCache: each kept M-step's votes, assignments and
        input activations); CapsNet.class_capsules' counterpart."""
        activations, caches = self._capsules(self._as_input(x))
        _, routing_cache, _ = caches[-1]
        return activations, routing_cache
