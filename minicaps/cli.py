"""The command line: a thin click layer over the library.

Each command turns its options into a config and calls library functions; the library never
imports click. A MinicapsError (or an OSError: a disk full, a folder not writable) ends in
one line on stderr, `minicaps: error: ...`, and exit status 1; click's usage errors are
click's own (exit status 2).
"""
import sys
import time
from pathlib import Path

import click

from . import __version__, checkpoint, train, transforms
from .backend import require_gpu
from .errors import MinicapsError
from .evaluate import evaluate as evaluate_split
from .evaluate import predict_files, report
from .data import detect_layout
from .model import CapsNet
from .presets import RS_DEFAULTS as RS
from .presets import layout_defaults

RS_CORNERS = ("tl", "tr", "bl", "br")


def _rs(general, field):
    """--help's default: the general one, and the R&S frames' one where it differs."""
    value = RS[field]
    shown = "all" if value is None else f"{value:g}" if isinstance(value, float) else value
    return general if str(shown) == general else f"{general}; {shown} on R&S frames"


class UserError(click.ClickException):
    def show(self, file=None):
        click.echo(f"minicaps: error: {self.message}", err=True)


class Group(click.Group):
    """A click group that turns the library's user errors into one line and exit status 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except MinicapsError as e:
            raise UserError(" ".join(str(e).split())) from None
        except OSError as e:
            where = f"{e.filename}: " if e.filename else ""
            raise UserError(f"{where}{e.strerror or e}") from None


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"],
                                          "show_default": True})
@click.version_option(__version__, prog_name="minicaps")
def main():
    """Capsule Networks with dynamic routing, every pass written by hand (NumPy / CuPy)."""


def _fmt_time(seconds):
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def _pct(x):
    return "-" if x is None else f"{x:.2%}"


def epoch_line(r, epochs):
    """The one line printed after each epoch."""
    frames = ""
    if "test_frame_accuracy" in r:
        frames = (f"  frames: val {_pct(r.get('val_frame_accuracy'))} "
                  f"test {_pct(r['test_frame_accuracy'])}")
    return (f"epoch {r['epoch']}/{epochs}  loss {r['train_loss']:.4f}  "
            f"train {_pct(r['train_accuracy'])}  val {_pct(r['val_accuracy'])}  "
            f"test {_pct(r['test_accuracy'])}{frames}  {r['images_per_s']:.0f} img/s  "
            f"{_fmt_time(r['elapsed_s'])}")


class Progress:
    """Renders train.run's events: a bar with an ETA on stderr per epoch, a line per epoch."""

    def __init__(self):
        self.bar = None

    def __call__(self, kind, **info):
        if kind == "start":
            for line in info["lines"]:
                click.echo(line, err=True)
        elif kind == "epoch_start":
            self.bar = click.progressbar(length=info["steps"], label=f"epoch {info['epoch']}",
                                         file=sys.stderr, show_eta=True, show_pos=True)
            self.bar.__enter__()
        elif kind == "step":
            self.bar.update(info["done"])
        elif kind == "epoch":
            self.close()
            click.echo(epoch_line(info["record"], info["epochs"]))

    def close(self):
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


@main.command("train")
@click.option("--data", type=click.Path(exists=True), default=None,
              help="Dataset: MNIST idx folder, class folders, R&S challenge folder or .npz. "
                   "Default: the bundled 5,000-image MNIST sample.")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Run folder for last.npz, best.npz, metrics.jsonl.",
              show_default="runs/<data name>")
@click.option("--gpu", is_flag=True, help="Train on the GPU with CuPy.")
@click.option("--resume", is_flag=True,
              help="Continue the run in --out from last.npz (its stored options apply; "
                   "--epochs sets the new total).")
@click.option("--epochs", type=click.IntRange(min=1), default=8, help="Epochs in total.",
              show_default=_rs("8", "epochs"))
@click.option("--batch-size", type=click.IntRange(min=1), default=64, help="Images per step.",
              show_default=_rs("64", "batch_size"))
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=3e-3,
              help="Learning rate.", show_default=_rs("0.003", "lr"))
@click.option("--lr-decay", type=click.FloatRange(min=0, max=1, min_open=True), default=0.95,
              help="Learning-rate factor per epoch (applied smoothly every step).",
              show_default=_rs("0.95", "lr_decay"))
