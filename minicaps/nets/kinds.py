"""The kinds of network minicaps trains, by the name checkpoints and `train --model` use.

    net = build("cnn", CNNConfig(...), params=None, seed=0, device="cpu")

A checkpoint stores its network's kind beside the config, so `evaluate` and `predict`
rebuild whichever network was trained.
"""

from .cnn import CNNConfig, PoolingCNN
from ..errors import MinicapsError
from ..option import unknown_names
from .capsnet import CapsNet, CapsNetConfig
from .emcapsnet import EMCapsNet, EMCapsNetConfig

KINDS = {"capsnet": (CapsNetConfig, CapsNet), "cnn": (CNNConfig, PoolingCNN),
         "em": (EMCapsNetConfig, EMCapsNet)}  # matrix capsules with EM routing
# What messages call each kind.
KIND_NAMES = {"capsnet": "capsule network (dynamic routing)", "cnn": "CNN with pooling",
              "em": "matrix capsule network (EM routing)"}


def kind_of(config):
    """The name of the network kind whose config `config` is."""
    for name, (config_class, _) in KINDS.items():
        if type(config) is config_class:
            return name
    raise MinicapsError(f"not a network configuration: {type(config).__name__}")


def _entry(kind):
    if kind not in KINDS:
        raise MinicapsError(f"unknown network kind {kind!r} (known: {', '.join(KINDS)})")
    return KINDS[kind]


def config_from_dict(kind, fields):
    """The config of a `kind` network from its fields (as dataclasses.asdict gives them)."""
    config_class, _ = _entry(kind)
    unknown = unknown_names(config_class, fields)
    if unknown:
        raise MinicapsError(f"{kind} configuration with unknown fields: {unknown}")
    return config_class(**fields)


def build(config, params=None, *, seed=0, device="cpu"):
    """The network of `config`, with `params` (e.g. a checkpoint's) or fresh ones."""
    _, network_class = _entry(kind_of(config))
    return network_class.from_config(config, params, seed=seed, device=device)
