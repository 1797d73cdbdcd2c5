"""A held-out rendering per channel: the training logo frames of each channel grouped by
how their logo looks, one group per channel left out of training and scored alone.

tvlogos-de's test frames show the renderings its training frames show, so its test split
cannot say how a network does on a rendering it has never seen. Grouping each channel's
training logos by appearance (k-means over a small colour thumbnail of the logo's own
pixels, logo_masks.py, on grey, and the box's aspect ratio, which differs between
renderings) and leaving one group out gives that question an answer from real frames. The group left out is the one nearest to a
sixth of the channel's training frames (so most renderings stay in training).
"""
import os
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

from ..data.rs_index import read_index
from ..errors import MinicapsError
from .logo_masks import logo_mask, read_frame, rendering_masks

THUMB = (16, 8)  # (w, h) of the colour thumbnail of a logo box
ASPECT_WEIGHT = 20.0  # the log aspect ratio against the thumbnail's 384 values in 0..1
HELD_SHARE = 1 / 6  # of a channel's training frames, the wanted size of its held group
MIN_HELD = 8  # frames: a smaller group is never the one held out


def appearance(path, channel, box, masks):
    """The feature vector of a logo: a thumbnail (0..1) of its pixels (its rendering's
    mask) on mid grey, and its box's log aspect ratio."""
    x, y, w, h = box
    frame = read_frame(path)
    m = logo_mask(masks, channel, box, frame)[..., None]
    logo = frame[y:y + h, x:x + w] * m + 128 * (1 - m)
    thumb = Image.fromarray(np.clip(logo, 0, 255).astype(np.uint8)).resize(THUMB, Image.BILINEAR)
    return np.concatenate([np.asarray(thumb, np.float64).ravel() / 255,
                           [ASPECT_WEIGHT * np.log(w / h)]])


def groups_of(features, k, seed, iterations=50):
    """Group labels (N,) of the feature rows (N, F): k-means, seeded. Centres start as
    k-means++ draws them (each next one far from those drawn, with probability growing as
    the squared distance), then Lloyd's steps until no row changes group."""
    rng = np.random.default_rng(seed)
    features = np.asarray(features, dtype=np.float64)
    k = min(k, len(features))
    centres = [features[rng.integers(len(features))]]
    for _ in range(1, k):
        distance = ((features[:, None] - np.array(centres)[None]) ** 2).sum(-1).min(1)
        total = distance.sum()
        pick = rng.choice(len(features), p=distance / total) if total > 0 else \
            rng.integers(len(features))
        centres.append(features[pick])
    centres = np.array(centres)
    labels = None
    for _ in range(iterations):
        distance = ((features[:, None] - centres[None]) ** 2).sum(-1)  # (N, k)
        new = distance.argmin(1)
        if labels is not None and np.array_equal(new, labels):
            break
        labels = new
        for g in range(k):
            if (labels == g).any():  # an emptied group keeps its centre
                centres[g] = features[labels == g].mean(0)
    return labels


def held_group(labels):
    """The group to hold out: of the groups with at least MIN_HELD members, the one whose
    size is nearest to HELD_SHARE of all; None if there is none."""
    sizes = np.bincount(labels)
    fits = [g for g in range(len(sizes)) if sizes[g] >= MIN_HELD and sizes[g] < len(labels)]
    if not fits:
        return None
    return min(fits, key=lambda g: abs(sizes[g] - HELD_SHARE * len(labels)))


def _link(source, target):
    target.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(Path(source).resolve(), target)


def hold_out(root, out, *, k=4, seed=0, masks=None):
    """Write <out>/train, `root` without each channel's held-out training frames (its
    files linked, not copied), and <out>/heldout, those frames as test frames of the
    same layout; returns {channel: (training frames kept, held out)}. `masks`:
    logo_masks.rendering_masks(root), if already made."""
    root, out = Path(root), Path(out)
    if out.exists() and any(out.iterdir()):
        raise MinicapsError(f"{out} is not empty: the split goes into a new folder")
    masks = rendering_masks(root) if masks is None else masks
    frames, _ = read_index(root)
    by_channel = defaultdict(list)
    for f in frames:
        if f.split == "train" and f.logos:
            by_channel[f.logos[0][0]].append(f)
    held, counts = set(), {}
    for channel, members in sorted(by_channel.items()):
        features = np.stack([appearance(f.path, channel, tuple(round(v) for v in f.logos[0][1]),
                                        masks) for f in members])
        labels = groups_of(features, k, seed)
        g = held_group(labels)
        chosen = [] if g is None else [f for f, lab in zip(members, labels) if lab == g]
        held.update(f.path for f in chosen)
        counts[channel] = (len(members) - len(chosen), len(chosen))
    for f in frames:
        relative = Path(f.path).relative_to(root)
        if f.path in held:
            folder = out / "heldout" / relative.parts[0] / f"test-heldout-{relative.parts[1]}"
            _link(f.path, folder / relative.name)
            _link(f.path.parent / "metadata.txt", folder / "metadata.txt")
            continue
        _link(f.path, out / "train" / relative)
        if f.logos and not (out / "train" / relative.parent / "metadata.txt").exists():
            _link(f.path.parent / "metadata.txt", out / "train" / relative.parent / "metadata.txt")
    if (root / "labels.pkl").is_file():  # the same class order as the source
        shutil.copy(root / "labels.pkl", out / "train" / "labels.pkl")
        shutil.copy(root / "labels.pkl", out / "heldout" / "labels.pkl")
    return counts
