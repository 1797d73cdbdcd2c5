"""Fixed transformations of test images, to ask how a network copes with inputs unlike its
training data: `minicaps evaluate --transform rotate:30`. Each applies the same change to
every image, through the same code as training-time augmentation, except `affine[:SEED]`,
the affNIST-style test: every image gets its own random affine map. `contrast:F` scales
each image's contrast about its mean by F and `brightness:D` adds D grey levels (of 255):
the same frames as if filmed by another camera or graded otherwise: do the network's
answers depend on the photographs' look?

affine draws, per image: a rotation within +-20 degrees, a scale of 0.8-1.2 along each
axis, a shear within +-0.2, and then a translation that keeps the transformed content
(its nonzero pixels) inside the image, uniform over the room there is. These are our
choices in the spirit of affNIST (MNIST digits in 40x40 under random affine maps; train
on `--pad 6 --shift 6`), not its published generator.
"""
import math

import numpy as np

from ..training.augment import recolour, rotate_by, rotations, shift_by, warp, zoom_by
from ..errors import MinicapsError

KINDS = ("rotate:DEG", "flip", "shift:PX", "scale:S", "contrast:F", "brightness:D",
         "affine[:SEED]")
AFFINE_DEGREES, AFFINE_SCALE, AFFINE_SHEAR = 20.0, (0.8, 1.2), 0.2


def parse(spec):
    """'rotate:30' -> ("rotate", 30.0); 'flip' -> ("flip", None). One clear error else."""
    kind, _, value = spec.partition(":")
    if kind == "flip" and not value:
        return "flip", None
    if kind == "affine":
        if not value:
            return "affine", 0
        if value.isdigit():
            return "affine", int(value)
    if kind in ("rotate", "shift", "scale", "contrast", "brightness") and value:
        try:
            number = float(value)
        except ValueError:
            number = None
        if number is not None and math.isfinite(number) and \
                (kind not in ("scale", "contrast") or number > 0):
            return kind, number
    raise MinicapsError(f"--transform {spec!r}: expected one of {', '.join(KINDS)} "
                        "(S and F > 0)")


def apply(x, spec):
    """The uint8 batch x (B, C, H, W) transformed by `spec` (see parse); shift moves every
    image down and right by PX pixels."""
    kind, value = parse(spec)
    B = len(x)
    if kind == "flip":
        return np.ascontiguousarray(x[:, :, :, ::-1])
    if kind == "affine":
        return random_affine(x, np.random.default_rng(value))
    if kind == "rotate":
        return rotate_by(x, np.full(B, value))
    if kind == "scale":
        return zoom_by(x, np.full(B, value))
    if kind == "contrast":
        return recolour(x, value, 0)
    if kind == "brightness":
        return recolour(x, 1, value)
    return shift_by(x, np.full((B, 2), int(round(value))))


def random_affine(x, rng):
    """Each image through its own random affine map, affNIST-style (module docstring)."""
    B = len(x)
    degrees = rng.uniform(-AFFINE_DEGREES, AFFINE_DEGREES, B)
    scale = rng.uniform(*AFFINE_SCALE, size=(B, 2))  # (y, x)
    shear = rng.uniform(-AFFINE_SHEAR, AFFINE_SHEAR, B)
    rotation = rotations(degrees)
    shearing = np.tile(np.eye(2), (B, 1, 1))
    shearing[:, 1, 0] = shear  # x moves in proportion to y
    forward = rotation @ shearing @ (np.eye(2) * scale[:, :, None])  # (B, 2, 2)
    out = warp(x, np.linalg.inv(forward))
    return shift_by(out, _random_placement(out, rng))


def _random_placement(x, rng):
    """(B, 2) shifts that move each image's nonzero content anywhere it still fits whole."""
    H, W = x.shape[2:]
    offsets = np.zeros((len(x), 2), np.int64)
    for b, image in enumerate(x.max(axis=1)):  # (H, W): nonzero in any channel
        rows, cols = np.flatnonzero(image.any(axis=1)), np.flatnonzero(image.any(axis=0))
        if len(rows):
            offsets[b] = (rng.integers(-rows[0], H - rows[-1]),
                          rng.integers(-cols[0], W - cols[-1]))
    return offsets
