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
import warnings
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import checkpoint, distributed
from .augment import augment, swap_backgrounds
from .logo_augment import recolour_logos, text_distractors
from ..backend import get_array_module, to_host
from ..data import detect_layout, load_dataset
from ..errors import MinicapsError
from .epochs import epoch_order, epoch_size, made_ahead
from .evaluate import evaluate
from . import frames
from ..nets.kinds import build, kind_of
from ..optim import SGD, Adam, ExponentialDecay, WeightAverage
from ..option import check
from ..tools.plan import check_fits
from .config import TrainConfig, model_config

GPU_CHECK_EVERY = 50  # steps between loss checks on the GPU (each check is a device sync)


@dataclass
class Split:
    x: np.ndarray
    y: np.ndarray
    frame: np.ndarray = None  # (N,) frame index of each example, or None
    frame_y: np.ndarray = None  # (F,) labels of the frames those indices refer to
    box: np.ndarray = None  # (N, 4) logo box of each example, -1s where none; or None

    def swap_sources(self):
        """(indices of the examples without a logo, the logo boxes): what the background
        swap draws from; one clear error where there is not both."""
        has_logo = self.box[:, 0] >= 0 if self.box is not None else None
        if has_logo is None or has_logo.all() or not has_logo.any():
            raise MinicapsError("--background-swap, --logo-recolour and --text-distractors "
                                "need frames with logo boxes and corners without a logo "
                                "(the R&S layout)")
        return np.flatnonzero(~has_logo), self.box[has_logo]


def load_data(config):
    return load_dataset(config.data, rs_crop=config.crop, merge_variants=config.merge_variants,
                        limit=config.limit).padded(config.pad)


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
        box = ds.train_box[mask] if ds.train_box is not None else None
        return Split(ds.train_x[mask], ds.train_y[mask], frame, ds.train_frame_y, box)
    test = Split(ds.test_x, ds.test_y, ds.test_frame, ds.test_frame_y)
    return part(~in_val), part(in_val), test


def make_optimizer(config, params, steps_per_epoch):
    schedule = ExponentialDecay(config.lr, rate=config.lr_decay, steps=steps_per_epoch)
    average_steps = WeightAverage.steps_for(config.average_epochs, steps_per_epoch) \
        if config.average_epochs else None
    if config.optimizer == "adam":
        return Adam(params, schedule=schedule, average_steps=average_steps)
    if config.optimizer == "sgd":
        return SGD(params, momentum=0.9, schedule=schedule, average_steps=average_steps)
    raise MinicapsError(f"optimizer must be adam or sgd, not {config.optimizer!r}")


def _split_scores(net, val, test, config, classes, seen, score_test=True, history=()):
    """Accuracy on the validation split, and on the test split if `score_test`; for frame
    data also the frame accuracy, at the threshold frames.best_threshold chooses on the
    validation curves of this epoch and the ones before it in `history` (recorded), each
    channel decided only in the corners of `seen` (frames.seen_mask's; None: in all)."""
    batch_size = max(config.batch_size, 256)
    out = {"val_accuracy": None, "test_accuracy": None}
    if len(val.y):
        ev = evaluate(net, val.x, val.y, batch_size=batch_size, frame=val.frame, classes=classes,
                      seen=seen)
        out["val_accuracy"] = ev.accuracy
        if val.frame is not None:
            earlier = [r["val_frame_curve"] for r in history if "val_frame_curve" in r]
            out.update(frames.validation_frame_scores(ev.lengths, val.frame, val.frame_y,
                                                      classes, earlier))
    if score_test and len(test.y):
        ev = evaluate(net, test.x, test.y, batch_size=batch_size, frame=test.frame,
                      frame_y=test.frame_y, classes=classes, seen=seen,
                      threshold=out.get("frame_threshold", frames.PRESENT))
        out["test_accuracy"] = ev.accuracy
        if ev.frame_accuracy is not None:
            out["test_frame_accuracy"] = ev.frame_accuracy
    return out


def _tests_after(epoch, config):
    """Whether the test split is scored after `epoch`: every test_every epochs, and after
    the last. Why not always: a pass over the test split is time not spent training, and
    the network is chosen on validation alone."""
    every = config.test_every
    return epoch == config.epochs or (every > 0 and epoch % every == 0)


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


