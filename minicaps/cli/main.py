"""The command line: a thin click layer over the library.

Each command turns its options into a config and calls library functions; the library never
imports click. A MinicapsError (or an OSError: a disk full, a folder not writable) ends in
one line on stderr, `minicaps: error: ...`, and exit status 1; click's usage errors are
click's own (exit status 2). This module holds the group, evaluate and predict; train is in
cli_train.py, the measuring and picture tools in cli_tools.py.
"""
import csv
import json
import os
import sys
import time
import warnings

import click
import numpy as np

from .. import __version__
from ..training import checkpoint
from ..tools import transforms
from ..fast.allocator import reuse_freed_memory
from ..backend import require_gpu
from .options import UserError
from ..errors import MinicapsError
from ..training.evaluate import checkpoint_data, image_files_of, predict_files, report
from ..training.evaluate import evaluate as evaluate_split
from ..training.frames import seen_mask, stored_threshold, trained_on_frames
from ..nets.kinds import build


def _warn_in_one_line(message, category, filename, lineno, file=None, line=None):
    """Python's warning shows the library's source line; a user needs only the message."""
    click.echo(f"minicaps: warning: {message}", err=True)


class Group(click.Group):
    """A click group that turns the library's user errors into one line and exit status 1,
    and its warnings (a few unreadable images, logos outside the crops) into one line each."""

    def invoke(self, ctx):
        try:
            with warnings.catch_warnings():
                warnings.showwarning = _warn_in_one_line
                return super().invoke(ctx)
        except MinicapsError as e:
            raise UserError(" ".join(str(e).split())) from None
        except BrokenPipeError:  # stdout's reader stopped (`predict ... | head`): no error
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            ctx.exit(1)
        except OSError as e:
            where = f"{e.filename}: " if e.filename else ""
            raise UserError(f"{where}{e.strerror or e}") from None


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"],
                                          "show_default": True})
@click.version_option(__version__, prog_name="minicaps")
def main():
    """Capsule Networks with dynamic routing, every pass written by hand (NumPy / CuPy)."""
    reuse_freed_memory()  # for the commands that run networks; free for the rest (allocator.py)


def _load_net(path, gpu, threshold=None, any_corner=False):
    """(checkpoint, its network, the frame threshold to decide at: `threshold` if given, else
    the checkpoint's, and the corners each channel may be decided in: frames.seen_mask's,
    None with `any_corner`); a given threshold or `any_corner` is refused, before the
    network is built, for a network not trained on TV frames."""
    ckpt = checkpoint.load(path)
    if (threshold is not None or any_corner) and not trained_on_frames(ckpt.data_info):
        given = "--threshold" if threshold is not None else "--any-corner"
        raise UserError(f"{given} is for networks trained on TV frames (the R&S layout)")
    device = "gpu" if gpu else "cpu"
    if gpu:
        require_gpu()
    net = build(ckpt.model_config, ckpt.scored_params, device=device)
    threshold = stored_threshold(ckpt.history) if threshold is None else threshold
    return ckpt, net, threshold, None if any_corner else seen_mask(ckpt.data_info, ckpt.classes)


# Declared once for evaluate and predict.
frame_threshold_option = click.option(
    "--threshold", type=click.FloatRange(0, 1), default=None,
    help="TV frames: a frame shows the channel whose capsule is the longest over its corners "
         "(those training showed it in) when that length reaches this, else nologo. Lower "
         "calls more unfamiliar or faint logos, and more programme titles, a channel "
         "(docs/studies/logo_shift.md).  "
         "[default: the checkpoint's, chosen on its validation frames]")
any_corner_option = click.option(
    "--any-corner", is_flag=True,
    help="TV frames: a channel may be found in any corner, not only in those where training "
         "showed its logo (for a channel that has moved its logo; more programme titles "
         "are then called a channel).")


@main.command("evaluate")
@click.argument("checkpoint_path", metavar="CHECKPOINT", type=click.Path(exists=True, dir_okay=False))
@click.option("--data", type=click.Path(exists=True), default=None,
              help="Dataset to score on: its test split; a folder of TV frames that holds no "
                   "training frames is scored whole.  [default: the checkpoint's own data]")
@click.option("--gpu", is_flag=True, help="Evaluate on the GPU with CuPy.")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, help="Images per batch.")
@click.option("--transform", "transform_spec", default=None,
              help=f"Transform every test image first: {', '.join(transforms.KINDS)} (see "
                   "minicaps/tools/transforms.py; affine draws random affine maps, affNIST-style).")
