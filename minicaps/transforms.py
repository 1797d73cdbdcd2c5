"""Fixed transformations of test images, to ask how a network copes with inputs unlike its
training data: `minicaps evaluate --transform rotate:30`. Each applies the same change to
every image, through the same resampling code as training-time augmentation."""
import numpy as np

from .augment import rotate_by, shift_by, zoom_by
from .errors import MinicapsError

KINDS = ("rotate:DEG", "flip", "shift:PX", "scale:S")


def parse(spec):
    """'rotate:30' -> ("rotate", 30.0); 'flip' -> ("flip", None). One clear error else."""
    kind, _, value = spec.partition(":")
    if kind == "flip" and not value:
        return "flip", None
    if kind in ("rotate", "shift", "scale") and value:
        try:
            number = float(value)
        except ValueError:
            number = None
        if number is not None and (kind != "scale" or number > 0):
            return kind, number
    raise MinicapsError(f"--transform {spec!r}: expected one of {', '.join(KINDS)} "
                        "(scale S > 0)")


def apply(x, spec):
    """The uint8 batch x (B, C, H, W) transformed by `spec` (see parse); shift moves every
    image down and right by PX pixels."""
    kind, value = parse(spec)
    B = len(x)
    if kind == "flip":
        return np.ascontiguousarray(x[:, :, :, ::-1])
    if kind == "rotate":
        return rotate_by(x, np.full(B, value))
    if kind == "scale":
        return zoom_by(x, np.full(B, value))
    return shift_by(x, np.full((B, 2), int(round(value))))