@click.option("--optimizer", type=click.Choice(["adam", "sgd"]), default="adam",
              help="Adam, or SGD with momentum 0.9.")
@click.option("--seed", type=int, default=0, help="Seed of weights, split, shuffles, augmentation.")
@click.option("--val-fraction", type=click.FloatRange(0, 0.5, max_open=True), default=0.1,
              help="Fraction of the training data held out for validation (chooses best.npz).")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="At most this many examples (R&S: frames) per split, class-balanced.")
@click.option("--shift", type=click.IntRange(min=0), default=2,
              help="Random shifts up to this many pixels (training only; the paper's 2).",
              show_default=_rs("2", "shift"))
@click.option("--scale-jitter", type=click.FloatRange(0, 1), default=0.0,
              help="Random zoom by a factor up to 1 + this or down to 1 / (1 + this) "
                   "(training only).", show_default=_rs("0", "scale_jitter"))
@click.option("--colour-jitter", type=click.FloatRange(0, 1), default=0.0,
              help="Random contrast and brightness (+-this) and colour gains (+-half of it) "
                   "per image (training only).",
              show_default=_rs("0", "colour_jitter"))
@click.option("--blur", type=click.FloatRange(0, 1), default=0.0,
              help="Fraction of training images blurred by a 3x3 binomial filter.",
              show_default=_rs("0", "blur"))
@click.option("--flip", is_flag=True, help="Random horizontal flips (training only).")
@click.option("--nologo-ratio", type=click.FloatRange(min=0), default=None,
              help="R&S layout: each epoch shows every logo corner once and this many "
                   "nologo corners per logo corner, drawn afresh (all of them if unset).",
              show_default=_rs("all", "nologo_ratio"))
@click.option("--nologo-capsule/--no-nologo-capsule", default=True,
              help="R&S layout: a class capsule for nologo, or none: then a corner is nologo "
                   "when no channel's capsule is longer than 0.5, and nologo corners train "
                   "every capsule towards absent.")
@click.option("--init-length", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=None, help="Scale the initial capsule transforms so the median class-"
              "capsule length on the first training images is this (unset: std 0.01, the "
              "paper's).")
@click.option("--balance", is_flag=True,
              help="Draw training examples with equal weight per class (with replacement), "
                   "e.g. for R&S corners, most of which show no logo.")
@click.option("--rotate", type=click.FloatRange(0, 180), default=0.0,
              help="Random rotations up to this many degrees (training only).")
@click.option("--routing-iters", type=click.IntRange(min=1), default=3,
              help="Routing iterations.")
@click.option("--routing-grad", type=click.Choice(["full", "last"]), default="full",
              help="Backpropagate through every routing iteration, or the last one only.")
@click.option("--reconstruction/--no-reconstruction", default=True,
              help="Train with the reconstruction decoder, or without it.",
              show_default="with; without on R&S frames")
@click.option("--standardize/--raw-pixels", default=False,
              help="Feed the network (x - mean) / std per channel, from the training data "
                   "(stored in the checkpoint), or raw [0, 1] pixels as the paper.",
              show_default="raw; standardised on R&S frames")
@click.option("--none-capsule/--no-none-capsule", default=False,
              help="An extra routing parent for input capsules of no class (background): "
                   "'none of the above', as the paper used for CIFAR-10; no loss reaches it.")
@click.option("--share-transforms/--own-transforms", default=False,
              help="One transformation matrix per primary capsule type and class, shared by "
                   "all grid positions (far fewer weights for large inputs such as R&S "
                   "crops), or one per primary capsule (the paper's).",
              show_default="own; shared on R&S frames")
@click.option("--conv-channels", type=click.IntRange(min=1), default=None,
              help="Channels of the first convolution. The paper's 256 trains at ~30 "
                   "images/s on two CPU cores, so the bundled sample gets 64.",
              show_default=_rs("256; 64 on the bundled sample", "conv_channels"))
@click.option("--kernel-size", type=click.IntRange(min=1), default=9,
              help="Kernel size of both convolutions.",
              show_default=_rs("9", "kernel_size"))
@click.option("--conv-stride", type=click.IntRange(min=1), default=1,
              help="Stride of the first convolution.",
              show_default=_rs("1", "conv_stride"))
