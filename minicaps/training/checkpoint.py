"""Checkpoints: one `.npz` of host arrays and JSON text, written atomically.

Keys of the archive (format "minicaps-checkpoint-3"; version 1, without model_kind, is
read as a CapsNet; versions 1 and 2 held convolution weights in PyTorch's (out, in, kh, kw)
layout, which reading moves into today's (in, kh, kw, out)):

    format              0-d str   "minicaps-checkpoint-3"
    params/<name>       arrays    the network's parameters, under `net.params`' names
    optim/<key>         arrays    the optimizer's state_dict ("step" as a 0-d int64); with a
                                  weight average, "average.<name>": the scored weights
    epoch               0-d int   epochs completed
    rng_state           0-d str   JSON of the training generator's bit_generator.state
    model_kind          0-d str   "capsnet" or "cnn" (minicaps.networks; absent: capsnet)
    model_config        0-d str   JSON of the network's config
    train_config        0-d str   JSON of the training options
    classes             1-d str   class names, the index is the label
    history             0-d str   JSON list of the per-epoch metrics so far
    data_info           0-d str   JSON: how examples were made (layout, R&S crop) and, for
                                  frames, the corners each channel was seen in

Only numbers and strings: it is read with allow_pickle=False, so a checkpoint can never run
code. A write goes to a temporary file in the same directory, is flushed to disk, and then
renamed over the old file (`os.replace` is atomic), so a crash at any moment leaves either
the old checkpoint or the new one, never half of one.
"""
import dataclasses
import json
import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..backend import to_host
from ..errors import MinicapsError
from ..nets.kinds import config_from_dict, kind_of
from ..optim import AVERAGE
from .frames import names_fit

# 2 added model_kind (the CNN baseline); 3 put convolution weights' out axis last
FORMAT = "minicaps-checkpoint-3"
OUT_FIRST = ("minicaps-checkpoint-1", "minicaps-checkpoint-2")  # conv weights (out, in, kh, kw)
READABLE = (*OUT_FIRST, FORMAT)


@dataclass
class Checkpoint:
    params: dict
    optimizer: dict
    epoch: int
    rng_state: dict
    model_config: object  # CapsNetConfig or CNNConfig
    train_config: dict
    classes: list
    history: list = field(default_factory=list)
    data_info: dict = field(default_factory=dict)

    @property
    def scored_params(self):
        """The weights the run scored, for evaluating and predicting: the running average
        of the weights where training kept one (train --average-epochs), else `params`,
        the weights training continues from."""
        return self.average or self.params

    @property
    def average(self):
        """{param name: array} of the weight average in the optimizer state ({} if none)."""
        prefix = f"{AVERAGE}."
        return {k[len(prefix):]: a for k, a in self.optimizer.items() if k.startswith(prefix)}


def _move_out_axis_last(arrays, conv_weights):
    """Convolution weights, and the optimizer's arrays kept beside them ("m.<name>",
    "average.<name>", ...), from the (out, in, kh, kw) of checkpoints before format 3."""
    for key, array in arrays.items():
        group, _, name = key.partition("/")
        if group == "optim":
            name = name.partition(".")[2]
        if group in ("params", "optim") and name in conv_weights and array.ndim == 4:
            arrays[key] = np.ascontiguousarray(np.moveaxis(array, 0, -1))


def _text(obj):
    return np.array(json.dumps(obj))  # a 0-d unicode array


def save(path, ckpt):
    """Write `ckpt` to `path` atomically (parameters may live on the GPU: they are copied)."""
    path = Path(path)
    arrays = {
        "format": np.array(FORMAT),
        "epoch": np.array(ckpt.epoch, np.int64),
        "rng_state": _text(ckpt.rng_state),
        "model_kind": np.array(kind_of(ckpt.model_config)),
        "model_config": _text(dataclasses.asdict(ckpt.model_config)),
        "train_config": _text(ckpt.train_config),
        "classes": np.array(list(ckpt.classes), dtype=str),
        "history": _text(ckpt.history),
        "data_info": _text(ckpt.data_info),
    }
    arrays.update({f"params/{n}": to_host(p) for n, p in ckpt.params.items()})
    arrays.update({f"optim/{k}": to_host(v) if not isinstance(v, (int, np.integer))
                   else np.array(v, np.int64) for k, v in ckpt.optimizer.items()})
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a checkpoint is an ordinary file
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable; not every platform can open a directory
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _json(data, key):
    return json.loads(str(data[key][()]))


def load(path):
    """The Checkpoint at `path`; MinicapsError if it is missing, truncated or not one."""
    path = Path(path)
    if not path.is_file():
        raise MinicapsError(f"{path}: no such checkpoint")
    try:
        with np.load(path, allow_pickle=False) as data:
            if "format" not in data.files or str(data["format"][()]) not in READABLE:
                raise MinicapsError(f"{path}: not a minicaps checkpoint ({FORMAT})")
            arrays = {k: data[k] for k in data.files}  # read every member now: CRCs checked
        model_config = config_from_dict(
            str(arrays["model_kind"][()]) if "model_kind" in arrays else "capsnet",
            _json(arrays, "model_config"))
        if str(arrays["format"][()]) in OUT_FIRST:
            _move_out_axis_last(arrays, model_config.conv_weight_names())
        ckpt = Checkpoint(
            params={k[len("params/"):]: a for k, a in arrays.items() if k.startswith("params/")},
            optimizer={k[len("optim/"):]: a for k, a in arrays.items() if k.startswith("optim/")},
            epoch=int(arrays["epoch"]),
            rng_state=_json(arrays, "rng_state"),
            model_config=model_config,
            train_config=_json(arrays, "train_config"),
            classes=[str(c) for c in arrays["classes"]],
            history=_json(arrays, "history"),
            data_info=_json(arrays, "data_info"),
        )
    except MinicapsError as e:
        if str(path) in str(e):
            raise
        raise MinicapsError(f"{path}: not a valid minicaps checkpoint ({e})") from None
    except (OSError, ValueError, EOFError, KeyError, TypeError, zipfile.BadZipFile) as e:
        # NumPy's own message for a pickled entry suggests loading it unsafely: never that.
        reason = "it holds pickled objects" if "pickle" in str(e) else f"{type(e).__name__}: {e}"
        raise MinicapsError(f"{path}: not a minicaps checkpoint, or a truncated or corrupt one "
                            f"({reason})") from None
    expected = ckpt.model_config.param_shapes()
    average = ckpt.average
    if average and set(average) != set(expected):
        raise MinicapsError(f"{path}: its weight average does not match its parameters")
    if any(set(weights) != set(expected) or any(
            tuple(weights[n].shape) != expected[n] for n in expected)
           for weights in (ckpt.params, ckpt.scored_params)):
        raise MinicapsError(f"{path}: its parameters do not match its model configuration")
    if not names_fit(ckpt.classes, ckpt.model_config.n_classes):
        raise MinicapsError(f"{path}: {len(ckpt.classes)} class names for "
                            f"{ckpt.model_config.n_classes} classes")
    return ckpt
