"""Where a logo's own pixels are inside its annotated box, in frames of the R&S layout.

The frames come with boxes, not with the logos' shapes: a box holds the logo blended into a
photograph. Each channel shows a few renderings, and a rendering keeps its aspect ratio, so
the boxes of one channel group by aspect ratio into renderings. Within a box, a pixel's
distance from the photograph around the box (interpolated from the box's rim) is large on
the logo and, averaged over many frames of one rendering at one size, small elsewhere: the
photographs differ from frame to frame, the logo does not. That average, ramped from 0
(photograph) to 1 (logo) as training's logo augmentations do (training/logo_augment.py), is
the rendering's mask; a frame's logo is its box's pixels weighted by the mask resized to
the box.
"""
from collections import defaultdict

import numpy as np
from PIL import Image

from ..data.rs_index import read_index
from ..training.logo_augment import ramp, rim_distance

RIM = 4  # pixels around a box that stand for the photograph behind it
TEMPLATE_HEIGHT = 32  # masks are averaged at this height, the box's aspect ratio kept
MIN_FRAMES = 5  # a rendering seen fewer times is masked by its own frame's distances
MAX_FRAMES = 60  # frames averaged per rendering (enough for a clean mask; decoding costs)


def rendering_key(channel, box):
    """(channel, aspect ratio to one decimal): the boxes of one rendering share it."""
    _, _, w, h = box
    return channel, round(w / h, 1)


def logo_frames(root, split):
    """[(frame path, channel, (x, y, w, h) in whole pixels)] of the logo frames of `split`."""
    frames, _ = read_index(root)
    return [(f.path, *first_logo(f)) for f in frames if f.split == split and f.logos]


def first_logo(frame):
    """(channel, (x, y, w, h) in whole pixels) of an indexed frame's first logo."""
    channel, box = frame.logos[0]
    return channel, tuple(int(round(v)) for v in box)


def frame_rim_distance(frame, box):
    """rim_distance of the box (x, y, w, h) of a frame (H, W, 3) float array."""
    x, y, w, h = box
    return rim_distance(frame.transpose(2, 0, 1), (y, x, y + h, x + w), rim=RIM)


def read_frame(path):
    """A frame as an (H, W, 3) float32 array."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), np.float32)


def _resize(a, size):
    return np.asarray(Image.fromarray(a.astype(np.float32)).resize(size, Image.BILINEAR))


def rendering_masks(root, splits=("train", "test")):
    """{rendering_key: (TEMPLATE_HEIGHT, w) mask in 0..1} from the logo frames of `splits`
    (at most MAX_FRAMES per rendering, taken evenly)."""
    groups = defaultdict(list)
    for split in splits:
        for path, channel, box in logo_frames(root, split):
            groups[rendering_key(channel, box)].append((path, box))
    masks = {}
    for key, members in groups.items():
        if len(members) < MIN_FRAMES:
            continue
        size = (max(int(round(TEMPLATE_HEIGHT * key[1])), 1), TEMPLATE_HEIGHT)
        step = max(len(members) // MAX_FRAMES, 1)
        mean = np.mean([_resize(frame_rim_distance(read_frame(p), box), size)
                        for p, box in members[::step][:MAX_FRAMES]], axis=0)
        masks[key] = ramp(mean)
    return masks


def logo_mask(masks, channel, box, frame):
    """(h, w) mask in 0..1 of the logo in `box` of `frame` (H, W, 3): its rendering's mask
    resized to the box, or the frame's own rim distances for a rarely seen rendering."""
    _, _, w, h = box
    key = rendering_key(channel, box)
    if key in masks:
        return np.clip(_resize(masks[key], (w, h)), 0, 1)
    return ramp(frame_rim_distance(frame, box))
