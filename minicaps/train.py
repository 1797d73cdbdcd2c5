"""The training loop: data, a seeded validation split, augmented batches, the optimizer,
per-epoch scores and checkpoints, and exact resumption.

    result = run(TrainConfig(epochs=5, out="runs/mnist"), progress=print_event)

`run` reports through `progress(kind, **info)`: "start" (summary lines), "epoch_start"
(epoch, steps), "step" (done), "epoch" (the epoch's metrics dict). Nothing here prints.

Reproducibility: the weights come from `seed`, the validation split from (seed, 1), and
every shuffle and augmentation from one generator seeded with (seed, 2), whose state is
saved with each checkpoint. A run resumed from `last.npz` therefore sees the same batches
as one never interrupted, and ends with bitwise the same parameters.
"""
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import checkpoint
from .augment import augment
from .backend import get_array_module, require_gpu, to_host
from .data import RSCrop, detect_layout, load_dataset
from .errors import MinicapsError
from .epochs import epoch_order, epoch_size
from .evaluate import NOLOGO, evaluate, with_nologo
from .model import CapsNet, CapsNetConfig
from .optim import SGD, Adam, ExponentialDecay
from .plan import check_fits

ARCH_FIELDS = ("conv_channels", "kernel_size", "conv_stride", "primary_types", "primary_dim",
               "primary_stride", "class_dim")
# The paper's network trains at ~30 images/s on two CPU cores: an hour per epoch of MNIST.
# The bundled sample gets a narrower one (fewer conv channels and primary capsule types)
# that trains ~13x faster and still reaches ~98 % in 8 epochs; any architecture option
# overrides it.
BUNDLED_ARCH = dict(conv_channels=64, primary_types=8)
GPU_CHECK_EVERY = 50  # steps between loss checks on the GPU (each check is a device sync)


@dataclass(frozen=True)
class TrainConfig:
    """Every option of a training run. Architecture fields left None take the paper's
    values, or BUNDLED_ARCH's when training on the bundled sample (data None)."""
    data: str = None  # dataset path; None: the MNIST sample bundled with minicaps
    out: str = "runs/train"
    device: str = "cpu"
    epochs: int = 8
    batch_size: int = 64
    lr: float = 3e-3
    lr_decay: float = 0.95  # learning rate factor per epoch (applied smoothly every step)
    optimizer: str = "adam"
    seed: int = 0
    val_fraction: float = 0.1
    shift: int = 2
    flip: bool = False
    rotate: float = 0.0
    scale_jitter: float = 0.0  # random zoom by up to 1 +- this (training only)
    colour_jitter: float = 0.0  # random contrast, brightness, colour gains (training only)
    blur: float = 0.0  # fraction of training images blurred
    balance: bool = False  # draw each epoch's examples with equal weight per class
    nologo_ratio: float = None  # R&S: nologo examples per logo example in an epoch (None: all)
    nologo_capsule: bool = True  # False: no capsule for nologo; it means "no capsule present"
    init_length: float = None  # median class-capsule length at the start (None: caps.w std 0.01)
    limit: int = None
    routing_iters: int = 3
    routing_grad: str = "full"
    share_transforms: bool = False
    none_capsule: bool = False  # a routing parent for background (see CapsNetConfig)
    standardize: bool = False  # feed conv1 (x - mean) / std per channel of the training data
    reconstruction: bool = True
    conv_channels: int = None
    kernel_size: int = None
    conv_stride: int = None
    primary_types: int = None
    primary_dim: int = None
    primary_stride: int = None
    class_dim: int = None
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
        return cls(**d)

    @property
    def crop(self):
        return RSCrop(corners=tuple(self.crop_corners), width=self.crop_width,
                      height=self.crop_height, scale=self.crop_scale, grey=self.crop_grey)


@dataclass
class Split:
    x: np.ndarray
    y: np.ndarray
    frame: np.ndarray = None  # (N,) frame index of each example, or None
    frame_y: np.ndarray = None  # (F,) labels of the frames those indices refer to


