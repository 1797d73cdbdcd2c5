"""What every network of minicaps shares: a params dict built from a config, a device,
batch preparation, and the loss interface the trainer and the gradient checker use.

A subclass provides `_forward_loss(x, y) -> (loss, parts, caches)`, `_backward(caches)
-> grads` (which may consume the caches, freeing each as it goes), `predict(x)`, and
`_kinks(caches)` (the sides of its non-smooth points, by group).
"""
import numpy as np

from ..backend import device_of, get_array_module, to_device, to_host
from ..ops.contrast import check_window, local_contrast
from ..errors import MinicapsError
from ..option import option


class NetworkConfig:
    """What every network config shares: the parameter count of its `param_shapes()`."""

    def n_params(self):
        return sum(int(np.prod(s)) for s in self.param_shapes().values())


def fan_in_uniform(rng, shapes, name):
    """A conv or linear parameter drawn uniformly in +-1/sqrt(fan_in) of its layer
    (PyTorch's default, for weights and biases alike). Conv weights are (in, kh, kw, out),
    linear weights (in, out): fan_in is all but the last axis. `shapes` holds the layer's
    weight under name[:-1] + "w".

    Conv weights are drawn in PyTorch's order, out first, and then moved into minicaps'
    layout: a seed makes the same network as it did before the layout changed (and as
    PyTorch's layout would), so earlier runs can be repeated exactly."""
    shape = shapes[name]
    bound = 1 / np.sqrt(int(np.prod(shapes[name[:-1] + "w"][:-1])))
    if len(shape) != 4:
        return rng.uniform(-bound, bound, shape)
    drawn = rng.uniform(-bound, bound, (shape[-1], *shape[:-1]))
    return np.ascontiguousarray(np.moveaxis(drawn, 0, -1))


def in_shape_option():
    """The input's shape, as every network's config declares it."""
    return option((1, 28, 28), "Input channels, height, width.", minimum=1, length=3,
                  metavar="C,H,W")


def n_classes_option():
    return option(10, "Classes.", minimum=1)


def contrast_window_option():
    """Local contrast channels (ops/contrast.py), as every network's config declares them."""
    return option(0, "Also feed the network each channel's local contrast over windows of "
                     "this odd size: x minus its local mean, over the local size of that "
                     "difference (minicaps/ops/contrast.py). It shows faint logos on any "
                     "photograph (0: off).", minimum=0)


def check_input_options(config):
    """Validate and normalise a config's input options: input_mean/input_std (per-channel
    tuples of floats, both or neither, std positive) and contrast_window; call from the
    config's __post_init__."""
    check_window(config.contrast_window)
    for name in ("input_mean", "input_std"):
        stats = getattr(config, name)
        if stats is not None:
            stats = tuple(float(s) for s in stats)
            if len(stats) != config.in_shape[0]:
                raise MinicapsError(f"{name} needs one value per input channel "
                                    f"({config.in_shape[0]}), not {len(stats)}")
            object.__setattr__(config, name, stats)
    if (config.input_mean is None) != (config.input_std is None) or \
            (config.input_std is not None and min(config.input_std) <= 0):
        raise MinicapsError("input_mean and input_std go together, std positive")


def input_channels(config):
    """Channels the first convolution sees: the image's, and as many again of local
    contrast when the config has a contrast_window."""
    return config.in_shape[0] * (2 if config.contrast_window else 1)


