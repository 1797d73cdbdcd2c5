"""Scoring a trained network: accuracy, per-class accuracy, the confusion matrix, frame
scores for TV frames cut into corner crops (their rules: minicaps/training/frames.py), and
predictions for image files.

The network's class-capsule lengths are collected on its device and copied to the host once
per evaluation (one sync), where the small bookkeeping is done with NumPy.
"""
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from ..backend import get_array_module, to_host
from ..data import RSCrop, frame_examples, load_dataset
from ..data.common import IMAGE_EXTS, RESAMPLE, image_files, map_images, to_chw
from ..errors import MinicapsError
from .config import TrainConfig
from .frames import (NOLOGO, PRESENT, frame_decision, nologo_index, only_where_seen,
                     strongest_channels, trained_on_frames, with_nologo)

def class_lengths(net, x, *, batch_size=256, n_classes=None):
    """The class-capsule lengths (N, J) of the uint8 images x, as a host array; with
    `n_classes` (the data's) a network without a nologo capsule gets its PRESENT column."""
    chunks = [net.predict(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
    if not chunks:
        lengths = np.zeros((0, net.config.n_classes), net.config.dtype)
    else:
        xp = get_array_module(chunks[0])
        lengths = to_host(xp.concatenate(chunks))  # (N, J), the one sync
    return lengths if n_classes is None else with_nologo(lengths, n_classes)


@dataclass
class Evaluation:
    """Scores on one split. `frame_*` are None for data that has no frames."""
    y: np.ndarray  # (N,) true labels
    pred: np.ndarray  # (N,) predicted labels
    lengths: np.ndarray  # (N, J)
    frame_y: np.ndarray = None  # (F,) true frame labels of the frames present
    frame_pred: np.ndarray = None  # (F,)
    frame_ids: np.ndarray = None  # (F,) which frames those are, ascending

    @property
    def accuracy(self):
        return float(np.mean(self.pred == self.y)) if len(self.y) else float("nan")

    @property
    def frame_accuracy(self):
        if self.frame_y is None or not len(self.frame_y):
            return None
        return float(np.mean(self.frame_pred == self.frame_y))

    def confusion(self, n_classes, frames=False):
        """(n_classes, n_classes) counts: rows the true class, columns the prediction."""
        y, pred = (self.frame_y, self.frame_pred) if frames else (self.y, self.pred)
        m = np.zeros((n_classes, n_classes), np.int64)
        np.add.at(m, (y, pred), 1)
        return m


def evaluate(net, x, y, *, batch_size=256, frame=None, frame_y=None, classes=None,
             threshold=PRESENT, seen=None):
    """Score the network on images x (N, C, H, W) uint8 with labels y (N,). With `frame`
    (N,) and `frame_y` (all frames' labels) also decide and score whole frames at
    `threshold`; the no-logo class is the one named "nologo" in `classes`. With `seen`
    (frames.seen_mask's) a corner example is decided, and its lengths kept, with every
    channel not seen in its corner at length 0."""
    lengths = class_lengths(net, x, batch_size=batch_size,
                            n_classes=None if classes is None else len(classes))
    lengths = only_where_seen(lengths, seen, frame)
    return evaluation_of(lengths, y, frame=frame, frame_y=frame_y, classes=classes,
                         threshold=threshold)


def evaluation_of(lengths, y, *, frame=None, frame_y=None, classes=None, threshold=PRESENT):
    """evaluate's scores from class lengths (N, J) already computed, e.g. to decide the
    same frames at several thresholds without running the network again."""
    ev = Evaluation(y=np.asarray(y), pred=lengths.argmax(axis=1), lengths=lengths)
    if frame is not None and frame_y is not None:
        ev.frame_ids, ev.frame_pred = frame_decision(lengths, np.asarray(frame),
                                                     nologo_index(classes or []), threshold)
        ev.frame_y = np.asarray(frame_y)[ev.frame_ids]
    return ev


def report(ev, classes, *, frames=False):
    """A plain-text report: accuracy, per-class accuracy with the class each is most often
    mistaken for, and the confusion matrix (of the examples, or of the frames)."""
    y, pred = (ev.frame_y, ev.frame_pred) if frames else (ev.y, ev.pred)
    what = "frames" if frames else "examples"
    m = ev.confusion(len(classes), frames=frames)
    n_right = int(np.trace(m))
    lines = [f"accuracy ({what}): {n_right / max(len(y), 1):.2%} ({n_right}/{len(y)})", ""]
    name_w = max(len("class"), *(len(c) for c in classes))
    lines.append(f"  {'#':>3}  {'class':<{name_w}}  {'n':>6}  accuracy  most often wrong as")
    for k, c in enumerate(classes):
        n = int(m[k].sum())
        acc = f"{m[k, k] / n:.2%}" if n else "-"
        wrong = m[k].copy()
        wrong[k] = 0
        often = f"{classes[wrong.argmax()]} ({wrong.max()})" if wrong.any() else ""
        lines.append(f"  {k:>3}  {c:<{name_w}}  {n:>6}  {acc:>8}  {often}".rstrip())
    cell = max(3, len(str(int(m.max()) if m.size else 0)))
    lines += ["", f"confusion matrix ({what}; rows: true class, columns: predicted class #)",
              "  " + " " * (name_w + 1) + " ".join(f"{k:>{cell}}" for k in range(len(classes)))]
    for k, c in enumerate(classes):
        lines.append(f"  {c:<{name_w}} " + " ".join(f"{int(n):>{cell}}" for n in m[k]))
    return "\n".join(lines)


def checkpoint_data(ckpt, path, data=None):
    """The test split of the data the checkpoint at `path` was trained on (or of the folder
    `data` instead), made as in training and labelled with the checkpoint's classes; its
    image shape checked. The training frames of R&S data are not decoded: a folder that
    holds only frames to score (or frames in folders named for no split) is scored whole."""
    options = {**ckpt.train_config, "limit": None}
    if data is not None:
        options["data"] = data
    elif options["data"] is not None and not Path(options["data"]).exists():
        raise MinicapsError(f"{options['data']}, the data {path} was trained on, is not "
                            f"there: pass --data")
    config = TrainConfig.from_json(options)
    ds = load_dataset(config.data, rs_crop=config.crop, merge_variants=config.merge_variants,
                      test_only=True, classes=ckpt.classes).padded(config.pad)
    if ds.classes != ckpt.classes:
        raise MinicapsError(f"the data's classes ({', '.join(ds.classes[:5])}...) are not the "
                            f"checkpoint's ({', '.join(ckpt.classes[:5])}...)")
    if ds.in_shape != ckpt.model_config.in_shape:
        raise MinicapsError(f"the data's images are {ds.in_shape}, the network takes "
                            f"{ckpt.model_config.in_shape}")
    return ds


def image_files_of(paths):
    """The image files named by `paths`: each file itself, each folder's images (recursive,
    sorted); a folder without any is refused."""
    out = []
    for path in map(Path, paths):
        if path.is_dir():
            found = image_files(path)
            if not found:
                raise MinicapsError(f"{path}: no images in this folder "
                                    f"({', '.join(IMAGE_EXTS)})")
            out += found
        else:
            out.append(path)
    return out


def image_examples(path, in_shape, data_info):
    """The example(s) (K, C, H, W) uint8 the network sees for an image file: for a network
    trained on TV frames, the frame's corner crops; otherwise the image in the trained
    colour mode, resized to the trained size (as the folder loader resizes). Either is
    padded as in training (train --pad). Pillow's errors (IMAGE_ERRORS) pass through."""
    pad = data_info.get("pad", 0)
    if trained_on_frames(data_info):
        x = frame_examples(path, _crop(data_info))
    else:
        C, H, W = in_shape
        with Image.open(path) as im:
            im = im.convert("L" if C == 1 else "RGB")
        if im.size != (W - 2 * pad, H - 2 * pad):
            im = im.resize((W - 2 * pad, H - 2 * pad), RESAMPLE)
        x = to_chw(im)[None]  # (1, C, H - 2 pad, W - 2 pad)
    return np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))


