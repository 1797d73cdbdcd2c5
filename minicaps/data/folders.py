"""A folder of images, one sub-folder per class (the torchvision ImageFolder convention).

    root/<class>/*.png|jpg|jpeg|bmp                      a seeded 20 % of each class is held out
    root/train/<class>/...  and  root/test/<class>/...   the split is given

A capsule network needs one input size, so every image is resized to a common size: the most
common size among the images unless `size=(H, W)` is given. Images stay RGB (C=3) unless all of
them are greyscale (C=1); alpha is dropped, palettes are expanded.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from minicaps.data.common import (
    IMAGE_EXTS, RESAMPLE, balanced_subset, holdout_mask, image_files, map_images, stack, to_chw,
)
from minicaps.data.dataset import Dataset
from minicaps.errors import MinicapsError

GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}


def class_dirs(root: Path) -> list[Path]:
    """Sub-folders of root that hold at least one image, sorted by name."""
    if not root.is_dir():
        return []
    return [d for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".") and image_files(d)]


def has_split(root: Path) -> bool:
    return bool(class_dirs(root / "train")) and bool(class_dirs(root / "test"))


def is_folders(root: Path) -> bool:
    return bool(class_dirs(root))


def _read(path: Path) -> Image.Image:
    image = Image.open(path)
    image.load()  # decode now, so a corrupt file fails here and is skipped by map_images
    return image


def _listing(root: Path) -> tuple[list[str], dict[str, tuple[list[Path], np.ndarray]]]:
    """Class names and, per split, the image paths with their labels."""
    if has_split(root):
        per_split = {s: {d.name: image_files(d) for d in class_dirs(root / s)} for s in ("train", "test")}
        classes = sorted(set(per_split["train"]) | set(per_split["test"]))
        out = {}
        for s, by_class in per_split.items():
            paths = [p for c in classes for p in by_class.get(c, [])]
            labels = [k for k, c in enumerate(classes) for _ in by_class.get(c, [])]
            out[s] = (paths, np.array(labels, np.int64))
        return classes, out
    dirs = class_dirs(root)
    classes = [d.name for d in dirs]
    paths = [p for d in dirs for p in image_files(d)]
    labels = np.array([k for k, d in enumerate(dirs) for _ in image_files(d)], np.int64)
    is_test = holdout_mask(labels)
    pick = lambda mask: ([p for p, m in zip(paths, mask) if m], labels[mask])  # noqa: E731
    return classes, {"train": pick(~is_test), "test": pick(is_test)}


def load_folders(
    root: str | Path, *, size: tuple[int, int] | None = None, limit: int | None = None
) -> Dataset:
    """Images from class folders, resized to `size` (H, W) or to the most common size."""
    root = Path(root)
    classes, splits = _listing(root)
    if not classes:
        raise MinicapsError(f"{root}: no class folders with images ({'/'.join(IMAGE_EXTS)})")
    images, labels = {}, {}
    for s, (paths, y) in splits.items():
        keep = balanced_subset(y, limit)
        loaded, ok = map_images(_read, [paths[i] for i in keep], what=f"{root} ({s})")
        images[s], labels[s] = loaded, y[keep][ok]
    everything = images["train"] + images["test"]
    if not images["train"]:
        raise MinicapsError(f"{root}: no readable training images")
    if size is None:
        w, h = Counter(im.size for im in everything).most_common(1)[0][0]
    elif len(size) == 2 and all(isinstance(d, int) and d > 0 for d in size):
        h, w = size
    else:
        raise MinicapsError(f"image size must be two positive integers (H, W), got {size!r}")
    mode = "L" if all(im.mode in GREY_MODES for im in everything) else "RGB"
    channels = 1 if mode == "L" else 3

    def convert(im: Image.Image) -> np.ndarray:
        im = im.convert(mode)
        if im.size != (w, h):
            im = im.resize((w, h), RESAMPLE)
        return to_chw(im)  # (C, H, W)

    arrays = {s: stack([convert(im) for im in images[s]], (channels, h, w)) for s in images}
    return Dataset(
        name=root.resolve().name,
        classes=classes,
        train_x=arrays["train"], train_y=labels["train"],
        test_x=arrays["test"], test_y=labels["test"],
    )
