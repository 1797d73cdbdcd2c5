"""Training-time augmentation of uint8 image batches (B, C, H, W), on the host.

Every function draws from the generator it is given, in a fixed order, so a seeded run (and
a resumed one, whose generator state comes from the checkpoint) sees the same batches.
Pixels that come from outside the image are 0, as in the paper's zero-padded shifts.
"""
import numpy as np


def shift(x, max_shift, rng):
    """Each image moved by its own dy, dx drawn uniformly from -max_shift..max_shift:
    the paper's only augmentation (2 px). Pure slicing, no arithmetic on pixels."""
    B, _, H, W = x.shape
    d = rng.integers(-max_shift, max_shift + 1, size=(B, 2))
    out = np.zeros_like(x)
    for b, (dy, dx) in enumerate(d):
        # positive dy moves the content down, positive dx to the right
        out[b, :, max(dy, 0):H + min(dy, 0), max(dx, 0):W + min(dx, 0)] = \
            x[b, :, max(-dy, 0):H + min(-dy, 0), max(-dx, 0):W + min(-dx, 0)]
    return out


def flip(x, rng):
    """Half of the images (drawn per image) mirrored left to right."""
    mirrored = rng.random(len(x)) < 0.5
    out = x.copy()
    out[mirrored] = x[mirrored, :, :, ::-1]
    return out


def rotate(x, max_degrees, rng):
    """Each image rotated about its centre by an angle drawn uniformly from
    -max_degrees..max_degrees, nearest-neighbour: every output pixel takes the input pixel
    nearest to where the inverse rotation puts it (0 where that falls outside)."""
    B, _, H, W = x.shape
    theta = np.deg2rad(rng.uniform(-max_degrees, max_degrees, size=B))[:, None, None]  # (B, 1, 1)
    cy, cx = (H - 1) / 2, (W - 1) / 2
    yy, xx = np.mgrid[0:H, 0:W]  # (H, W) output pixel coordinates
    cos, sin = np.cos(theta), np.sin(theta)
    sy = np.rint(cy + cos * (yy - cy) - sin * (xx - cx)).astype(np.intp)  # (B, H, W)
    sx = np.rint(cx + sin * (yy - cy) + cos * (xx - cx)).astype(np.intp)
    inside = (sy >= 0) & (sy < H) & (sx >= 0) & (sx < W)  # (B, H, W)
    b = np.arange(B)[:, None, None]
    out = x[b, :, np.clip(sy, 0, H - 1), np.clip(sx, 0, W - 1)]  # (B, H, W, C)
    out = out * inside[..., None].astype(x.dtype)
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))  # (B, C, H, W)


def augment(x, rng, *, max_shift=0, hflip=False, max_degrees=0.0):
    """x with the requested augmentations, in the order rotate, flip, shift. Steps that are
    off draw nothing from `rng`."""
    if max_degrees:
        x = rotate(x, max_degrees, rng)
    if hflip:
        x = flip(x, rng)
    if max_shift:
        x = shift(x, max_shift, rng)
    return x