def _crop(data_info):
    return RSCrop(**{**data_info["crop"], "corners": tuple(data_info["crop"]["corners"])})


@dataclass
class Prediction:
    path: str
    label: str  # the class (for a frame: the frame decision)
    confidence: float  # the capsule length behind it (a CNN's: a probability); see predict_files
    corner: str  # the corner the frame's channel was found in; "" for a plain image or nologo
    lengths: np.ndarray  # (K, J): one row per example (a frame's corners), K = 1 for an image
    corners: tuple = ()  # corner names of a frame's rows


def predict_files(net, paths, classes, data_info, threshold=PRESENT, *, seen=None, chunk=256):
    """A Prediction for each readable image file, yielded in order, `chunk` files decoded at
    a time (on a few threads; a few unreadable files are skipped with a warning, more are
    an error, as when loading data). A frame is decided at `threshold`: its channel, the
    length of that channel's capsule in the corner where it is longest, and that corner;
    or nologo, with 1 minus the longest channel capsule's length (how clearly no channel
    capsule is present) and no corner; with `seen` (frames.seen_mask's), as `evaluate`
    does. A plain image: its longest capsule and its length."""
    is_frame = trained_on_frames(data_info)
    corners = tuple(data_info["crop"]["corners"]) if is_frame else ()
    read = partial(image_examples, in_shape=net.config.in_shape, data_info=data_info)
    for start in range(0, len(paths), chunk):
        part = paths[start:start + chunk]
        examples, kept = map_images(read, part, what=f"{len(part)} images from {part[0]}")
        if not examples:
            continue
        K = len(examples[0])
        lengths = class_lengths(net, np.concatenate(examples), n_classes=len(classes))
        lengths = lengths.reshape(len(kept), K, -1)  # (files, K, J)
        for i, frame_lengths in zip(kept, lengths):
            path = str(part[i])
            if is_frame:
                yield _frame_prediction(path, frame_lengths, classes, corners, threshold, seen)
            else:
                k = int(frame_lengths[0].argmax())
                yield Prediction(path, classes[k], float(frame_lengths[0, k]), "",
                                 frame_lengths)


def _frame_prediction(path, lengths, classes, corners, threshold, seen):
    """The Prediction of one frame from its corners' lengths (K, J), decided as `evaluate`
    decides frames, with the corner rule of `seen`."""
    one_frame = np.zeros(len(lengths), int)  # every row a corner of this frame, in order
    lengths = only_where_seen(lengths, seen, one_frame)
    _, (corner,), (channel,), (top,) = strongest_channels(lengths, one_frame,
                                                          classes.index(NOLOGO))
    if top >= threshold:
        return Prediction(path, classes[channel], float(top), corners[corner], lengths, corners)
    return Prediction(path, NOLOGO, 1 - float(top), "", lengths, corners)