def _gradients(net, x, y, n_classes):
    """(loss, grads, hits) of the batch x, y."""
    loss, grads, parts = net.loss_and_grads(x, y, return_parts=True)
    xp = get_array_module(loss)
    lengths = frames.with_nologo(parts["lengths"], n_classes)  # (B, classes)
    return loss, grads, (lengths.argmax(axis=1) == xp.asarray(y)).sum()


def train_epoch(net, opt, train, config, rng, progress, epoch, nologo, n_classes,
                world=distributed.Alone()):
    """One pass over the shuffled, augmented training split; (mean loss, accuracy). Loss and
    hits are summed on the device and read back every `check_every` steps, where a
    non-finite loss stops the run before anything is saved. Under MPI (`world`) each rank
    computes its share of every batch and the step takes the sum over the ranks."""
    order = epoch_order(train.y, rng, config.balance, nologo, config.nologo_ratio)
    n, B = len(order), config.batch_size
    steps = math.ceil(n / B)
    check_every = 1 if config.device == "cpu" else GPU_CHECK_EVERY
    if config.background_swap:
        empty, box_pool = train.swap_sources()
    frame_scale = config.crop.scale if train.frame is not None else 1.0  # crops of frames
    loss_sum = hits = 0
    progress("epoch_start", epoch=epoch, steps=steps)

    def batch(step):  # the loop's only draws from rng, made a step ahead (made_ahead)
        idx = order[step * B:(step + 1) * B]
        xb = train.x[idx]
        if config.logo_recolour:
            xb = recolour_logos(xb, train.box[idx], config.logo_recolour, rng)
        if config.background_swap:
            xb = swap_backgrounds(xb, train.box[idx], train.x, empty, box_pool,
                                  config.background_swap, rng, config.logo_scale)
        if config.text_distractors:
            xb = text_distractors(xb, train.box[idx], config.text_distractors, rng)
        xb = augment(xb, rng, max_shift=config.shift, hflip=config.flip,
                     max_degrees=config.rotate, max_scale=config.scale_jitter,
                     colour=config.colour_jitter, blur_p=config.blur,
                     recompress_p=config.recompress, recompress_scale=frame_scale)
        return idx, xb

    with closing(made_ahead(batch, steps)) as batches:
        for step, (idx, xb) in enumerate(batches):
            net.set_training_progress(((epoch - 1) * steps + step) / (config.epochs * steps))
            loss, grads, batch_hits = world.batch_gradients(
                lambda x, y: _gradients(net, x, y, n_classes), xb, train.y[idx], net.params)
            loss_sum = loss_sum + loss * len(idx)
            hits = hits + batch_hits
            if (step + 1) % check_every == 0 or step + 1 == steps:
                if not math.isfinite(float(loss_sum)):
                    raise MinicapsError(
                        f"the loss became {float(loss_sum)} in epoch {epoch} (by step "
                        f"{step + 1} of {steps}); training stopped, the last good checkpoint "
                        f"is kept (try a lower --lr than {config.lr:g})")
            opt.step(grads)
            progress("step", done=1, loss=loss)
    return float(loss_sum) / n, float(hits) / n


def describe(mconfig):
    """'4,897,408 parameters, 1728 primary capsules' (or the CNN's layers)."""
    if kind_of(mconfig) == "capsnet":
        return f"{mconfig.n_params():,} parameters, {mconfig.n_primary} primary capsules"
    if kind_of(mconfig) == "em":
        return (f"matrix capsules with EM routing, types {mconfig.primary_types},"
                f"{','.join(map(str, mconfig.caps_types))}: {mconfig.n_params():,} parameters")
    return (f"CNN with max pooling, conv {','.join(map(str, mconfig.channels))}, "
            f"FC {','.join(map(str, mconfig.hidden))}: {mconfig.n_params():,} parameters")


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
    world = distributed.join()  # this process alone, or one rank of an MPI run
    with world.guard():
        return _run_in(world, config, progress if world.lead else _quiet, dataset, resume)


def _quiet(kind, **info):
    pass


