"""The options of a training run (TrainConfig) and the network config they give for a
dataset: which kind of network, its architecture defaults, its input statistics."""
import dataclasses
from dataclasses import dataclass

import numpy as np

from ..nets.cnn import CNNConfig
from ..data import RSCrop
from ..errors import MinicapsError
from .frames import NOLOGO, capsule_count
from ..nets.capsnet import CapsNetConfig

ARCH_FIELDS = ("conv_channels", "kernel_size", "conv_stride", "primary_types", "primary_dim",
               "primary_stride", "class_dim")
# The paper's network trains at ~30 images/s on two CPU cores: an hour per epoch of MNIST.
# The bundled sample gets a narrower one (fewer conv channels and primary capsule types)
# that trains ~13x faster and still reaches ~98 % in 8 epochs; any architecture option
# overrides it.
BUNDLED_ARCH = dict(conv_channels=64, primary_types=8)
# The CNN baseline (train --model cnn): the paper's (conv 256, 256, 128 channels of 5x5,
# FC 328, 192) on given data; on the bundled sample one of about the bundled CapsNet's size
# and cost (1.3M parameters and ~30 MFLOP per image against its 2.1M and ~40 MFLOP).
PAPER_CNN = dict(cnn_channels=(256, 256, 128), cnn_kernel_size=5, cnn_hidden=(328, 192))
BUNDLED_CNN = dict(cnn_channels=(32, 64, 64), cnn_kernel_size=5, cnn_hidden=(328, 192))


@dataclass(frozen=True)
class TrainConfig:
    """Every option of a training run. Architecture fields left None take the paper's
    values, or BUNDLED_ARCH's (BUNDLED_CNN's) when training on the bundled sample."""
    data: str = None  # dataset path; None: the MNIST sample bundled with minicaps
    model: str = "capsnet"  # or "cnn": the max-pooling baseline (minicaps.networks)
    out: str = "runs/train"
    device: str = "cpu"
    epochs: int = 8
    batch_size: int = 64
    lr: float = 3e-3
    lr_decay: float = 0.95  # learning rate factor per epoch (applied smoothly every step)
    optimizer: str = "adam"
    average_epochs: float = 0.0  # score a running average of the weights over ~this many epochs
    seed: int = 0
    val_fraction: float = 0.1
    shift: int = 2
    flip: bool = False
    rotate: float = 0.0
    scale_jitter: float = 0.0  # random zoom by up to 1 +- this (training only)
    colour_jitter: float = 0.0  # random contrast, brightness, colour gains (training only)
    blur: float = 0.0  # fraction of training images blurred
    background_swap: float = 0.0  # R&S: fraction of training corners put on another photograph
    logo_scale: float = 1.0  # R&S: swapped logos shrunk by a factor drawn from this..1
    logo_recolour: float = 0.0  # R&S: fraction of logo corners whose logo is recoloured
    text_distractors: float = 0.0  # R&S: fraction of corners given text (logo_augment.py)
    balance: bool = False  # draw each epoch's examples with equal weight per class
    nologo_ratio: float = None  # R&S: nologo examples per logo example in an epoch (None: all)
    nologo_capsule: bool = True  # False: no capsule for nologo; it means "no capsule present"
    init_length: float = None  # median class-capsule length at the start (None: caps.w std 0.01)
    limit: int = None
    pad: int = 0  # background pixels added around every image (train and test) at loading
    routing_iters: int = 3
    routing_grad: str = "full"
    share_transforms: bool = False
    none_capsule: bool = False  # a routing parent for background (see CapsNetConfig)
    standardize: bool = False  # feed the net (x - mean) / std per channel of the training data
    contrast_window: int = 0  # add local contrast channels over windows of this size (0: none)
    reconstruction: bool = True
    conv_channels: int = None
    kernel_size: int = None
    conv_stride: int = None
    primary_types: int = None
    primary_dim: int = None
    primary_stride: int = None
    class_dim: int = None
    cnn_channels: tuple = None
    cnn_kernel_size: int = None
    cnn_hidden: tuple = None
    crop_corners: tuple = ("tl", "tr", "bl", "br")
    crop_width: int = 320
    crop_height: int = 140
    crop_scale: float = 0.4
    crop_grey: bool = False
    merge_variants: bool = True

    def to_json(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d):
        d = dict(d)
        d["crop_corners"] = tuple(d.get("crop_corners", cls.crop_corners))
        for name in ("cnn_channels", "cnn_hidden"):  # JSON gives lists
            if d.get(name) is not None:
                d[name] = tuple(d[name])
        return cls(**d)

    @property
    def crop(self):
        return RSCrop(corners=tuple(self.crop_corners), width=self.crop_width,
                      height=self.crop_height, scale=self.crop_scale, grey=self.crop_grey)


def model_config(config, dataset):
    """The network config (CapsNetConfig or CNNConfig) of a run on `dataset`."""
    # What every kind of network does to its input before the first layer.
    input_options = {"contrast_window": config.contrast_window,
                     **(channel_statistics(dataset.train_x) if config.standardize else {})}
    if config.model == "cnn":
        return _cnn_config(config, dataset, input_options)
    if config.model != "capsnet":
        raise MinicapsError(f"model must be capsnet or cnn, not {config.model!r}")
    base = BUNDLED_ARCH if config.data is None else {}
    n_classes = capsule_count(dataset.classes, config.nologo_capsule)
    arch = {f: getattr(config, f) if getattr(config, f) is not None
            else base.get(f, getattr(CapsNetConfig, f)) for f in ARCH_FIELDS}
    return CapsNetConfig(in_shape=dataset.in_shape, n_classes=n_classes,
                         routing_iters=config.routing_iters, routing_grad=config.routing_grad,
                         share_transforms=config.share_transforms,
                         none_capsule=config.none_capsule,
                         reconstruction=config.reconstruction,
                         **input_options, **arch)


def _cnn_config(config, dataset, input_options):
    if not config.nologo_capsule and NOLOGO in dataset.classes:
        raise MinicapsError("the CNN has a nologo output like any class: "
                            "--no-nologo-capsule is for capsule networks")
    if config.init_length is not None:
        raise MinicapsError("--init-length scales capsule transforms; the CNN has none")
    base = BUNDLED_CNN if config.data is None else PAPER_CNN
    arch = {f: getattr(config, f) if getattr(config, f) is not None else base[f]
            for f in base}
    return CNNConfig(in_shape=dataset.in_shape, n_classes=dataset.n_classes,
                     channels=arch["cnn_channels"], kernel_size=arch["cnn_kernel_size"],
                     hidden=arch["cnn_hidden"], **input_options)


def channel_statistics(x, sample=4096):
    """{"input_mean", "input_std"}: per-channel mean and standard deviation of uint8 images
    (B, C, H, W) in [0, 1] units, from an evenly spaced sample of at most `sample` images."""
    picked = x[::max(1, len(x) // sample)].astype(np.float64) / 255
    return {"input_mean": tuple(picked.mean(axis=(0, 2, 3))),
            "input_std": tuple(np.maximum(picked.std(axis=(0, 2, 3)), 1e-3))}
