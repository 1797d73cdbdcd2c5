"""CapsNet: the paper's network with every pass written out, over one dict of parameters.

    x (B, C, H, W)
    -> conv1, ReLU                          (B, conv_channels, H1, W1)
    -> primary capsules, squash             u (B, I, D),  I = primary_types * gh * gw
    -> predictions u_hat = W u              (B, J, I, E)
    -> dynamic routing                      v (B, J, E)
    -> lengths |v|, margin loss
    -> decoder on v masked to one class     (B, C*H*W), reconstruction loss

The backward pass is the forward pass read in reverse. Parameters are laid out inputs
first: conv weights (in, kh, kw, out), the decoder's linear weights (in, out).

The ops with a fast path (the convolutions, the capsule ops, routing) are called through
minicaps/fast/dispatch.py, which runs each one's reference in minicaps/ops or a substitute
with the same inputs and outputs; the others come from minicaps/ops directly.
"""
from dataclasses import dataclass

import numpy as np

from ..backend import get_array_module
from ..errors import MinicapsError
from ..fast import dispatch  # the convolutions, capsule ops and routing, fast or reference
from ..ops.capsules import length_backward, length_forward
from ..ops.conv import output_size
from ..ops.layers import (linear_backward, linear_forward, relu_backward, relu_forward,
                          sigmoid_backward, sigmoid_forward)
from ..ops.losses import (margin_loss_backward, margin_loss_forward, one_hot,
                          reconstruction_loss_backward, reconstruction_loss_forward)
from ..ops.routing import ROUTING_GRADS, gradient_path_norms
from ..option import check, option
from .network import (Network, NetworkConfig, check_input_options, contrast_window_option,
                      fan_in_uniform, in_shape_option, input_channels, n_classes_option)

DECODER_WIDTHS = (512, 1024)


@dataclass(frozen=True)
class CapsNetConfig(NetworkConfig):
    """Everything that fixes the network's shape and behaviour. Defaults: the paper's MNIST net.
    Each option is declared here once (minicaps/option.py): the command line and the
    training options take their help and range from these declarations."""
    in_shape: tuple = in_shape_option()
    n_classes: int = n_classes_option()
    conv_channels: int = option(256, "Channels of the first convolution.", minimum=1)
    kernel_size: int = option(9, "Kernel size of both convolutions.", minimum=1)
    conv_stride: int = option(1, "Stride of the first convolution.", minimum=1)
    primary_types: int = option(32, "Primary capsule types.", minimum=1)
    primary_dim: int = option(8, "Dimension of a primary capsule.", minimum=1)
    primary_stride: int = option(2, "Stride of the primary capsules' convolution.", minimum=1)
    class_dim: int = option(16, "Dimension of a class capsule.", minimum=1)
    routing_iters: int = option(3, "Routing iterations.", minimum=1)
    routing_grad: str = option("full", "Backpropagate through every routing iteration, or "
                                       "the last one only.", choices=ROUTING_GRADS)
    share_transforms: bool = option(
        False, "One transformation matrix per primary capsule type and class, shared by all "
               "grid positions (far fewer weights, no sense of where a part is; a run on R&S "
               "crops had learnt nothing after 5 epochs), or one per primary capsule (the "
               "paper's).",
        flag="--share-transforms/--own-transforms")
    # Input capsules that belong to no class (background) can route to this parent instead
    # of lengthening a class capsule; it takes no part in the loss or the predictions.
    none_capsule: bool = option(
        False, "An extra routing parent for input capsules of no class (background): 'none "
               "of the above', as the paper used for CIFAR-10; no loss reaches it.")
    reconstruction: bool = option(True, "With the reconstruction decoder, or without it.")
    # Per-channel statistics the input is standardised with, (x - mean) / std, before conv1
    # (None: the paper's raw [0, 1] pixels). Photographs need it: on the logo crops a net
    # fed raw pixels learnt far slower than a standardised one. The decoder still
    # reconstructs the raw pixels. Set by training from its data (train --standardize).
    input_mean: tuple = None
    input_std: tuple = None
    contrast_window: int = contrast_window_option()
    dtype: str = "float32"

    def __post_init__(self):
        object.__setattr__(self, "in_shape", tuple(int(n) for n in self.in_shape))
        check_input_options(self)
        check(self)
        if self.dtype not in ("float32", "float64"):
            raise MinicapsError(f"dtype must be float32 or float64, not {self.dtype!r}")
        gh, gw = self.grid
        if gh < 1 or gw < 1:
            raise MinicapsError(
                f"input {self.in_shape[1]}x{self.in_shape[2]} is too small for two "
                f"{self.kernel_size}x{self.kernel_size} convolutions")

    @property
    def conv1_size(self):
        _, H, W = self.in_shape
        k, s = self.kernel_size, self.conv_stride
        return output_size(H, k, s, 0), output_size(W, k, s, 0)

    @property
    def grid(self):
        """(gh, gw): the primary capsules' grid."""
        h1, w1 = self.conv1_size
        k, s = self.kernel_size, self.primary_stride
        return output_size(h1, k, s, 0), output_size(w1, k, s, 0)

    @property
    def n_parents(self):
        """Routing parents: the classes, and the none-of-the-above capsule if any."""
        return self.n_classes + int(self.none_capsule)

    @property
    def n_primary(self):
        """I, the number of primary capsules."""
        gh, gw = self.grid
        return self.primary_types * gh * gw

    def param_shapes(self):
        C, H, W = self.in_shape
        k, K = self.kernel_size, self.conv_channels
        TD = self.primary_types * self.primary_dim
        shapes = {
            "conv1.w": (input_channels(self), k, k, K), "conv1.b": (K,),
            "primary.w": (K, k, k, TD), "primary.b": (TD,),
            "caps.w": (self.primary_types if self.share_transforms else self.n_primary,
                       self.n_parents, self.class_dim, self.primary_dim),
        }
        if self.reconstruction:
            widths = (self.n_classes * self.class_dim, *DECODER_WIDTHS, C * H * W)
            for n, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
                shapes[f"decoder.{n}.w"] = (n_in, n_out)
                shapes[f"decoder.{n}.b"] = (n_out,)
        return shapes

    @staticmethod
    def conv_weight_names():
        """The parameters that are convolution weights, (in, kh, kw, out)."""
        return ("conv1.w", "primary.w")