def load_data(config):
    return load_dataset(config.data, rs_crop=config.crop, merge_variants=config.merge_variants,
                        limit=config.limit)


def model_config(config, dataset):
    """The CapsNetConfig of a run on `dataset`."""
    base = BUNDLED_ARCH if config.data is None else {}
    n_classes = dataset.n_classes
    if not config.nologo_capsule and NOLOGO in dataset.classes:
        if dataset.classes[-1] != NOLOGO:
            raise MinicapsError(f"without a nologo capsule, {NOLOGO!r} must be the last class")
        n_classes -= 1  # nologo examples train every capsule towards absent
    arch = {f: getattr(config, f) if getattr(config, f) is not None
            else base.get(f, getattr(CapsNetConfig, f)) for f in ARCH_FIELDS}
    return CapsNetConfig(in_shape=dataset.in_shape, n_classes=n_classes,
                         routing_iters=config.routing_iters, routing_grad=config.routing_grad,
                         share_transforms=config.share_transforms,
                         none_capsule=config.none_capsule,
                         reconstruction=config.reconstruction,
                         **(channel_statistics(dataset.train_x) if config.standardize else {}),
                         **arch)


def channel_statistics(x, sample=4096):
    """{"input_mean", "input_std"}: per-channel mean and standard deviation of uint8 images
    (B, C, H, W) in [0, 1] units, from an evenly spaced sample of at most `sample` images."""
    picked = x[::max(1, len(x) // sample)].astype(np.float64) / 255
    return {"input_mean": tuple(picked.mean(axis=(0, 2, 3))),
            "input_std": tuple(np.maximum(picked.std(axis=(0, 2, 3)), 1e-3))}


def split_validation(ds, fraction, seed):
    """(train, val, test) Splits. The validation part is a seeded `fraction` of each class of
    the training data; for frame data whole frames are held out, so their corners stay together."""
    rng = np.random.default_rng([seed, 1])
    whole = ds.train_frame_y if ds.train_frame is not None else ds.train_y  # units to split
    held = np.zeros(len(whole), bool)
    for c in np.unique(whole):
        members = rng.permutation(np.flatnonzero(whole == c))
        held[members[:int(round(fraction * len(members)))]] = True
    in_val = held[ds.train_frame] if ds.train_frame is not None else held

    def part(mask):
        frame = ds.train_frame[mask] if ds.train_frame is not None else None
        return Split(ds.train_x[mask], ds.train_y[mask], frame, ds.train_frame_y)
    test = Split(ds.test_x, ds.test_y, ds.test_frame, ds.test_frame_y)
    return part(~in_val), part(in_val), test


def make_optimizer(config, params, steps_per_epoch):
    schedule = ExponentialDecay(config.lr, rate=config.lr_decay, steps=steps_per_epoch)
    if config.optimizer == "adam":
        return Adam(params, schedule=schedule)
    if config.optimizer == "sgd":
        return SGD(params, momentum=0.9, schedule=schedule)
    raise MinicapsError(f"optimizer must be adam or sgd, not {config.optimizer!r}")


def _scores(net, split, config, classes, prefix):
    if not len(split.y):
        return {f"{prefix}_accuracy": None}
    ev = evaluate(net, split.x, split.y, batch_size=max(config.batch_size, 256),
                  frame=split.frame, frame_y=split.frame_y, classes=classes)
    out = {f"{prefix}_accuracy": ev.accuracy}
    if ev.frame_accuracy is not None:
        out[f"{prefix}_frame_accuracy"] = ev.frame_accuracy
    return out


def _score(record):
    """What best.npz is chosen by: validation frame accuracy for frame data, else accuracy."""
    return record.get("val_frame_accuracy", record.get("val_accuracy"))


def _finite(params):
    return all(bool(get_array_module(p).isfinite(p).all()) for p in params.values())


def calibrate_transforms(net, x, target, rounds=4):
    """Scale caps.w so that the median class-capsule length on the images x is about
    `target`. With the paper's std 0.01 the logo net's capsules start ~0.01 long, where the
    squash is flat (|v| ~ |s|^2) and barely passes gradient; they died there. s is linear in
    caps.w in the first routing iteration, so each round rescales by the ratio of the wanted
    |s| to the median one (|v| = n^2 / (1 + n^2)); later iterations make a few rounds
    necessary. Deterministic: no random numbers drawn."""
    want = math.sqrt(target / (1 - target))  # |s| whose squash has length target
    for _ in range(rounds):
        median = float(np.median(to_host(net.predict(x))))
        if not 0 < median < 1:
            break
        net.params["caps.w"] *= want / math.sqrt(median / (1 - median))


def train_epoch(net, opt, train, config, rng, progress, epoch, nologo, n_classes):
    """One pass over the shuffled, augmented training split; (mean loss, accuracy). Loss and
    hits are summed on the device and read back every `check_every` steps, where a
    non-finite loss stops the run before anything is saved."""
    order = epoch_order(train.y, rng, config.balance, nologo, config.nologo_ratio)
    n, B = len(order), config.batch_size
    steps = math.ceil(n / B)
    check_every = 1 if config.device == "cpu" else GPU_CHECK_EVERY
    loss_sum = hits = 0
    progress("epoch_start", epoch=epoch, steps=steps)
    for step in range(steps):
        idx = order[step * B:(step + 1) * B]
        xb = augment(train.x[idx], rng, max_shift=config.shift, hflip=config.flip,
                     max_degrees=config.rotate, max_scale=config.scale_jitter,
                     colour=config.colour_jitter, blur_p=config.blur)
        loss, grads, parts = net.loss_and_grads(xb, train.y[idx], return_parts=True)
        xp = get_array_module(loss)
        loss_sum = loss_sum + loss * len(idx)
        lengths = with_nologo(parts["lengths"], n_classes)  # (B, classes)
        hits = hits + (lengths.argmax(axis=1) == xp.asarray(train.y[idx])).sum()
        if (step + 1) % check_every == 0 or step + 1 == steps:
            if not math.isfinite(float(loss_sum)):
                raise MinicapsError(
                    f"the loss became {float(loss_sum)} in epoch {epoch} (by step {step + 1} "
                    f"of {steps}); training stopped, the last good checkpoint is kept "
                    f"(try a lower --lr than {config.lr:g})")
        opt.step(grads)
        progress("step", done=1)
    return float(loss_sum) / n, float(hits) / n


def _write_metrics(path, history):
    """metrics.jsonl rewritten from the checkpoint's history (atomic, like the checkpoint)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in history))
    os.replace(tmp, path)


def run(config, progress=None, dataset=None):
    """Train as `config` says, writing <out>/last.npz, best.npz and metrics.jsonl after every
    epoch; returns the list of per-epoch metrics. `dataset` replaces loading config.data.
    Refuses an <out> that already holds a run: `resume` continues one."""
    progress = progress or (lambda kind, **info: None)
    return _run(config, progress, dataset, resume=False)


def resume(out, *, epochs=None, device="cpu", progress=None, dataset=None):
    """Continue the run stored in <out>/last.npz up to `epochs` in total (default: its own)."""
    ckpt = checkpoint.load(Path(out) / "last.npz")
    stored = TrainConfig.from_json(ckpt.train_config)
    config = dataclasses.replace(stored, out=str(out), device=device,
                                 epochs=stored.epochs if epochs is None else epochs)
    return _run(config, progress or (lambda kind, **info: None), dataset, resume=ckpt)


def stored_config(out):
    """The TrainConfig of the run in <out>/last.npz."""
    return TrainConfig.from_json(checkpoint.load(Path(out) / "last.npz").train_config)


def _run(config, progress, dataset, resume):
    if config.device == "gpu":
        require_gpu()
    out = Path(config.out)
    if not resume and (out / "last.npz").exists():
        raise MinicapsError(f"{out} already holds a run (last.npz): continue it with --resume, "
                            f"or train into another --out")
    ds = dataset if dataset is not None else load_data(config)
    layout = "dataset" if dataset is not None else detect_layout(config.data)
    if ds.train_frame is not None:
        layout = "rs"
    mconfig = model_config(config, ds)
    if resume and (mconfig != resume.model_config or ds.classes != resume.classes):
        raise MinicapsError(f"{out}/last.npz was trained on other data or another network "
                            "than the options describe")
    check_fits(mconfig, config.batch_size, config.device)
    train, val, test = split_validation(ds, config.val_fraction, config.seed)
    if not len(train.y):
        raise MinicapsError("no training examples left after the validation split")
    nologo = ds.classes.index(NOLOGO) if NOLOGO in ds.classes else None
    n_epoch = epoch_size(train.y, nologo, config.nologo_ratio)
    steps_per_epoch = math.ceil(n_epoch / config.batch_size)
    net = CapsNet.from_config(mconfig, resume.params if resume else None, seed=config.seed,
                              device=config.device)
    if config.init_length is not None and not resume:
        calibrate_transforms(net, train.x[:256], config.init_length)
    opt = make_optimizer(config, net.params, steps_per_epoch)
    rng = np.random.default_rng([config.seed, 2])
    history, start = [], 0
    if resume:
        opt.load_state_dict(resume.optimizer)
        rng.bit_generator.state = resume.rng_state
        history, start = list(resume.history), resume.epoch
    data_info = {"layout": layout, "name": ds.name,
                 "crop": dataclasses.asdict(config.crop) if layout == "rs" else None}
    progress("start", lines=[
        ds.summary(),
        f"split: {len(train.y)} train / {len(val.y)} validation / {len(test.y)} test examples",
        f"network: {mconfig.n_params():,} parameters, {mconfig.n_primary} primary capsules, "
        f"{config.device}" + (f"; resuming after epoch {start}" if resume else "")]
        + ([f"{out} has finished its {start} epochs: pass --epochs to train longer"]
           if start >= config.epochs else []))
    out.mkdir(parents=True, exist_ok=True)
    if resume:
        _write_metrics(out / "metrics.jsonl", history)
    best = max((_score(r) for r in history if _score(r) is not None), default=-1.0)
    elapsed0 = history[-1]["elapsed_s"] if history else 0.0
    t_start = time.perf_counter()
    for epoch in range(start + 1, config.epochs + 1):
        t0 = time.perf_counter()
        loss, acc = train_epoch(net, opt, train, config, rng, progress, epoch, nologo,
                                ds.n_classes)
        if not _finite(net.params):
            raise MinicapsError(f"the parameters became non-finite in epoch {epoch}; training "
                                f"stopped, the last good checkpoint is kept (try a lower --lr)")
        t_train = time.perf_counter() - t0
        record = {"epoch": epoch, "train_loss": loss, "train_accuracy": acc,
                  **_scores(net, val, config, ds.classes, "val"),
                  **_scores(net, test, config, ds.classes, "test"),
                  "lr": opt.lr, "images_per_s": n_epoch / t_train,
                  "epoch_s": time.perf_counter() - t0,
                  "elapsed_s": elapsed0 + time.perf_counter() - t_start}
        history.append(record)
        ckpt = checkpoint.Checkpoint(
            params=net.params, optimizer=opt.state_dict(), epoch=epoch,
            rng_state=rng.bit_generator.state, model_config=mconfig,
            train_config=config.to_json(), classes=ds.classes, history=history,
            data_info=data_info)
        score = _score(record)
        if score is not None and score > best:  # best first: a crash between the two
            best = score                          # writes leaves best.npz ahead, never behind
            checkpoint.save(out / "best.npz", ckpt)
        checkpoint.save(out / "last.npz", ckpt)
        with open(out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        progress("epoch", record=record, epochs=config.epochs)
    return history
