"""Training-time augmentation of uint8 image batches (B, C, H, W), on the host.

Every function draws from the generator it is given, in a fixed order, so a seeded run (and
a resumed one, whose generator state comes from the checkpoint) sees the same batches.
Pixels that come from outside the image are 0, as in the paper's zero-padded shifts.
"""
import io

import numpy as np
from PIL import Image

from ..data.common import to_chw

# Qualities a recompressed image is written at, drawn per image as rng.integers takes them
# (the end excluded): from coarse blocks to the mild loss of a broadcast encoded twice;
# tvlogos-de's frames were written at 60-85.
RECOMPRESS_QUALITY = (20, 71)


def shift(x, max_shift, rng):
    """Each image moved by its own dy, dx drawn uniformly from -max_shift..max_shift:
    the paper's only augmentation (2 px). Pure slicing, no arithmetic on pixels."""
    return shift_by(x, rng.integers(-max_shift, max_shift + 1, size=(len(x), 2)))


def shift_by(x, offsets):
    """Image b moved down by offsets[b, 0] and right by offsets[b, 1] pixels (B, 2)."""
    _, _, H, W = x.shape
    out = np.zeros_like(x)
    for b, (dy, dx) in enumerate(offsets):
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
    return rotate_by(x, rng.uniform(-max_degrees, max_degrees, size=len(x)))


def rotate_by(x, degrees):
    """Image b rotated about its centre by degrees[b], nearest-neighbour (see rotate)."""
    return warp(x, rotations(degrees), nearest=True)


def rotations(degrees):
    """(B, 2, 2) matrices turning (y, x) offsets by degrees[b] (as warp uses them)."""
    theta = np.deg2rad(np.asarray(degrees, dtype=float))
    cos, sin = np.cos(theta), np.sin(theta)
    return np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], 1)


def zoom(x, max_scale, rng):
    """Each image scaled about its centre by a factor drawn log-uniformly from
    1/(1+max_scale)..1+max_scale, bilinear: logos of other sizes than the training set's.
    Pixels from outside the image are 0."""
    return zoom_by(x, np.exp(rng.uniform(-np.log1p(max_scale), np.log1p(max_scale),
                                         size=len(x))))


def zoom_by(x, factors):
    """Image b scaled about its centre by factors[b], bilinear (see zoom)."""
    return warp(x, np.eye(2) / np.asarray(factors, dtype=float)[:, None, None])


def warp(x, inverse, *, nearest=False, chunk=512):
    """Images resampled through their own affine maps about the centre: output pixel
    (y, x) of image b takes the input at centre + inverse[b] @ ((y, x) - centre), the
    inverse (B, 2, 2) of the transformation wanted, rows and columns in (y, x) order.
    Bilinear, or nearest-neighbour; input from outside the image is 0. Works through
    `chunk` images at a time, so a whole test set costs a few of its images' floats."""
    A = np.asarray(inverse, dtype=float)
    out = np.empty_like(x)
    for start in range(0, len(x), chunk):
        part = slice(start, start + chunk)
        out[part] = _warp(x[part], A[part], nearest)
    return out


def _warp(x, A, nearest):
    B, C, H, W = x.shape
    cy, cx = (H - 1) / 2, (W - 1) / 2
    dy, dx = np.mgrid[0:H, 0:W] - np.array([cy, cx])[:, None, None]  # (H, W) each
    sy = cy + A[:, 0, 0, None, None] * dy + A[:, 0, 1, None, None] * dx  # (B, H, W)
    sx = cx + A[:, 1, 0, None, None] * dy + A[:, 1, 1, None, None] * dx
    # one zero pixel around the image; nearest-neighbour copies pixels, so it keeps uint8
    padded = np.zeros((B, C, H + 2, W + 2), x.dtype if nearest else np.float32)
    padded[:, :, 1:-1, 1:-1] = x
    b = np.arange(B)[:, None, None]

    def at(yy, xx):  # (B, H, W) integer source pixels -> (B, C, H, W), 0 outside
        yy, xx = np.clip(yy + 1, 0, H + 1), np.clip(xx + 1, 0, W + 1)
        return padded[b, :, yy, xx].transpose(0, 3, 1, 2)

    if nearest:
        return at(np.rint(sy).astype(np.intp), np.rint(sx).astype(np.intp))
    y0, x0 = np.floor(sy).astype(np.intp), np.floor(sx).astype(np.intp)
    wy = (sy - y0).astype(np.float32)[:, None]  # (B, 1, H, W)
    wx = (sx - x0).astype(np.float32)[:, None]
    out = ((1 - wy) * ((1 - wx) * at(y0, x0) + wx * at(y0, x0 + 1))
           + wy * ((1 - wx) * at(y0 + 1, x0) + wx * at(y0 + 1, x0 + 1)))
    return np.rint(out)


