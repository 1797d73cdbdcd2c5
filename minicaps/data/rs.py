"""TV frames of the Rohde & Schwarz logo challenge, as corner crops.

A channel logo is small (median 48x23 of a 720x405 frame) and sits in a corner, so a frame is
cut into one crop per corner and each crop is one example: labelled with the frame's channel
if the centre of the logo box lies in it, else "nologo". A crop of 320x140 scaled by 0.4 gives
128x56 examples that still show a median logo at about 19x9 pixels.

Why 320x140: it is the smallest crop (to a multiple of 10) that holds every logo box of
tvlogos-de whole. All logos but four fit 178x83 measured from their corner (n24's sit at the
bottom left, y up to 392); the four are kabel1doku frames whose logo reaches 319 px in and
136 px up from the bottom-left corner. Four crops of 320x140 do not overlap, so a logo centre lies in one crop at
most. On the real challenge's annotations (rs-annotations.csv) the same crop holds 99.91 % of
the 42,684 boxes whole and the centres of 99.96 %.

The frame decision is not made here but in minicaps.training.frames: a frame shows the
channel whose capsule is the longest over its corners (those training showed that channel
in), if long enough; else nologo.

Decoding: JPEG frames are decoded by Pillow at 1/2, 1/4 or 1/8 size where the scale allows
(`Image.draft`, DCT scaling, several times faster than a full decode), then each corner is
cropped and resized in one `resize(box=...)` call, with sub-pixel boxes.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from minicaps.data.common import RESAMPLE, balanced_subset, map_images, stack
from minicaps.data.dataset import Dataset
from minicaps.data.rs_index import NOLOGO, read_index
from minicaps.errors import MinicapsError

# Frame size the crops and the annotations refer to; other frame sizes are scaled to it.
FRAME_W, FRAME_H = 720, 405
CORNERS = ("tl", "tr", "bl", "br")


@dataclass(frozen=True)
class RSCrop:
    """Which corners of a frame become examples, how large a crop is and how it is scaled.

    width, height: crop size in pixels of the 720x405 frame; scale: resize factor of the crop;
    grey: one channel instead of RGB. An example has shape (C, round(height*scale), round(width*scale)).
    """

    corners: tuple[str, ...] = CORNERS
    width: int = 320
    height: int = 140
    scale: float = 0.4
    grey: bool = False

    def __post_init__(self):
        object.__setattr__(self, "corners", tuple(self.corners))  # a list from a CLI stays hashable
        if not self.corners or len(set(self.corners)) != len(self.corners) or not set(self.corners) <= set(CORNERS):
            raise MinicapsError(f"crop corners must be distinct names among {CORNERS}, got {self.corners}")
        if not (0 < self.width <= FRAME_W and 0 < self.height <= FRAME_H):
            raise MinicapsError(f"crop size {self.width}x{self.height} must fit the {FRAME_W}x{FRAME_H} frame")
        if not 0 < self.scale <= 4 or min(self.out_size) < 1:
            raise MinicapsError(f"crop scale {self.scale} must be in (0, 4] and leave at least one pixel")

    @property
    def out_size(self) -> tuple[int, int]:
        """(w, h) of one example in pixels."""
        return round(self.width * self.scale), round(self.height * self.scale)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one example."""
        w, h = self.out_size
        return (1 if self.grey else 3), h, w

    def box(self, corner: str) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) of a corner's crop in frame pixels."""
        x0 = 0 if corner[1] == "l" else FRAME_W - self.width
        y0 = 0 if corner[0] == "t" else FRAME_H - self.height
        return x0, y0, x0 + self.width, y0 + self.height