def init_params(config, seed=0):
    """Host arrays from a seeded generator: the same weights whatever the device.

    Convolutions and linear layers: uniform in +-1/sqrt(fan_in) (PyTorch's default);
    biases likewise. Capsule transforms W_ij: normal with std 0.01, small enough that the
    class capsules start short and the margin loss pulls the true one up.
    """
    rng = np.random.default_rng(seed)
    shapes = config.param_shapes()
    params = {}
    for name, shape in shapes.items():
        if name == "caps.w":
            p = rng.normal(0.0, 0.01, shape)
        else:
            p = fan_in_uniform(rng, shapes, name)
        params[name] = p.astype(config.dtype)
    return params


class CapsNet(Network):
    """The capsule network. `net.params` maps stable names to arrays; `loss_and_grads`
    returns gradients under the same names; nothing is updated in place."""

    config_class = CapsNetConfig
    init_params = staticmethod(init_params)
    loss_term_names = ("margin", "reconstruction")

    def _capsules(self, x):
        """The class capsules v (B, J, E) of a prepared batch, with the caches for backward.
        Feature maps stay batch-last (C, H, W, B) from conv1 to the primary capsules."""
        p, cfg = self.params, self.config
        xt = dispatch.to_batch_last(self._prepared(x))  # (C, H, W, B)
        h, conv_cache = dispatch.conv2d_forward_batch_last(xt, p["conv1.w"], p["conv1.b"],
                                                           stride=cfg.conv_stride)
        h, relu_cache = relu_forward(h)  # (conv_channels, H1, W1, B)
        u, primary_cache = dispatch.primary_capsules_forward(
            h, p["primary.w"], p["primary.b"], types=cfg.primary_types,
            stride=cfg.primary_stride)  # (B, I, D)
        u_hat, pred_cache = dispatch.predictions_forward(u, p["caps.w"])  # (B, J', I, E)
        v, routing_cache = dispatch.routing_forward(u_hat, iters=cfg.routing_iters,
                                                    grad=cfg.routing_grad)  # (B, J', E)
        v = v[:, :cfg.n_classes]  # (B, J, E): without the none-of-the-above capsule
        return v, (conv_cache, relu_cache, primary_cache, pred_cache, routing_cache)

    def _capsules_backward(self, dv, caches, grads):
        """Backward from the class capsules to conv1, taking the capsule caches out of the
        dict `caches`. Routing's cache and the predictions' are dropped as soon as they
        have been used, and so is du_hat: u_hat and du_hat (B x J x I x E each, the largest
        arrays of a step) are then freed before the primary capsules' backward allocates
        its columns."""
        conv_cache, relu_cache, primary_cache, pred_cache, routing_cache = caches.pop("capsules")
        du_hat = dispatch.routing_backward(self._all_parents(dv), routing_cache)
        del routing_cache
        du, grads["caps.w"] = dispatch.predictions_backward(du_hat, pred_cache)
        del du_hat, pred_cache
        dh, grads["primary.w"], grads["primary.b"] = dispatch.primary_capsules_backward(
            du, primary_cache)
        dh = relu_backward(dh, relu_cache)
        _, grads["conv1.w"], grads["conv1.b"] = dispatch.conv2d_backward_batch_last(
            dh, conv_cache, need_dx=False)

    def _decode(self, v, mask):
        """Reconstruction (B, C*H*W) from v (B, J, E) with all capsules but `mask`'s zeroed."""
        p = self.params
        z = (v * mask[:, :, None]).reshape(v.shape[0], -1)  # (B, J*E)
        caches = []
        n_layers = len(DECODER_WIDTHS) + 1
        for n in range(n_layers):
            z, lin_cache = linear_forward(z, p[f"decoder.{n}.w"], p[f"decoder.{n}.b"])
            act = relu_forward if n < n_layers - 1 else sigmoid_forward
            z, act_cache = act(z)
            caches.append((lin_cache, act_cache))
        return z, caches

    def _decode_backward(self, drecon, caches, mask, grads):
        dz = drecon
        n_layers = len(caches)
        for n in range(n_layers - 1, -1, -1):
            lin_cache, act_cache = caches[n]
            act_backward = relu_backward if n < n_layers - 1 else sigmoid_backward
            dz = act_backward(dz, act_cache)
            dz, grads[f"decoder.{n}.w"], grads[f"decoder.{n}.b"] = linear_backward(dz, lin_cache)
        B, J = mask.shape
        return dz.reshape(B, J, -1) * mask[:, :, None]  # (B, J, E)

    def _forward_loss(self, x, y):
        """Loss, its parts (terms and class-capsule lengths), and the caches of backward."""
        x = self._as_input(x)
        y = self._as_labels(y)
        v, caps_caches = self._capsules(x)
        lengths, length_cache = length_forward(v)  # (B, J)
        margin, margin_cache = margin_loss_forward(lengths, y)
        loss, parts = margin, {"margin": margin, "lengths": lengths}
        caches = {"capsules": caps_caches, "length": length_cache, "margin": margin_cache}
        if self.config.reconstruction:
            mask = one_hot(y, self.config.n_classes, v.dtype)
            recon, caches["decoder"] = self._decode(v, mask)
            recon_loss, caches["reconstruction"] = reconstruction_loss_forward(
                recon, x.reshape(x.shape[0], -1))
            loss = loss + recon_loss
            parts["reconstruction"] = recon_loss
            caches["mask"] = mask
        return loss, parts, caches

    def _class_capsule_grad(self, caches, grads):
        """dv (B, J, E): the loss's gradient at the class capsules (decoder grads go to
        `grads` on the way)."""
        dv = length_backward(margin_loss_backward(1.0, caches["margin"]), caches["length"])
        if self.config.reconstruction:
            drecon = reconstruction_loss_backward(1.0, caches["reconstruction"])
            dv = dv + self._decode_backward(drecon, caches["decoder"], caches["mask"], grads)
        return dv

    def _backward(self, caches):
        grads = {}
        dv = self._class_capsule_grad(caches, grads)
        self._capsules_backward(dv, caches, grads)
        return grads

    def routing_gradient_paths(self, x, y):
        """How the loss's gradient reaches u_hat on this batch: {("sum" | "agreement", r):
        norm}, through each iteration's weighted sum and through the coupling coefficients
        (see routing.gradient_path_norms)."""
        _, _, caches = self._forward_loss(x, y)
        dv = self._class_capsule_grad(caches, {})
        return gradient_path_norms(self._all_parents(dv), caches["capsules"][-1])

    def _all_parents(self, dv):
        """dv (B, J, E) extended by a zero gradient for the none-of-the-above capsule,
        which no loss reaches: (B, J', E)."""
        if not self.config.none_capsule:
            return dv
        xp = get_array_module(dv)
        return xp.concatenate([dv, xp.zeros_like(dv[:, :1])], axis=1)

    def _kinks(self, caches):
        """Sides of conv1's and the decoder's ReLU units and of the margin loss's hinges,
        by group. Each class has one hinge that counts: m+ for the true class, m- for the
        others (the other term is multiplied by 0)."""
        true, present, absent = caches["margin"]
        xp = get_array_module(true)
        kinks = {"conv1 ReLU": caches["capsules"][1] > 0,
                 "margin hinges": xp.where(true > 0, present > 0, absent > 0)}
        for n, (_, act_cache) in enumerate(caches.get("decoder", [])[:-1]):
            kinks[f"decoder.{n} ReLU"] = act_cache > 0
        return kinks

    def class_capsules(self, x):
        """The class capsules v (B, n_classes, class_dim) and the routing cache (a
        minicaps.ops.routing.RoutingCache: `couplings` holds the coupling coefficients of
        each iteration kept for backward)."""
        v, caches = self._capsules(self._as_input(x))
        return v, caches[-1]

    def predict(self, x):
        """Class-capsule lengths (B, n_classes): the network's confidence in each class."""
        v, _ = self._capsules(self._as_input(x))
        return length_forward(v)[0]

    def reconstruct(self, v, classes):
        """The decoder's image (B, C, H, W) of class capsules v masked to `classes` (B,)."""
        if not self.config.reconstruction:
            raise MinicapsError("this network was built without the reconstruction decoder")
        xp = get_array_module(v)
        mask = one_hot(xp.asarray(classes), self.config.n_classes, v.dtype)
        recon, _ = self._decode(v, mask)
        return recon.reshape(v.shape[0], *self.config.in_shape)
