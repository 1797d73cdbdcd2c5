"""The options of a training run (TrainConfig), each declared once, and the network config
that a run trains on a dataset (model_config).

An option left out of a TrainConfig takes the value of its data's preset
(training/presets.py: the bundled sample's, the R&S frames'), else its declared default.
`minicaps train` passes on only the options a user gave, so the command line and
`run(TrainConfig(...))` train the same network from the same data.
"""
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data import RSCrop
from ..data.rs import CORNERS, FRAME_H, FRAME_W
from ..errors import MinicapsError
from ..nets.kinds import KINDS
from ..option import declaration, declared, default_of, option_name, unknown_names
from .augment import RECOMPRESS_QUALITY
from .frames import capsule_count
from .presets import SAMPLE_DEFAULTS, preset_values


class _Unset:
    def __repr__(self):
        return "UNSET"


UNSET = _Unset()  # an option left out, until TrainConfig.__post_init__ gives it its value


def setting(default, help, **cli):
    """A TrainConfig option: left out, it takes its data's preset value, else `default`."""
    return field(default=UNSET, metadata=declaration(default, help, **cli))


def network_option(kinds, name, flag=None):
    """A TrainConfig option that is the option `name` of the networks of `kinds` (one kind
    or several, nets/kinds.py), as their config declares it, under `flag` where the
    command line's --name/--no-name would read badly. The help of an option of one kind
    other than the capsule network's names that kind ("CNN: ...")."""
    kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    source = next(f for f in dataclasses.fields(KINDS[kinds[0]][0]) if f.name == name)
    meta = dict(source.metadata, kinds=kinds, network_field=name,
                **({"flag": flag} if flag else {}))
    if kinds != ("capsnet",) and len(kinds) == 1:
        text = meta["help"]  # "Kernel size" reads "kernel size"; "A: ...", "EM ..." stay
        lead = text[0].lower() if text[1:2].islower() else text[0]
        meta["help"] = f"{kinds[0].upper()}: {lead}{text[1:]}"
    return field(default=UNSET, metadata=meta)


CAPSULES_ONLY = ("capsnet",)


