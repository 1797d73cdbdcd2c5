"""Datasets: one loader per source, all returning the same `Dataset` of NCHW uint8 arrays.

    load_dataset()                         the MNIST sample bundled with the package
    load_dataset("data/mnist")             idx files (MNIST, Fashion-MNIST)
    load_dataset("data/tvlogos-de")        R&S logo-challenge layout, corner crops of frames
    load_dataset("my-images")              class folders (ImageFolder convention)
    load_dataset("saved.npz")              a Dataset saved with save_npz

The layout is recognised from the files (`detect_layout`), so the CLI needs one path argument.
Every bad input raises MinicapsError with a one-line message naming the file.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from minicaps.data.bundled import load_bundled, load_npz, save_npz
from minicaps.data.dataset import Dataset
from minicaps.data.folders import is_folders, load_folders
from minicaps.data.idx import is_idx, load_idx, read_idx
from minicaps.data.rs import RSCrop, crop_coverage, frame_examples, load_rs
from minicaps.data.rs_index import channel_of
from minicaps.errors import MinicapsError

__all__ = [
    "Dataset", "RSCrop", "channel_of", "crop_coverage", "detect_layout", "frame_examples",
    "load_bundled", "load_dataset", "load_folders", "load_idx", "load_npz", "load_rs",
    "read_idx", "save_npz",
]

LAYOUTS = ("bundled", "rs", "idx", "folders")


def detect_layout(path: str | Path | None) -> str:
    """"bundled", "rs", "idx" or "folders", judged from the files at `path`.

    The R&S layout is checked before class folders because its frame folders look like them.
    """
    if path is None:
        return "bundled"
    root = Path(path)
    if not root.exists():
        raise MinicapsError(f"{root}: no such file or directory")
    if root.is_file() and root.suffix == ".npz":
        return "bundled"
    if root.is_dir():
        if (root / "master.pkl").is_file() or any(root.glob("*/*/metadata.txt")) or any(root.glob("*/metadata.txt")):
            return "rs"
        if is_idx(root):
            return "idx"
        if is_folders(root):
            return "folders"
    raise MinicapsError(
        f"{root}: not a dataset minicaps knows (expected an .npz, idx files like "
        "train-images-idx3-ubyte.gz, master.pkl or <channel>/<folder>/metadata.txt, "
        "or one folder of images per class)"
    )


def load_dataset(
    path: str | Path | None = None,
    *,
    rs_crop: RSCrop | None = None,
    merge_variants: bool = True,
    limit: int | None = None,
    size: tuple[int, int] | None = None,
    test_only: bool = False,
    classes: list[str] | None = None,
) -> Dataset:
    """Load the dataset at `path` (None: the bundled MNIST sample).

    rs_crop, merge_variants: for the R&S layout (corner crops; label variants merged onto
    their channel). size: (H, W) for class folders (default: the most common image size).
    limit: at most this many examples per split (frames for the R&S layout), a seeded
    class-balanced subset, for quick runs and tests.
    test_only, classes: for scoring a trained network on an R&S folder (see load_rs); other
    layouts are read whole as they are.
    """
    layout = detect_layout(path)
    if layout == "bundled":
        dataset = load_bundled(limit=limit) if path is None else load_npz(path, limit=limit)
    elif layout == "rs":
        dataset = load_rs(path, crop=rs_crop, merge_variants=merge_variants, limit=limit,
                          test_only=test_only, classes=classes)
    elif layout == "idx":
        dataset = load_idx(path, limit=limit)
    else:
        dataset = load_folders(path, size=size, limit=limit)
    if not test_only:  # frames to score only: the checkpoint's classes count
        check_classes(dataset, path)
    return dataset


def check_classes(dataset: Dataset, path: str | Path | None) -> None:
    """Refuse training data of fewer than two classes: a classifier of one class is right
    about every image without learning anything, and would report 100 %."""
    found = [dataset.classes[k] for k in np.unique(dataset.train_y)]
    if len(found) < 2:
        where = "the bundled sample" if path is None else str(path)
        what = f"one class, {found[0]!r}," if found else "no class"
        raise MinicapsError(f"{where}: the training images hold {what} and a classifier "
                            f"needs at least two")
