"""The one container every loader returns, so the trainer never cares where data came from.

Images stay uint8 on the host: a 2,800-frame logo set is 16 MB as uint8 and four times that as
float32, and the batch iterator converts one batch at a time on whichever device trains.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from minicaps.errors import MinicapsError


@dataclass
class Dataset:
    """Train and test splits of labelled images, NCHW uint8.

    For sets whose examples are parts of a larger frame (the corner crops of a TV frame),
    `*_frame` gives the frame index of each example and `*_frame_y` the label of each frame,
    so a trainer can score whole frames as well as single crops, and `train_box` the logo
    box of each training example, for the background swap (minicaps.augment).
    """

    name: str  # e.g. "mnist", "tvlogos-de", "bundled-mnist", a folder's name
    classes: list[str]  # class names; the index is the label
    train_x: np.ndarray  # (N, C, H, W) uint8
    train_y: np.ndarray  # (N,) int64
    test_x: np.ndarray  # (M, C, H, W) uint8
    test_y: np.ndarray  # (M,) int64
    train_frame: np.ndarray | None = None  # (N,) int64 frame index of each example, or None
    test_frame: np.ndarray | None = None  # (M,) int64
    test_frame_y: np.ndarray | None = None  # (F_test,) int64 label of each test frame
    train_frame_y: np.ndarray | None = None  # (F_train,) int64
    # (N, 4) int64 (y0, x0, y1, x1) of the logo in each training example, -1s where none
    train_box: np.ndarray | None = None

    def __post_init__(self):
        self.classes = [str(c) for c in self.classes]
        for split in ("train", "test"):
            x, y = getattr(self, f"{split}_x"), getattr(self, f"{split}_y")
            if x.ndim != 4 or x.dtype != np.uint8:
                raise MinicapsError(f"{self.name}: {split}_x must be (N, C, H, W) uint8, got {x.shape} {x.dtype}")
            if y.shape != (len(x),):
                raise MinicapsError(f"{self.name}: {split}_y has shape {y.shape}, expected ({len(x)},)")
            if len(y) and (y.min() < 0 or y.max() >= len(self.classes)):
                raise MinicapsError(f"{self.name}: {split}_y holds labels outside 0..{len(self.classes) - 1}")
            setattr(self, f"{split}_y", y.astype(np.int64, copy=False))
            frame, frame_y = getattr(self, f"{split}_frame"), getattr(self, f"{split}_frame_y")
            if frame is not None:
                if frame.shape != (len(x),) or frame_y is None or (len(frame) and frame.max() >= len(frame_y)):
                    raise MinicapsError(f"{self.name}: {split}_frame does not match {split}_x / {split}_frame_y")
        if self.train_box is not None:
            if self.train_box.shape != (len(self.train_x), 4):
                raise MinicapsError(f"{self.name}: train_box must be ({len(self.train_x)}, 4)")
            self.train_box = self.train_box.astype(np.int64, copy=False)
        if self.train_x.shape[1:] != self.test_x.shape[1:]:
            raise MinicapsError(
                f"{self.name}: train images {self.train_x.shape[1:]} and test images "
                f"{self.test_x.shape[1:]} differ in shape"
            )

    @property
    def in_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one example."""
        return tuple(int(d) for d in self.train_x.shape[1:])

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def padded(self, pad: int) -> "Dataset":
        """The same data with `pad` background (0) pixels added on every side of every image:
        MNIST's 28x28 digits in a 40x40 canvas with pad 6, as for the affNIST-style test."""
        if not pad:
            return self
        widths = ((0, 0), (0, 0), (pad, pad), (pad, pad))
        box = self.train_box
        if box is not None:
            box = np.where(box >= 0, box + pad, box)
        return replace(self, train_x=np.pad(self.train_x, widths), test_x=np.pad(self.test_x, widths),
                       train_box=box)

    def summary(self) -> str:
        """One line for logs: name, classes, split sizes, example shape."""
        c, h, w = self.in_shape
        frames = ""
        if self.train_frame_y is not None and self.test_frame_y is not None:
            frames = f" ({len(self.train_frame_y)} / {len(self.test_frame_y)} frames)"
        return (
            f"{self.name}: {self.n_classes} classes, {len(self.train_y)} train / "
            f"{len(self.test_y)} test examples{frames} of {c}x{h}x{w}"
        )