@dataclass(frozen=True)
class TrainConfig:
    """Every option of a training run. After construction every field holds a value: the
    one given, else its data's preset's, else its declared default. dataclasses.replace
    keeps the values of the config it copies: for other data, build a new TrainConfig."""
    data: str = setting(
        None, "Dataset: MNIST idx folder, class folders, R&S challenge folder or .npz. "
              "Default: the bundled 5,000-image MNIST sample.", path="existing")
    out: str = setting(
        None, "Run folder for last.npz, best.npz, metrics.jsonl (unset: runs/<data name>, "
              "or runs/<data name>-<model> for a model other than capsnet).", path="folder")
    model: str = setting(
        "capsnet", "A capsule network with dynamic routing, the baseline CNN with max "
                   "pooling (its --cnn-* options), or matrix capsules with EM routing (its "
                   "--em-* options); the capsule network's options do not apply to the "
                   "other two.", choices=tuple(KINDS))
    device: str = "cpu"  # or "gpu" (CuPy)
    epochs: int = setting(8, "Epochs in total.", minimum=1)
    batch_size: int = setting(64, "Images per step.", minimum=1)
    lr: float = setting(3e-3, "Learning rate.", minimum=0, min_open=True)
    lr_decay: float = setting(0.95, "Learning-rate factor per epoch (applied smoothly every "
                                    "step).", minimum=0, maximum=1, min_open=True)
    optimizer: str = setting("adam", "Adam, or SGD with momentum 0.9.", choices=("adam", "sgd"))
    average_epochs: float = setting(
        0.0, "Score (and keep as best.npz) a running average of the weights over about this "
             "many recent epochs; training itself goes on unchanged. 0: off.", minimum=0)
    seed: int = setting(0, "Seed of weights, split, shuffles, augmentation.")
    test_every: int = setting(
        1, "Score the test split after every this many epochs and after the last (0: after "
           "the last only); each scoring is a pass over the test split.", minimum=0)
    val_fraction: float = setting(
        0.1, "Fraction of the training data held out for validation (chooses best.npz).",
        minimum=0, maximum=0.5, max_open=True)
    limit: int = setting(None, "At most this many examples (R&S: frames) per split, "
                               "class-balanced.", minimum=1)
    pad: int = setting(0, "Background pixels added on every side of every image (training "
                          "and test), e.g. 6 puts MNIST in 40x40 for the affNIST-style test.",
                       minimum=0)
    shift: int = setting(2, "Random shifts up to this many pixels (training only; the "
                            "paper's 2).", minimum=0)
    scale_jitter: float = setting(0.0, "Random zoom by a factor up to 1 + this or down to "
                                       "1 / (1 + this) (training only).", minimum=0, maximum=1)
    colour_jitter: float = setting(
        0.0, "Random contrast and brightness (+-this) and colour gains (+-half of it) per "
             "image (training only).", minimum=0, maximum=1)
    blur: float = setting(0.0, "Fraction of training images blurred by a 3x3 binomial filter.",
                          minimum=0, maximum=1)
    recompress: float = setting(
        0.0, "Fraction of training images written as JPEG at a quality of "
             f"{RECOMPRESS_QUALITY[0]}-{RECOMPRESS_QUALITY[1] - 1} and read back; R&S crops at "
             "the frame's scale.", minimum=0, maximum=1)
    background_swap: float = setting(
        0.0, "R&S layout: fraction of training corners put on another photograph (training "
             "only): a logo corner's logo box is pasted into a logo-free training corner; a "
             "logo-free corner gets a patch of another one, in a logo-sized box.",
        minimum=0, maximum=1)
    logo_scale: float = setting(
        1.0, "R&S layout: a logo the background swap pastes is shrunk by a factor drawn from "
             "this..1 (1: never) and placed between its box's centre and the corner nearest the "
             "frame's: logos smaller than the training frames'.",
        minimum=0.1, maximum=1)
    logo_recolour: float = setting(
        0.0, "R&S layout: fraction of logo corners whose logo pixels (found inside its box) "
             "get other colours (hue turned, inverted, grey or one colour), faded towards the "
             "photograph behind them.",
        minimum=0, maximum=1)
    text_distractors: float = setting(
        0.0, "R&S layout: fraction of training corners given random text: beside the logo "
             "(as an \"HD\" or a region), or anywhere in a corner without one (as a "
             "programme's title, plain, shadowed or outlined); labels unchanged.",
        minimum=0, maximum=1)
    flip: bool = setting(False, "Random horizontal flips (training only).", flag="--flip")
    nologo_ratio: float = setting(
        None, "R&S layout: each epoch shows every logo corner once and this many nologo "
              "corners per logo corner, drawn afresh (all of them if unset).", minimum=0)
    nologo_capsule: bool = setting(
        True, "R&S layout: a class capsule for nologo, or none: then a corner is nologo when "
              "no channel's capsule is longer than 0.5, and nologo corners train every "
              "capsule towards absent.", kinds=CAPSULES_ONLY)
    init_length: float = setting(
        None, "Scale the initial capsule transforms so the median class-capsule length on "
              "the first training images is this (unset: std 0.01, the paper's).",
        minimum=0, maximum=1, min_open=True, max_open=True, kinds=CAPSULES_ONLY)
    balance: bool = setting(
        False, "Draw training examples with equal weight per class (with replacement), e.g. "
               "for R&S corners, most of which show no logo.", flag="--balance")
    rotate: float = setting(0.0, "Random rotations up to this many degrees (training only).",
                            minimum=0, maximum=180)
    routing_iters: int = network_option("capsnet", "routing_iters")
    routing_grad: str = network_option("capsnet", "routing_grad")
    reconstruction: bool = network_option("capsnet", "reconstruction")
    standardize: bool = setting(
        False, "Feed the network (x - mean) / std per channel, from the training data "
               "(stored in the checkpoint), or raw [0, 1] pixels as the paper.",
        flag="--standardize/--raw-pixels")
    contrast_window: int = network_option(("capsnet", "cnn", "em"), "contrast_window")
    none_capsule: bool = network_option("capsnet", "none_capsule")
    share_transforms: bool = network_option("capsnet", "share_transforms")
    conv_channels: int = network_option("capsnet", "conv_channels")
    kernel_size: int = network_option("capsnet", "kernel_size")
    conv_stride: int = network_option("capsnet", "conv_stride")
    primary_types: int = network_option("capsnet", "primary_types")
    primary_dim: int = network_option("capsnet", "primary_dim")
    primary_stride: int = network_option("capsnet", "primary_stride")
    class_dim: int = network_option("capsnet", "class_dim")
    cnn_channels: tuple = network_option("cnn", "channels")
    cnn_kernel_size: int = network_option("cnn", "kernel_size")
    cnn_hidden: tuple = network_option("cnn", "hidden")
    em_conv_channels: int = network_option("em", "conv_channels")
    em_kernel_size: int = network_option("em", "kernel_size")
    em_conv_stride: int = network_option("em", "conv_stride")
    em_primary_types: int = network_option("em", "primary_types")
    em_caps_types: tuple = network_option("em", "caps_types")
    em_caps_kernel: int = network_option("em", "caps_kernel")
    em_caps_strides: tuple = network_option("em", "caps_strides")
    em_routing_iters: int = network_option("em", "routing_iters")
    em_routing_grad: str = network_option("em", "routing_grad")
    em_lambda_first: float = network_option("em", "lambda_first")
    em_lambda_last: float = network_option("em", "lambda_last")
    em_coordinate_addition: bool = network_option("em", "coordinate_addition")
    em_share_class_transforms: bool = network_option(
        "em", "share_class_transforms",
        flag="--em-share-class-transforms/--em-own-class-transforms")
    em_margin_start: float = network_option("em", "margin_start")
    em_margin_end: float = network_option("em", "margin_end")
    # The crop of R&S frames: the three corners where the challenge's logos are (the two
    # top ones alone miss n24; the bottom right holds almost none), at three quarters of
    # the frame's size: at half size a channel's smaller renderings (a disc after "ARD",
    # "GOLD" in a disc) were a few pixels high, and unseen marks were lost (docs/studies/
    # logo_shift.md, "Finer crops").
    crop_corners: tuple = setting(("tl", "tr", "bl"), "R&S layout: corners cut from each "
                                                      "frame.", choices=CORNERS)
    crop_width: int = setting(192, f"R&S layout: crop width in frame pixels (of {FRAME_W}).",
                              minimum=1, maximum=FRAME_W)
    crop_height: int = setting(96, f"R&S layout: crop height in frame pixels (of {FRAME_H}).",
                               minimum=1, maximum=FRAME_H)
    crop_scale: float = setting(0.75, "R&S layout: resize factor of each crop.",
                                minimum=0, maximum=4, min_open=True)
    crop_grey: bool = setting(False, "R&S layout: greyscale crops instead of RGB.",
                              flag="--crop-grey")
    merge_variants: bool = setting(
        True, "R&S layout: keep logo variants (e.g. sat1-werbung) as classes of their own.",
        flag="--no-merge-variants")

    def __post_init__(self):
        if self.data is not UNSET and self.data is not None:  # absolute: evaluate finds it
            data = Path(self.data)  # from any folder
            object.__setattr__(self, "data", str(data.resolve() if data.exists() else data))
        options = declared(TrainConfig)
        left_out = [f for f in options if getattr(self, f.name) is UNSET]
        model = self.model if self.model is not UNSET else default_of(TrainConfig, "model")
        preset = (preset_values(None if self.data is UNSET else self.data, model)
                  if left_out else {})
        for f in left_out:
            object.__setattr__(self, f.name, preset.get(f.name, f.metadata["default"]))
        for f in options:  # JSON gives lists
            if f.type is tuple and isinstance(getattr(self, f.name), list):
                object.__setattr__(self, f.name, tuple(getattr(self, f.name)))
        if self.out is None:
            object.__setattr__(self, "out", default_out(self.data, self.model))

    def to_json(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, stored):
        """The TrainConfig of a checkpoint (to_json's dict), as it was trained. An option
        it lacks predates the option: it had the declared default. Before every option was
        resolved here, checkpoints stored None for network options left out: the
        bundled sample's values on the bundled sample, else the declared defaults. An
        option this version does not have is refused, whatever its value: this version
        cannot tell whether the run it describes is the one it would train or score."""
        values = dict(stored)
        unknown = unknown_names(cls, values)
        if unknown:
            raise MinicapsError("the checkpoint was trained with options this version of "
                                f"minicaps does not have ({', '.join(unknown)}): it was "
                                "written by another version")
        before = SAMPLE_DEFAULTS if values.get("data") is None else {}
        for f in declared(cls):
            default = f.metadata["default"]
            if f.name not in values or (values[f.name] is None and default is not None):
                values[f.name] = before.get(f.name, default)
        return cls(**values)

    @property
    def crop(self):
        return RSCrop(corners=tuple(self.crop_corners), width=self.crop_width,
                      height=self.crop_height, scale=self.crop_scale, grey=self.crop_grey)