@click.option("--primary-types", type=click.IntRange(min=1), default=None,
              help="Primary capsule types (the paper's 32; 8 on the bundled sample, "
                   "for speed as above).",
              show_default=_rs("32; 8 on the bundled sample", "primary_types"))
@click.option("--primary-dim", type=click.IntRange(min=1), default=8,
              help="Dimension of a primary capsule.")
@click.option("--primary-stride", type=click.IntRange(min=1), default=2,
              help="Stride of the primary capsules' convolution.")
@click.option("--class-dim", type=click.IntRange(min=1), default=16,
              help="Dimension of a class capsule.")
@click.option("--crop-corners", default=",".join(RS["crop_corners"]),
              help="R&S layout: corners cut from each frame (comma-separated, of "
                   f"{','.join(RS_CORNERS)}).")
@click.option("--crop-width", type=click.IntRange(1, 720), default=RS["crop_width"],
              help="R&S layout: crop width in frame pixels (of 720).")
@click.option("--crop-height", type=click.IntRange(1, 405), default=RS["crop_height"],
              help="R&S layout: crop height in frame pixels (of 405).")
@click.option("--crop-scale", type=click.FloatRange(0, 4, min_open=True),
              default=RS["crop_scale"], help="R&S layout: resize factor of each crop.")
@click.option("--crop-grey", is_flag=True, help="R&S layout: greyscale crops instead of RGB.")
@click.option("--no-merge-variants", is_flag=True,
              help="R&S layout: keep logo variants (e.g. sat1-werbung) as classes of their own.")
@click.pass_context
def train_command(ctx, data, out, gpu, resume, crop_corners, no_merge_variants, **options):
    """Train a CapsNet; a checkpoint after every epoch.

    Without --data it trains on the bundled MNIST sample (a few minutes on two CPU cores).
    On R&S frames (tvlogos-de) the defaults are the logo-frame configuration of the README
    (minicaps/presets.py): every option marked "on R&S frames" takes that value unless given.
    """
    device = "gpu" if gpu else "cpu"
    if gpu:
        require_gpu()
    corners = tuple(c.strip() for c in crop_corners.split(",") if c.strip())
    if data is not None:  # stored absolute, so evaluate finds it from any folder
        data = str(Path(data).resolve())
        for field, value in layout_defaults(detect_layout(data)).items():
            if field in options and not _given(ctx, field):
                options[field] = value
    epochs = options.pop("epochs")
    if out is None:
        out = f"runs/{'mnist-sample' if data is None else _name(data)}"
    config = train.TrainConfig(
        data=data, out=out, device=device, epochs=epochs, crop_corners=corners,
        merge_variants=not no_merge_variants, **options)
    progress = Progress()
    try:
        if resume:
            _check_resume(ctx, config)
            explicit = ctx.get_parameter_source("epochs") == click.core.ParameterSource.COMMANDLINE
            history = train.resume(out, epochs=epochs if explicit else None, device=device,
                                   progress=progress)
        else:
            history = train.run(config, progress=progress)
    except KeyboardInterrupt:
        progress.close()
        if (Path(out) / "last.npz").is_file():
            error = UserError(f"interrupted; the last finished epoch is in {out}/last.npz "
                              f"(continue with: minicaps train --out {out} --resume)")
        else:
            error = UserError("interrupted before the first epoch finished; nothing was saved")
        error.exit_code = 130
        raise error from None
    finally:
        progress.close()
    if history:
        best = f", {out}/best.npz" if (Path(out) / "best.npz").is_file() else ""
        click.echo(f"checkpoints: {out}/last.npz{best}; metrics: {out}/metrics.jsonl", err=True)


def _given(ctx, name):
    return ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE


def _name(path):
    p = Path(path).resolve()
    return p.stem if p.is_file() else p.name


def _check_resume(ctx, config):
    """--resume takes the stored options: refuse explicitly given ones that differ."""
    stored = train.stored_config(config.out)
    fields = {"no_merge_variants": "merge_variants"}
    differ = []
    for param in ctx.command.params:
        name = param.name
        if name in ("out", "gpu", "resume", "epochs"):
            continue
        if ctx.get_parameter_source(name) != click.core.ParameterSource.COMMANDLINE:
            continue
        field = fields.get(name, name)
        if getattr(config, field) != getattr(stored, field):
            differ.append(f"--{name.replace('_', '-')}")
    if differ:
        raise MinicapsError(f"--resume continues the stored run with its own options, but "
                            f"{', '.join(differ)} differ from them; drop them or train into "
                            f"a new --out")


