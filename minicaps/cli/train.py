"""`minicaps train`: its options (TrainConfig's declarations), progress and resumption.

It passes on only the options given on the command line: TrainConfig gives every other one
its value (the data's preset, else the declared default), as for a library user.
Registered on the `minicaps` group by main.py; errors reach the user through that group.
"""
import sys
from pathlib import Path

import click

from ..training import distributed, loop as train
from .options import UserError, declared_options, with_options
from ..errors import MinicapsError
from ..option import default_of, option_name
from ..training.frames import PRESENT
from ..training.config import TrainConfig, refuse_other_kinds_options
from ..training.presets import PRESETS


def _fmt_time(seconds):
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def _pct(x):
    return "-" if x is None else f"{x:.2%}"


def epoch_line(r, epochs):
    """The one line printed after each epoch."""
    frames = ""
    if "val_frame_accuracy" in r or "test_frame_accuracy" in r:
        frames = (f"  frames: val {_pct(r.get('val_frame_accuracy'))} "
                  f"test {_pct(r.get('test_frame_accuracy'))} "
                  f"(at {r.get('frame_threshold', PRESENT):g})")
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


def _train_options():
    """TrainConfig's options, with --gpu and --resume after --data and --out."""
    options = declared_options(TrainConfig, presets=PRESETS.values())
    where = [options.pop("data"), options.pop("out")]
    return [*where,
            click.option("--gpu", is_flag=True, help="Train on the GPU with CuPy."),
            click.option("--resume", is_flag=True,
                         help="Continue the run in --out from last.npz (its stored options "
                              "apply; --epochs sets the new total)."),
            *options.values()]


@click.command("train")
@with_options(_train_options())
@click.pass_context
def train_command(ctx, gpu, resume, **options):
    """Train a CapsNet (or the CNN baseline); a checkpoint after every epoch.

    Without --data it trains on the bundled MNIST sample (a few minutes on two CPU cores).
    On R&S frames (tvlogos-de) the defaults are the logo-frame configuration
    (minicaps/training/presets.py): every option marked "on R&S frames" takes that value
    unless given.
    """
    given = {name: value for name, value in options.items()
             if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE}
    refuse_other_kinds_options(given.get("model", default_of(TrainConfig, "model")), given)
    config = TrainConfig(device="gpu" if gpu else "cpu", **given)
    out, progress = config.out, Progress()
    try:
        if resume:
            _check_resume(given, config)
            history = train.resume(out, epochs=given.get("epochs"), device=config.device,
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
    if history and distributed.reports():  # under mpiexec, rank 0 alone
        best = f", {out}/best.npz" if (Path(out) / "best.npz").is_file() else ""
        click.echo(f"checkpoints: {out}/last.npz{best}; metrics: {out}/metrics.jsonl", err=True)


def _check_resume(given, config):
    """--resume takes the stored options: refuse given ones that differ from them."""
    stored = train.stored_config(config.out)
    differ = [option_name(TrainConfig, name, given[name]) for name in given
              if name not in ("out", "epochs") and getattr(config, name) != getattr(stored, name)]
    if differ:
        raise MinicapsError(f"--resume continues the stored run with its own options, but "
                            f"{', '.join(differ)} differ from them; drop them or train into "
                            f"a new --out")
