"""MNIST-style idx files (MNIST, Fashion-MNIST, KMNIST, ...), gzipped or raw.

The idx format is a 4-byte magic number (two zero bytes, a type code, the number of
dimensions), one big-endian uint32 per dimension, then the data. We accept only unsigned bytes
(type 0x08), which is what every MNIST-like set uses, and check that the file holds exactly as
many bytes as its header promises: a truncated download then fails here, with the file's name,
rather than as a reshape error deep in training.
"""
from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from minicaps.data.common import balanced_subset
from minicaps.data.dataset import Dataset
from minicaps.errors import MinicapsError

UBYTE = 0x08
FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
# Accepted spellings of each split's prefix and of the separator before "idx".
PREFIXES = {"train": ("train",), "test": ("t10k", "test")}


def read_idx(path: str | Path) -> np.ndarray:
    """The array stored in one idx file (read-only view of the file's bytes)."""
    path = Path(path)
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise MinicapsError(f"{path}: cannot read idx file ({e})") from None
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != UBYTE or data[3] == 0:
        raise MinicapsError(
            f"{path}: bad idx magic number {data[:4].hex()} (expected 000008 and a dimension count)"
        )
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise MinicapsError(f"{path}: idx header is truncated")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = int(np.prod(dims, dtype=np.int64))
    if len(data) - header != expected:
        raise MinicapsError(
            f"{path}: holds {len(data) - header} bytes of data but its header promises "
            f"{expected} (dimensions {dims}): truncated or corrupt"
        )
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims)


def find_idx(root: Path, split: str, kind: str) -> Path | None:
    """The file of `split` ("train"/"test") and `kind` ("images"/"labels") in root, if any."""
    nd = 3 if kind == "images" else 1
    for prefix in PREFIXES[split]:
        for sep in ("-", "."):
            for ext in (".gz", ""):
                p = root / f"{prefix}-{kind}{sep}idx{nd}-ubyte{ext}"
                if p.is_file():
                    return p
    return None


def is_idx(root: Path) -> bool:
    return root.is_dir() and find_idx(root, "train", "images") is not None


def load_idx(root: str | Path, *, limit: int | None = None) -> Dataset:
    """Train and test splits from the four idx files in `root`, as (N, 1, H, W) uint8."""
    root = Path(root)
    name = root.resolve().name.lower()
    classes = FASHION_CLASSES if "fashion" in name else [str(d) for d in range(10)]
    splits = {}
    for split in ("train", "test"):
        files = {kind: find_idx(root, split, kind) for kind in ("images", "labels")}
        for kind, p in files.items():
            if p is None:
                raise MinicapsError(f"{root}: no {split} {kind} idx file (e.g. {PREFIXES[split][0]}-{kind}-idx...)")
        images, labels = read_idx(files["images"]), read_idx(files["labels"])
        if images.ndim != 3 or labels.ndim != 1:
            raise MinicapsError(
                f"{root}: {split} images must be 3-d and labels 1-d, got {images.shape} and {labels.shape}"
            )
        if len(images) != len(labels):
            raise MinicapsError(
                f"{root}: {len(images)} {split} images but {len(labels)} labels "
                f"({files['images'].name}, {files['labels'].name})"
            )
        if len(labels) and labels.max() >= len(classes):
            raise MinicapsError(f"{files['labels']}: label {labels.max()} outside 0..{len(classes) - 1}")
        keep = balanced_subset(labels, limit)
        splits[split] = (images[keep][:, None], labels[keep].astype(np.int64))  # (N, 1, H, W), (N,)
    return Dataset(
        name=name,
        classes=list(classes),
        train_x=splits["train"][0], train_y=splits["train"][1],
        test_x=splits["test"][0], test_y=splits["test"][1],
    )