def _run_in(world, config, progress, dataset, resume):
    if config.device == "gpu":
        world.use_gpu()
    if not resume:  # a stored run keeps the options it was trained with
        check(config)
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
    if config.background_swap or config.logo_recolour or config.text_distractors:
        train.swap_sources()  # refused before anything is built
    nologo = ds.classes.index(frames.NOLOGO) if frames.NOLOGO in ds.classes else None
    n_epoch = epoch_size(train.y, nologo, config.nologo_ratio)
    steps_per_epoch = math.ceil(n_epoch / config.batch_size)
    world.agree(distributed.fingerprint(config, mconfig, ds, resume.epoch if resume else 0))
    net = build(mconfig, resume.params if resume else None, seed=config.seed,
                device=config.device)
    if config.init_length is not None and not resume:
        calibrate_transforms(net, train.x[:256], config.init_length)
    world.same_start(net.params)
    opt = make_optimizer(config, net.params, steps_per_epoch)
    rng = np.random.default_rng([config.seed, 2])
    history, start = [], 0
    if resume:
        try:
            opt.load_state_dict(resume.optimizer)
        except KeyError as e:
            raise MinicapsError(f"{out}/last.npz: its optimizer state lacks {e} that its "
                                "options need") from None
        rng.bit_generator.state = resume.rng_state
        history, start = list(resume.history), resume.epoch
    data_info = {"layout": layout, "name": ds.name, "pad": config.pad,
                 "crop": dataclasses.asdict(config.crop) if layout == "rs" else None}
    if layout == "rs":  # a resumed run keeps the rule it started with (none before 48fccc4)
        data_info["logo_corners"] = resume.data_info.get("logo_corners") if resume else \
            frames.logo_corners(train.y, train.frame, config.crop.corners, ds.classes)
    seen = frames.seen_mask(data_info, ds.classes)
    unseen = [] if seen is None else [c for c, shown in zip(ds.classes, seen.any(axis=0))
                                      if not shown]  # nologo is allowed in every corner
    if unseen and world.lead:
        warnings.warn(f"no training frame shows the logo of {', '.join(unseen)} in a corner "
                      f"crop: frames are never decided for {'it' if len(unseen) == 1 else 'them'} "
                      f"(evaluate and predict --any-corner look in every corner)", stacklevel=2)
    progress("start", lines=[
        ds.summary(),
        f"split: {len(train.y)} train / {len(val.y)} validation / {len(test.y)} test examples",
        f"network: {describe(mconfig)}, {config.device}{world.description}"
        + (f"; resuming after epoch {start}" if resume else "")]
        + ([f"{out} has finished its {start} epochs: pass --epochs to train longer"]
           if start >= config.epochs else []))
    if world.lead:  # under MPI rank 0 alone writes
        out.mkdir(parents=True, exist_ok=True)
        if resume:
            _write_metrics(out / "metrics.jsonl", history)
    elapsed0 = history[-1]["elapsed_s"] if history else 0.0
    t_start = time.perf_counter()
    for epoch in range(start + 1, config.epochs + 1):
        t0 = time.perf_counter()
        loss, acc = train_epoch(net, opt, train, config, rng, progress, epoch, nologo,
                                ds.n_classes, world)
        if not _finite(net.params):
            raise MinicapsError(f"the parameters became non-finite in epoch {epoch}; training "
                                f"stopped, the last good checkpoint is kept (try a lower --lr)")
        t_train = time.perf_counter() - t0
        with opt.averaged():  # the network that is scored (and the one best.npz is for)
            scores = _split_scores(world.spread(net), val, test, config, ds.classes, seen,
                                   score_test=_tests_after(epoch, config), history=history)
        record = {"epoch": epoch, "train_loss": loss, "train_accuracy": acc, **scores,
                  "lr": opt.lr, "images_per_s": n_epoch / t_train,
                  "epoch_s": time.perf_counter() - t0,
                  "elapsed_s": elapsed0 + time.perf_counter() - t_start}
        history.append(record)
        ckpt = checkpoint.Checkpoint(
            params=net.params, optimizer=opt.state_dict(), epoch=epoch,
            rng_state=rng.bit_generator.state, model_config=mconfig,
            train_config=config.to_json(), classes=ds.classes, history=history,
            data_info=data_info)
        world.check_same_weights(net.params, epoch)
        if frames.kept_as_best(history) and world.lead:  # best first: a crash between
            checkpoint.save(out / "best.npz", ckpt)  # the writes leaves it ahead of last.npz
        if world.lead:
            checkpoint.save(out / "last.npz", ckpt)
            with open(out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
        progress("epoch", record=record, epochs=config.epochs)
    return history