def jitter(x, strength, rng):
    """Per image: contrast about its mean times 1+-strength, brightness +-strength*128,
    each colour channel's gain times 1+-strength/2; clipped to 0..255. Frames from other
    cameras, channels' logos at other opacities and colours."""
    B, C = x.shape[:2]
    contrast = 1 + rng.uniform(-strength, strength, size=(B, 1, 1, 1))
    brightness = rng.uniform(-strength, strength, size=(B, 1, 1, 1)) * 128
    gain = 1 + rng.uniform(-strength / 2, strength / 2, size=(B, C, 1, 1))
    return recolour(x, contrast, brightness, gain)


def recolour(x, contrast, brightness, gain=1.0):
    """uint8 images x (B, C, H, W) with their contrast about each image's mean (over all
    its channels) times `contrast`, `brightness` grey levels added, then each channel
    times `gain` (numbers, or arrays that broadcast against (B, C, 1, 1)); rounded and
    clipped to 0..255."""
    xf = x.astype(np.float32)
    mean = xf.mean(axis=(1, 2, 3), keepdims=True)  # (B, 1, 1, 1)
    out = ((xf - mean) * np.asarray(contrast, np.float32) + mean
           + np.asarray(brightness, np.float32))
    out *= np.asarray(gain, np.float32)
    return np.clip(np.rint(out), 0, 255).astype(x.dtype)