@frame_threshold_option
@any_corner_option
def evaluate_command(checkpoint_path, data, gpu, batch_size, transform_spec, threshold,
                     any_corner):
    """Accuracy, per-class accuracy and confusion matrix of a checkpoint on test data."""
    if transform_spec is not None:
        transforms.parse(transform_spec)  # a bad spec fails before anything is loaded
    given = threshold is not None
    ckpt, net, threshold, seen = _load_net(checkpoint_path, gpu, threshold, any_corner)
    t0 = time.perf_counter()
    ds = checkpoint_data(ckpt, checkpoint_path, data)
    if given and ds.test_frame is None:
        raise UserError(f"--threshold decides TV frames, and {data} holds none")
    test_x = ds.test_x if transform_spec is None else transforms.apply(ds.test_x, transform_spec)
    ev = evaluate_split(net, test_x, ds.test_y, batch_size=batch_size, frame=ds.test_frame,
                        frame_y=ds.test_frame_y, classes=ds.classes, threshold=threshold,
                        seen=seen)
    changed = f", each {transform_spec}" if transform_spec else ""
    click.echo(f"checkpoint {checkpoint_path} (epoch {ckpt.epoch}); {ds.name} test split: "
               f"{len(ds.test_y)} examples{changed}; {time.perf_counter() - t0:.1f}s")
    if ev.frame_accuracy is not None:
        source = "given" if given else "the checkpoint's"
        where = (", each channel in any corner" if seen is None
                 else ", each channel only in the corners training showed it in")
        click.echo(f"frames decided at threshold {threshold:g} ({source}){where}")
        click.echo(report(ev, ds.classes, frames=True))
        click.echo("")
    click.echo(report(ev, ds.classes))


FIELDS = ("path", "label", "confidence", "corner")


@main.command("predict")
@click.argument("checkpoint_path", metavar="CHECKPOINT", type=click.Path(exists=True, dir_okay=False))
@click.argument("images", metavar="IMAGES_OR_FOLDERS...", nargs=-1, required=True,
                type=click.Path(exists=True))
@click.option("--gpu", is_flag=True, help="Predict on the GPU with CuPy.")
@click.option("--format", "fmt", type=click.Choice(["text", "csv", "json"]), default="text",
              help="One line per image: tab-separated text, CSV with a header, or JSON Lines.")
@click.option("--csv", "fmt", flag_value="csv", help="Short for --format csv.")
@click.option("--json", "fmt", flag_value="json", help="Short for --format json.")
@click.option("--lengths", is_flag=True,
              help="Also every class-capsule length (a CNN's: probability) of every corner, "
                   "as decided: 0 for a channel in a corner training never showed it in.")
@frame_threshold_option
@any_corner_option
def predict_command(checkpoint_path, images, gpu, fmt, lengths, threshold, any_corner):
    """The class of each image (a folder: every image in it, recursively), one line each:
    path, label, confidence, corner. For a network trained on R&S frames an image is a TV
    frame: its corners are cropped as in training, the label is the frame's channel or
    nologo, the confidence the length of that channel's capsule and the corner the one it
    was found in (nologo: 1 minus the longest channel capsule's length, no corner). A
    progress bar goes to stderr, so stdout stays parseable."""
    ckpt, net, threshold, seen = _load_net(checkpoint_path, gpu, threshold, any_corner)
    paths = image_files_of(images)
    corners = tuple(ckpt.data_info["crop"]["corners"]) \
        if trained_on_frames(ckpt.data_info) else ()
    write = _writer(fmt, ckpt.classes, corners, lengths)
    bar = click.progressbar(length=len(paths), label="predicting", file=sys.stderr,
                            show_eta=True, show_pos=True)
    with bar:
        for p in predict_files(net, paths, ckpt.classes, ckpt.data_info, threshold,
                               seen=seen):
            write(p)
            bar.update(1)


def _writer(fmt, classes, corners, with_lengths):
    """A function that prints one Prediction in `fmt` (CSV: the header first). `corners`:
    the names of a frame's corners, () for plain images."""
    def row(p):
        return [p.path, p.label, f"{p.confidence:.4f}", p.corner]

    if fmt == "json":
        def write(p):
            record = dict(zip(FIELDS, [p.path, p.label, round(p.confidence, 4), p.corner]))
            if with_lengths:
                record["lengths"] = {corner: dict(zip(classes, np.round(lengths, 4).tolist()))
                                     for corner, lengths in zip(corners or ("",), p.lengths)}
            click.echo(json.dumps(record))
        return write
    if fmt == "csv":
        out = csv.writer(click.get_text_stream("stdout"), lineterminator="\n")
        out.writerow(FIELDS + (tuple(f"{corner}:{c}" if corner else c
                                     for corner in corners or ("",) for c in classes)
                               if with_lengths else ()))
        return lambda p: out.writerow(
            row(p) + ([f"{v:.4f}" for v in p.lengths.ravel()] if with_lengths else []))
    width = max(len(c) for c in classes)

    def write(p):
        click.echo("\t".join(row(p)))
        if with_lengths:
            for corner, lengths in zip(corners or ("",), p.lengths):
                cells = "  ".join(f"{classes[k]:>{width}} {lengths[k]:.3f}"
                                  for k in lengths.argsort()[::-1])
                click.echo(f"  {corner + ': ' if corner else ''}{cells}")
    return write


def _register_commands():
    """train lives in cli_train; bench, plan, gradcheck and show in cli_tools."""
    from .tools import COMMANDS
    from .train import train_command
    for command in (train_command, *COMMANDS):
        main.add_command(command)


_register_commands()