def frame_examples(image: Image.Image | np.ndarray | str | Path, crop: RSCrop = RSCrop()) -> np.ndarray:
    """The corner examples of one frame, (K, C, h, w) uint8, K = len(crop.corners).

    `image` is a Pillow image, an (H, W) or (H, W, 3) uint8 array, or a file path; a frame of
    another size than 720x405 is treated as that frame scaled.
    """
    if isinstance(image, (str, Path)):
        with Image.open(image) as im:
            return frame_examples(im, crop)
    if isinstance(image, np.ndarray):
        image = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
    mode = "L" if crop.grey else "RGB"
    full_w, full_h = image.size
    # A JPEG not yet decoded is decoded at 1/s size, the largest s in 1, 2, 4, 8 that keeps at
    # least the resolution of the output (draft picks s from full size // requested size).
    need = max(crop.scale * FRAME_W / full_w, crop.scale * FRAME_H / full_h)  # output / full px
    s = max([d for d in (1, 2, 4, 8) if d * need <= 1] or [1])
    image.draft(mode, (max(full_w // s, 1), max(full_h // s, 1)))
    image = image.convert(mode)
    reduced = full_w / image.width  # 1, 2, 4 or 8 after draft
    sx, sy = full_w / FRAME_W / reduced, full_h / FRAME_H / reduced  # frame pixels -> decoded pixels
    out = []
    for corner in crop.corners:
        x0, y0, x1, y1 = crop.box(corner)
        box = (x0 * sx, y0 * sy, min(x1 * sx, image.width), min(y1 * sy, image.height))
        out.append(np.asarray(image.resize(crop.out_size, RESAMPLE, box=box)))
    out = np.stack(out)  # (K, h, w) or (K, h, w, C)
    return out[:, None] if crop.grey else out.transpose(0, 3, 1, 2)  # (K, C, h, w)


def _centre_in(box, logo) -> bool:
    x, y, w, h = logo
    return box[0] <= x + w / 2 < box[2] and box[1] <= y + h / 2 < box[3]


def corner_logos(logos, crop: RSCrop) -> list:
    """The (name, (x, y, w, h)) logo each corner example shows: the one whose centre lies in
    the crop, or None."""
    out = []
    for corner in crop.corners:
        inside = [logo for logo in logos if _centre_in(crop.box(corner), logo[1])]
        out.append(inside[0] if inside else None)
    return out


def corner_labels(logos, crop: RSCrop, classes: list[str]) -> list[int]:
    """Class index of each corner example: its logo's (corner_logos), else nologo."""
    return [classes.index(logo[0] if logo else NOLOGO) for logo in corner_logos(logos, crop)]


def corner_boxes(logos, crop: RSCrop) -> list[tuple[int, int, int, int]]:
    """(y0, x0, y1, x1) in example pixels of the logo each corner example shows (its box
    rounded outwards, clipped to the example), or (-1, -1, -1, -1) where it shows none."""
    h, w = crop.shape[1:]
    sx, sy = w / crop.width, h / crop.height  # frame pixels -> example pixels
    out = []
    for corner, logo in zip(crop.corners, corner_logos(logos, crop)):
        if logo is None:
            out.append((-1, -1, -1, -1))
            continue
        left, top = crop.box(corner)[:2]
        x, y, lw, lh = logo[1]
        out.append((max(int(np.floor((y - top) * sy)), 0), max(int(np.floor((x - left) * sx)), 0),
                    min(int(np.ceil((y + lh - top) * sy)), h), min(int(np.ceil((x + lw - left) * sx)), w)))
    return out


def crop_coverage(root: str | Path, crop: RSCrop = RSCrop()) -> float:
    """Fraction of the logo boxes of a data folder that lie whole inside one corner crop."""
    frames, _ = read_index(root)
    boxes = [pos for f in frames for _, pos in f.logos]
    inside = [
        any(b[0] <= x and b[1] <= y and x + w <= b[2] and y + h <= b[3] for b in map(crop.box, crop.corners))
        for x, y, w, h in boxes
    ]
    return float(np.mean(inside)) if inside else 1.0


def load_rs(
    root: str | Path, *, crop: RSCrop | None = None, merge_variants: bool = True, limit: int | None = None,
    test_only: bool = False, classes: list[str] | None = None,
) -> Dataset:
    """Corner examples of every frame; `limit` caps the frames per split (class-balanced).

    To score a trained network on a folder: `test_only` decodes the test frames alone (and
    counts frames in folders named for no split as test frames), `classes` (the network's,
    "nologo" last) labels them in that order; a logo name outside `classes` is refused.
    """
    root = Path(root)
    crop = crop or RSCrop()
    frames, found = read_index(root, merge_variants, unsplit="test" if test_only else "holdout")
    if classes is None:
        classes = found
    elif set(found) - set(classes):
        raise MinicapsError(f"{root}: its logos {', '.join(sorted(set(found) - set(classes)))} "
                            f"are none of the classes {', '.join(classes)}")
    arrays = {}
    for split in ("train", "test"):
        fs = [f for f in frames if f.split == split and not (test_only and split == "train")]
        frame_y = np.array([classes.index(f.logos[0][0] if f.logos else NOLOGO) for f in fs], np.int64)
        keep = balanced_subset(frame_y, limit)
        fs, frame_y = [fs[i] for i in keep], frame_y[keep]
        crops, ok = map_images(partial(frame_examples, crop=crop), [f.path for f in fs], what=f"{root} ({split})")
        fs, frame_y = [fs[i] for i in ok], frame_y[ok]
        K = len(crop.corners)
        x = stack(crops, (K, *crop.shape)).reshape(-1, *crop.shape)  # (F*K, C, h, w)
        labels = np.array([corner_labels(f.logos, crop, classes) for f in fs], np.int64).reshape(-1, K)
        y = labels.reshape(-1)  # (F*K,) frame by frame, corners in crop.corners order
        missed = int(np.sum((frame_y != len(classes) - 1) & (labels == len(classes) - 1).all(axis=1)))
        if missed:
            warnings.warn(
                f"{root} ({split}): {missed} of {len(fs)} logo frames have their logo outside every "
                f"corner crop {crop.corners} of {crop.width}x{crop.height}", stacklevel=2
            )
        boxes = np.array([corner_boxes(f.logos, crop) for f in fs], np.int64).reshape(-1, 4)
        arrays[split] = (x, y, np.repeat(np.arange(len(fs)), K), frame_y, boxes)
    if test_only and not len(arrays["test"][0]):
        raise MinicapsError(f"{root}: no readable test frames")
    if not test_only and not len(arrays["train"][0]):
        raise MinicapsError(f"{root}: no readable training frames")
    (tx, ty, tf, tfy, tb), (vx, vy, vf, vfy, _) = arrays["train"], arrays["test"]
    return Dataset(
        name=root.resolve().name, classes=classes,
        train_x=tx, train_y=ty, test_x=vx, test_y=vy,
        train_frame=tf, test_frame=vf, test_frame_y=vfy, train_frame_y=tfy, train_box=tb,
    )