def refuse_other_kinds_options(model, given):
    """Options that shape only other kinds of network than `model` are refused rather than
    ignored: one error naming those in `given` ({name: value}, as the command line gave
    them; names that are not TrainConfig's are skipped)."""
    kinds = {f.name: f.metadata["kinds"] for f in declared(TrainConfig) if "kinds" in f.metadata}
    foreign = [option_name(TrainConfig, name, value) for name, value in given.items()
               if model not in kinds.get(name, (model,))]
    if foreign:
        raise MinicapsError(f"{', '.join(foreign)}: not an option of --model {model}")


def default_out(data, model):
    """runs/<data name>, or runs/mnist-sample for the bundled sample; -<model> added for
    another model than the capsule network."""
    if data is None:
        name = "mnist-sample"
    else:
        path = Path(data).resolve()
        name = path.stem if path.is_file() else path.name
    return f"runs/{name}" + ("" if model == "capsnet" else f"-{model}")


def model_config(config, dataset):
    """The network config of a run of `config` on `dataset`: the network options of its
    kind, the data's image shape and classes, and its input statistics if standardised."""
    if config.model not in KINDS:
        raise MinicapsError(f"model must be one of {', '.join(KINDS)}, not {config.model!r}")
    for f in declared(TrainConfig):
        kinds = f.metadata.get("kinds", (config.model,))
        if "network_field" not in f.metadata and config.model not in kinds and \
                getattr(config, f.name) != f.metadata["default"]:
            raise MinicapsError(f"{option_name(TrainConfig, f.name, getattr(config, f.name))} "
                                f"is an option of --model "
                                f"{' or '.join(kinds)}, not of {config.model}")
    network = {f.metadata["network_field"]: getattr(config, f.name)
               for f in declared(TrainConfig)
               if config.model in f.metadata.get("kinds", ()) and "network_field" in f.metadata}
    n_classes = capsule_count(dataset.classes, config.nologo_capsule)
    statistics = channel_statistics(dataset.train_x) if config.standardize else {}
    return KINDS[config.model][0](in_shape=dataset.in_shape, n_classes=n_classes,
                                  **statistics, **network)


def channel_statistics(x, sample=4096):
    """{"input_mean", "input_std"}: per-channel mean and standard deviation of uint8 images
    (B, C, H, W) in [0, 1] units, from an evenly spaced sample of at most `sample` images."""
    picked = x[::max(1, len(x) // sample)].astype(np.float64) / 255
    return {"input_mean": tuple(picked.mean(axis=(0, 2, 3))),
            "input_std": tuple(np.maximum(picked.std(axis=(0, 2, 3)), 1e-3))}