def _load_net(path, gpu):
    ckpt = checkpoint.load(path)
    device = "gpu" if gpu else "cpu"
    if gpu:
        require_gpu()
    return ckpt, CapsNet.from_config(ckpt.model_config, ckpt.params, device=device)


@main.command("evaluate")
@click.argument("checkpoint_path", metavar="CHECKPOINT", type=click.Path(exists=True, dir_okay=False))
@click.option("--data", type=click.Path(exists=True), default=None,
              help="Dataset to score on (its test split).  [default: the checkpoint's own data]")
@click.option("--gpu", is_flag=True, help="Evaluate on the GPU with CuPy.")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, help="Images per batch.")
@click.option("--transform", "transform_spec", default=None,
              help="Transform every test image first: rotate:DEG, flip, shift:PX or scale:S.")
def evaluate_command(checkpoint_path, data, gpu, batch_size, transform_spec):
    """Accuracy, per-class accuracy and confusion matrix of a checkpoint on test data."""
    if transform_spec is not None:
        transforms.parse(transform_spec)  # a bad spec fails before anything is loaded
    ckpt, net = _load_net(checkpoint_path, gpu)
    config = train.TrainConfig.from_json(ckpt.train_config)
    if data is not None:
        config = train.TrainConfig.from_json({**ckpt.train_config, "data": data})
    elif config.data is not None and not Path(config.data).exists():
        raise MinicapsError(f"{config.data}, the data {checkpoint_path} was trained on, is not "
                            f"there: pass --data")
    config = train.TrainConfig.from_json({**config.to_json(), "limit": None})
    t0 = time.perf_counter()
    ds = train.load_data(config)
    if ds.classes != ckpt.classes:
        raise MinicapsError(f"the data's classes ({', '.join(ds.classes[:5])}...) are not the "
                            f"checkpoint's ({', '.join(ckpt.classes[:5])}...)")
    if ds.in_shape != net.config.in_shape:
        raise MinicapsError(f"the data's images are {ds.in_shape}, the network takes "
                            f"{net.config.in_shape}")
    test_x = ds.test_x if transform_spec is None else transforms.apply(ds.test_x, transform_spec)
    ev = evaluate_split(net, test_x, ds.test_y, batch_size=batch_size, frame=ds.test_frame,
                        frame_y=ds.test_frame_y, classes=ds.classes)
    changed = f", each {transform_spec}" if transform_spec else ""
    click.echo(f"checkpoint {checkpoint_path} (epoch {ckpt.epoch}); {ds.name} test split: "
               f"{len(ds.test_y)} examples{changed}; {time.perf_counter() - t0:.1f}s")
    if ev.frame_accuracy is not None:
        click.echo(report(ev, ds.classes, frames=True))
        click.echo("")
    click.echo(report(ev, ds.classes))


@main.command("predict")
@click.argument("checkpoint_path", metavar="CHECKPOINT", type=click.Path(exists=True, dir_okay=False))
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--gpu", is_flag=True, help="Predict on the GPU with CuPy.")
def predict_command(checkpoint_path, images, gpu):
    """The class and the class-capsule lengths of each image (a TV frame for a network
    trained on R&S frames: its corners are cropped as in training)."""
    ckpt, net = _load_net(checkpoint_path, gpu)
    width = max(len(c) for c in ckpt.classes)
    for p in predict_files(net, images, ckpt.classes, ckpt.data_info):
        click.echo(f"{p.path}: {p.label}")
        names = p.corners or ("",)
        for corner, lengths in zip(names, p.lengths):
            top = lengths.argsort()[::-1]
            cells = "  ".join(f"{ckpt.classes[k]:>{width}} {lengths[k]:.3f}" for k in top)
            click.echo(f"  {corner + ': ' if corner else ''}{cells}")


def _register_tools():
    """bench, plan and gradcheck live in cli_tools (they measure; this module trains)."""
    from .cli_tools import COMMANDS
    for command in COMMANDS:
        main.add_command(command)


_register_tools()