class Network:
    """`params` maps stable names to arrays; `loss_and_grads` returns gradients under the
    same names; nothing is updated in place. The config is a frozen dataclass with
    `param_shapes()`, `in_shape`, `n_classes`, `dtype`, `input_mean`, `input_std` and
    `contrast_window`; `init_params(config, seed)` is the subclass's initialiser."""

    config_class = None  # set by each subclass: its config dataclass
    init_params = None  # set by each subclass: (config, seed) -> dict of host arrays

    def __init__(self, *, seed=0, device="cpu", **options):
        """A fresh net of the config that `options` (its config's fields) describe."""
        config = self.config_class(**options)
        self._build(config, type(self).init_params(config, seed), device)

    @classmethod
    def from_config(cls, config, params=None, *, seed=0, device="cpu"):
        """A net of `config` with the given parameters (e.g. from a checkpoint) or fresh ones."""
        net = cls.__new__(cls)
        net._build(config, type(net).init_params(config, seed) if params is None else params,
                   device)
        return net

    def _build(self, config, params, device):
        expected = config.param_shapes()
        if set(params) != set(expected) or any(tuple(params[n].shape) != expected[n]
                                                for n in expected):
            raise MinicapsError("the parameters do not match the network's configuration")
        self.config = config
        self.params = {name: to_device(params[name], device).astype(config.dtype, copy=False)
                       for name in expected}

    @property
    def device(self):
        return device_of(next(iter(self.params.values())))

    def to(self, device):
        """Move the parameters to 'cpu' or 'gpu' (CuPy); returns the net."""
        self.params = {name: to_device(p, device) for name, p in self.params.items()}
        return self

    def _as_input(self, x):
        """x as an array of the net's dtype on the net's device (host batches move over)."""
        xp = get_array_module(next(iter(self.params.values())))
        x = xp.asarray(x)
        if x.dtype == np.uint8:  # raw pixels: scale to [0, 1]
            x = x.astype(self.config.dtype) / 255
        x = x.astype(self.config.dtype, copy=False)
        if x.ndim != 4 or tuple(x.shape[1:]) != self.config.in_shape:
            raise MinicapsError(f"input batch has shape {tuple(x.shape)}, the net expects "
                                f"(B, {', '.join(map(str, self.config.in_shape))})")
        return x

    def _prepared(self, x):
        """What the first layer sees of pixels x in [0, 1]: (x - input_mean) / input_std per
        channel (x itself when the config has no statistics), followed, when the config has
        a contrast_window, by the local contrast of each channel (minicaps/ops/contrast.py).
        No gradient is ever needed with respect to the input."""
        cfg = self.config
        xp = get_array_module(x)
        shape = (1, -1, 1, 1)
        prepared = x if cfg.input_mean is None else \
            ((x - xp.asarray(cfg.input_mean, dtype=x.dtype).reshape(shape))
             / xp.asarray(cfg.input_std, dtype=x.dtype).reshape(shape))
        if cfg.contrast_window:
            prepared = xp.concatenate([prepared, local_contrast(x, cfg.contrast_window)],
                                      axis=1)
        return prepared

    def _as_labels(self, y):
        xp = get_array_module(next(iter(self.params.values())))
        return xp.asarray(y).astype(np.int64)

    def set_training_progress(self, fraction):
        """How far training has got (0 at the first step, 1 at the last): the trainer says
        it before every step, for a network whose loss follows a schedule (EMCapsNet's
        spread-loss margin). Most networks' losses do not."""

    def loss(self, x, y):
        """The total loss alone (no backward pass)."""
        return self._forward_loss(x, y)[0]

    def loss_terms(self, x, y, *, with_kinks=False):
        """The loss's terms (a dict of 0-d arrays), no backward pass.

        Finite differences take each term apart: a small term's gradients would drown in
        the rounding of a large term's value. with_kinks also returns which side of its
        kink every non-smooth unit sits on, as bytes by group ({"conv1 ReLU": ...}): a
        step that changes them crossed a kink and proves nothing."""
        _, parts, caches = self._forward_loss(x, y)
        terms = {name: t for name, t in parts.items() if name in self.loss_term_names}
        if not with_kinks:
            return terms
        return terms, {group: to_host(sides).tobytes()
                       for group, sides in self._kinks(caches).items()}

    def loss_and_grads(self, x, y, *, return_parts=False):
        """Total loss (a 0-d array on the net's device) and the gradient of every
        parameter. With return_parts, also a dict of the loss terms and the class scores
        (for logging without a second forward pass)."""
        loss, parts, caches = self._forward_loss(x, y)
        grads = self._backward(caches)
        grads = {name: grads[name] for name in self.params}  # the params' order
        return (loss, grads, parts) if return_parts else (loss, grads)
