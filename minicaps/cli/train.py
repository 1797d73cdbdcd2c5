"""`minicaps train`: its options, the R&S layout's defaults, progress and resumption.

Registered on the `minicaps` group by cli.py; errors reach the user through that group.
"""
import sys
from pathlib import Path

import click

from ..training import loop as train
from ..backend import require_gpu
from .options import CONTRAST_HELP, UserError, parse_widths
from ..data import detect_layout
from ..errors import MinicapsError
from ..training.frames import PRESENT
from ..training.presets import RS_DEFAULTS as RS
from ..training.presets import layout_defaults
from ..training.config import ARCH_FIELDS

RS_CORNERS = ("tl", "tr", "bl", "br")


def _rs(general, field):
    """--help's default: the general one, and the R&S frames' one where it differs."""
    value = RS[field]
    shown = "all" if value is None else f"{value:g}" if isinstance(value, float) else value
    return general if str(shown) == general else f"{general}; {shown} on R&S frames"


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
                  f"test {_pct(r['test_frame_accuracy'])} (at {r.get('frame_threshold', PRESENT):g})")
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


@click.command("train")
@click.option("--data", type=click.Path(exists=True), default=None,
              help="Dataset: MNIST idx folder, class folders, R&S challenge folder or .npz. "
                   "Default: the bundled 5,000-image MNIST sample.")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Run folder for last.npz, best.npz, metrics.jsonl.",
              show_default="runs/<data name>, runs/<data name>-cnn")
@click.option("--gpu", is_flag=True, help="Train on the GPU with CuPy.")
@click.option("--model", type=click.Choice(["capsnet", "cnn"]), default="capsnet",
              help="A capsule network, or the baseline CNN with max pooling (--cnn-* "
                   "options; capsule options do not apply to it).")
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
@click.option("--average-epochs", type=click.FloatRange(min=0), default=0.0,
              help="Score (and keep as best.npz) a running average of the weights over about "
                   "this many recent epochs; training itself goes on unchanged. 0: off.",
              show_default=_rs("0", "average_epochs"))
@click.option("--seed", type=int, default=0, help="Seed of weights, split, shuffles, augmentation.")
@click.option("--val-fraction", type=click.FloatRange(0, 0.5, max_open=True), default=0.1,
              help="Fraction of the training data held out for validation (chooses best.npz).")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="At most this many examples (R&S: frames) per split, class-balanced.")
@click.option("--pad", type=click.IntRange(min=0), default=0,
              help="Background pixels added on every side of every image (training and "
                   "test), e.g. 6 puts MNIST in 40x40 for the affNIST-style test.")
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
@click.option("--background-swap", type=click.FloatRange(0, 1), default=0.0,
              help="R&S layout: fraction of training corners put on another photograph "
                   "(training only): a logo corner's logo box is pasted into a logo-free "
                   "training corner; a logo-free corner gets a patch of another one, in a "
                   "logo-sized box.",
              show_default=_rs("0", "background_swap"))
@click.option("--logo-scale", type=click.FloatRange(0.1, 1), default=1.0,
              help="R&S layout: a logo the background swap pastes is shrunk by a factor "
                   "drawn from this..1 (1: never): logos smaller than the training frames'.",
              show_default=_rs("1", "logo_scale"))
@click.option("--logo-recolour", type=click.FloatRange(0, 1), default=0.0,
              help="R&S layout: fraction of logo corners whose logo pixels (found inside "
                   "its box) get other colours: hue turned, inverted, grey or one colour.",
              show_default=_rs("0", "logo_recolour"))
@click.option("--text-distractors", type=click.FloatRange(0, 1), default=0.0,
              help="R&S layout: fraction of training corners given random text: beside the "
                   "logo (as an \"HD\" or a region), or anywhere in a corner without one "
                   "(as a programme's title); labels unchanged.",
              show_default=_rs("0", "text_distractors"))
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
@click.option("--contrast-window", type=click.IntRange(min=0), default=0,
              help=CONTRAST_HELP, show_default=_rs("0", "contrast_window"))
@click.option("--none-capsule/--no-none-capsule", default=False,
              help="An extra routing parent for input capsules of no class (background): "
                   "'none of the above', as the paper used for CIFAR-10; no loss reaches it.")
@click.option("--share-transforms/--own-transforms", default=False,
              help="One transformation matrix per primary capsule type and class, shared by "
                   "all grid positions (far fewer weights for large inputs such as R&S "
                   "crops), or one per primary capsule (the paper's).",
              show_default="own")
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
@click.option("--cnn-channels", callback=parse_widths, default=None,
              help="CNN: channels of its convolutions (max pooling after the first two), "
                   "comma-separated.",
              show_default="the paper's 256,256,128; 32,64,64 on the bundled sample and "
                           "on R&S frames")
@click.option("--cnn-kernel-size", type=click.IntRange(min=1), default=None,
              help="CNN: kernel size of its convolutions (odd).", show_default="5")
@click.option("--cnn-hidden", callback=parse_widths, default=None,
              help="CNN: widths of its hidden fully connected layers, comma-separated.",
              show_default="328,192")
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
    """Train a CapsNet (or the CNN baseline); a checkpoint after every epoch.

    Without --data it trains on the bundled MNIST sample (a few minutes on two CPU cores).
    On R&S frames (tvlogos-de) the defaults are the logo-frame configuration of the README
    (minicaps/presets.py): every option marked "on R&S frames" takes that value unless given.
    """
    _check_model_options(ctx, options["model"])
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
        suffix = "-cnn" if options["model"] == "cnn" else ""
        out = f"runs/{'mnist-sample' if data is None else _name(data)}{suffix}"
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


# Options that shape only one kind of network: given for the other, they are refused
# rather than ignored.
CAPSULE_OPTIONS = ("routing_iters", "routing_grad", "none_capsule", "share_transforms",
                   "reconstruction", "init_length", "nologo_capsule", *ARCH_FIELDS)
CNN_OPTIONS = ("cnn_channels", "cnn_kernel_size", "cnn_hidden")


def _check_model_options(ctx, model):
    foreign = CNN_OPTIONS if model == "capsnet" else CAPSULE_OPTIONS
    given = [f"--{name.replace('_', '-')}" for name in foreign if _given(ctx, name)]
    if given:
        raise MinicapsError(f"{', '.join(given)}: not an option of --model {model}")


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