def blur(x, p, rng):
    """A fraction p of the images (drawn per image) smoothed by the 3x3 binomial filter
    [1 2 1]/4 in each direction: softer renderings and re-encoded frames. Edges repeat."""
    chosen = rng.random(len(x)) < p
    out = x.copy()
    if not chosen.any():
        return out
    xf = np.pad(x[chosen].astype(np.float32), ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
    xf = (xf[:, :, :-2] + 2 * xf[:, :, 1:-1] + xf[:, :, 2:]) / 4  # rows
    xf = (xf[:, :, :, :-2] + 2 * xf[:, :, :, 1:-1] + xf[:, :, :, 2:]) / 4  # columns
    out[chosen] = np.rint(xf).astype(x.dtype)
    return out


def recompress(x, p, rng, scale=1.0):
    """A fraction p of the images (drawn per image) written as JPEG at a quality drawn from
    RECOMPRESS_QUALITY and read back: the blocks, ringing and bled colour of compressed
    broadcasts. `scale` is the images' size relative to the pictures a broadcast compresses
    (an R&S crop's scale): each image is enlarged by 1 / scale (pixels repeated) before it
    is compressed and shrunk back (averaged), so that JPEG's 8x8 blocks fall on the frame's
    pixels, not the crop's. Three channels are compressed as colour, others one by one."""
    chosen = rng.random(len(x)) < p
    quality = rng.integers(*RECOMPRESS_QUALITY, size=len(x))
    _, C, H, W = x.shape
    size = (max(round(W / scale), 1), max(round(H / scale), 1))
    out = x.copy()
    for b in np.flatnonzero(chosen):
        pictures = [x[b].transpose(1, 2, 0)] if C == 3 else list(x[b])
        out[b] = np.concatenate([to_chw(_jpeg_round_trip(Image.fromarray(picture), size,
                                                         int(quality[b])))
                                 for picture in pictures])
    return out


def _jpeg_round_trip(image, size, quality):
    """`image` enlarged to `size`, written as JPEG at `quality`, read and shrunk back."""
    buffer = io.BytesIO()
    image.resize(size, Image.NEAREST).save(buffer, format="JPEG", quality=quality)
    return Image.open(buffer).resize(image.size, Image.BOX)


def swap_backgrounds(x, box, images, empty, box_pool, p, rng, min_scale=1.0):
    """A fraction p of the images (drawn per image) put on another photograph: where image b
    shows a logo (box[b] = (y0, x0, y1, x1), -1s where none), its logo box is pasted into
    a background drawn from images[empty] (the training images without a logo) at the same
    place; an image without a logo instead gets a patch of a background in a box drawn from
    `box_pool` (N, 4), so that the pasted rectangle's edges tell the network nothing about
    whether a logo is there. With `min_scale` < 1 a pasted logo box is first shrunk by a
    factor drawn from min_scale..1 and placed on the line from the box's centre to its
    corner nearest the image's corner (uniformly): logos smaller than training's, where a
    channel's smaller logo keeps its margin from the frame's corner as well as where it
    does not. (Always centred, they were missed at the corner: docs/studies/logo_shift.md.)

    Why: the logo frames' 150 photographs per channel are few enough to be remembered with
    their logo, and test frames show other photographs."""
    chosen = rng.random(len(x)) < p
    source = empty[rng.integers(len(empty), size=len(x))]
    pooled = rng.integers(len(box_pool), size=len(x))
    scales = rng.uniform(min_scale, 1, size=len(x)) if min_scale < 1 else np.ones(len(x))
    toward = rng.uniform(0, 1, size=len(x)) if min_scale < 1 else np.zeros(len(x))
    out = x.copy()
    for b in np.flatnonzero(chosen):
        background = images[source[b]]
        if box[b, 0] >= 0:
            out[b] = background
            _paste_scaled(out[b], x[b], box[b], scales[b], toward[b])
        else:
            y0, x0, y1, x1 = box_pool[pooled[b]]
            out[b, :, y0:y1, x0:x1] = background[:, y0:y1, x0:x1]
    return out


def _paste_scaled(target, image, box, scale, toward=0.0):
    """image's box (y0, x0, y1, x1) pasted into target (C, H, W) at the same place, or
    shrunk by `scale` (< 1) and placed `toward` (0..1) of the way from the box's centre
    to the box's corner nearest the image's corner (1: flush with that corner)."""
    y0, x0, y1, x1 = box
    patch = image[:, y0:y1, x0:x1]
    if scale < 1:
        h, w = max(int(round((y1 - y0) * scale)), 1), max(int(round((x1 - x0) * scale)), 1)
        patch = np.stack([np.asarray(Image.fromarray(c).resize((w, h), Image.LANCZOS))
                          for c in patch])
        H, W = target.shape[1:]
        y0 = _between(y0 + (y1 - y0 - h) // 2, y0 if y0 + y1 < H else y1 - h, toward)
        x0 = _between(x0 + (x1 - x0 - w) // 2, x0 if x0 + x1 < W else x1 - w, toward)
        y1, x1 = y0 + h, x0 + w
    target[:, y0:y1, x0:x1] = patch


def _between(start, end, t):
    return int(round(start + t * (end - start)))


def augment(x, rng, *, max_shift=0, hflip=False, max_degrees=0.0, max_scale=0.0,
            colour=0.0, blur_p=0.0, recompress_p=0.0, recompress_scale=1.0):
    """x with the requested augmentations, in the order rotate, zoom, flip, shift, colour
    jitter, blur, recompression. Steps that are off draw nothing from `rng`, so older runs
    replay exactly."""
    if max_degrees:
        x = rotate(x, max_degrees, rng)
    if max_scale:
        x = zoom(x, max_scale, rng)
    if hflip:
        x = flip(x, rng)
    if max_shift:
        x = shift(x, max_shift, rng)
    if colour:
        x = jitter(x, colour, rng)
    if blur_p:
        x = blur(x, blur_p, rng)
    if recompress_p:
        x = recompress(x, recompress_p, rng, recompress_scale)
    return x
