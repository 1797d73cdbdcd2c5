"""What the loaders share: deterministic subsets and splits, and decoding many images at once
while tolerating a few broken files.

Every choice here is seeded so that `limit=100` or a held-out split picks the same examples on
every machine and every run: results stay comparable and tests stay exact.
"""
from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence, TypeVar

import numpy as np
from PIL import Image

from minicaps.errors import MinicapsError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp")
# More unreadable images than this fraction means the folder is wrong, not a few bad files.
MAX_BAD_FRACTION = 0.05
SEED = 0
# Pillow >= 9.1 moved the filters into an enum; older versions keep them on Image.
RESAMPLE = getattr(Image, "Resampling", Image).LANCZOS
# Errors Pillow raises for a file that is not a (complete) image.
IMAGE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)

T = TypeVar("T")


def image_files(folder: Path) -> list[Path]:
    """Image files under `folder` (recursive, sorted, hidden files skipped)."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_EXTS and not p.name.startswith(".") and p.is_file()
    )


def balanced_subset(labels: Sequence[int], limit: int | None, seed: int = SEED) -> np.ndarray:
    """Sorted indices of at most `limit` examples, taken round-robin over the classes after a
    seeded shuffle within each class.

    Why not the first `limit`: files are usually grouped by class, so a plain head would hold
    one class; round-robin keeps every class present even for a limit of a few dozen.
    """
    labels = np.asarray(labels)
    if limit is None or limit >= len(labels):
        return np.arange(len(labels))
    if limit < 1:
        raise MinicapsError(f"limit must be at least 1, got {limit}")
    rng = np.random.default_rng(seed)
    index, rank, klass = [], [], []
    for k, c in enumerate(np.unique(labels)):
        members = rng.permutation(np.flatnonzero(labels == c))
        index.append(members)
        rank.append(np.arange(len(members)))
        klass.append(np.full(len(members), k))
    index, rank, klass = (np.concatenate(a) for a in (index, rank, klass))
    order = np.lexsort((klass, rank))  # rank first, then class: one of each class per round
    return np.sort(index[order[:limit]])


def holdout_mask(labels: Sequence[int], fraction: float = 0.2, seed: int = SEED) -> np.ndarray:
    """Boolean mask of a seeded `fraction` of each class, to serve as test split when the data
    comes without one. A class of two or more examples gives at least one to the test split."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    is_test = np.zeros(len(labels), bool)
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        n_test = int(round(fraction * len(members)))
        if len(members) >= 2:
            n_test = max(n_test, 1)
        is_test[members[:n_test]] = True
    return is_test


def map_images(read: Callable[[Path], T], paths: Sequence[Path], what: str) -> tuple[list[T], list[int]]:
    """Apply `read` to every path on a few threads (Pillow decodes without the GIL).

    Returns the results of the readable files and their indices into `paths`. Unreadable files
    are skipped with one warning naming them; more than MAX_BAD_FRACTION of them raises.
    """
    def attempt(p):
        try:
            return read(p), None
        except IMAGE_ERRORS as e:
            return None, e

    workers = min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        outcomes = list(pool.map(attempt, paths))
    kept = [i for i, (_, err) in enumerate(outcomes) if err is None]
    bad = [(paths[i], err) for i, (_, err) in enumerate(outcomes) if err is not None]
    if bad:
        # A few names with their reasons are enough to act on; the count says the rest.
        names = "; ".join(f"{p} ({e})" for p, e in bad[:3]) + \
            (f"; and {len(bad) - 3} more" if len(bad) > 3 else "")
        if len(bad) > MAX_BAD_FRACTION * len(paths):
            raise MinicapsError(
                f"{what}: {len(bad)} of {len(paths)} images are unreadable "
                f"(more than {MAX_BAD_FRACTION:.0%}): {names}"
            )
        warnings.warn(f"{what}: skipped {len(bad)} unreadable image(s) of {len(paths)}: {names}", stacklevel=3)
    return [outcomes[i][0] for i in kept], kept


def to_chw(image: Image.Image) -> np.ndarray:
    """A Pillow image in mode L or RGB as a (C, H, W) uint8 array."""
    a = np.asarray(image, dtype=np.uint8)
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)  # (H, W, C) -> (C, H, W)


def stack(arrays: list[np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    """Stack equally shaped arrays, or an empty (0, *shape) array when there are none."""
    return np.stack(arrays) if arrays else np.zeros((0, *shape), np.uint8)
