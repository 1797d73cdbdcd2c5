"""A stand-in for frames whose logo renderings training never showed (issue 20), built from
the test frames of an R&S folder (tvlogos-de) and their boxes, written in the same layout:

    <out>/<channel>/test-<part>-<n>/<frame>.jpg + metadata.txt     (the logo's new box)
    <out>/nologo/test-overlay/<frame>.jpg

so that `minicaps evaluate CKPT --data <out>` scores it whole and `score_parts` by part.
The parts, each from every test logo frame unless said otherwise:

- hue, invert, grey, flat: the logo recoloured in place (logo_edits.recolour);
- badge: a word ("HD", a region) drawn beside the logo;
- flat+badge: both, as a blue "WDR HD" where training shows a white "WDR";
- small: the logo shrunk to 11-15 pixels high (the smallest annotated sizes) and pasted
  onto another photograph (a test frame without a logo, or its mirror image);
- overlay: test frames without a logo given a programme's overlay in a corner (label
  nologo), four per photograph;
- overlay+logo: a third of the test logo frames with an overlay in a corner of their own
  that holds no logo (label: their channel).

Frames are written as JPEG at quality 60-85, as tvlogos-de's were. `build_photographic`
writes every test frame, logo and photograph alike, once per change of a whole frame
(logo_edits.PHOTOGRAPHIC: blurred, softened, grainy, or compressed at quality 15-25).
"""
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

from ..data.rs_index import NOLOGO, read_index
from ..errors import MinicapsError
from .logo_edits import (PHOTOGRAPHIC, RECOLOURS, add_badge, add_overlay, move_logo,
                         photographic, recolour)
from .logo_masks import first_logo, logo_frames, logo_mask, read_frame, rendering_masks

PARTS = (*RECOLOURS, "badge", "flat+badge", "small", "overlay", "overlay+logo")
SMALL_HEIGHTS = (11, 15)  # pixels: the smallest logos annotated in tvlogos-de and the challenge
OVERLAYS_PER_PHOTO = 4
CORNERS = ("tl", "tr", "bl")
JPEG_QUALITY = (60, 86)  # drawn from, as tvlogos-de's frames were written
COMPRESSED_QUALITY = (15, 26)  # the photographic change "jpeg"


def _frame_corner(box):
    x, y, w, h = box
    return ("t" if y + h / 2 < 405 / 2 else "b") + ("l" if x + w / 2 < 360 else "r")


def write_frame(out, channel, folder, name, frame, box, rng, quality=JPEG_QUALITY):
    """One frame of the layout: <out>/<channel>/<folder>/<name>.jpg (JPEG quality drawn
    from `quality`, tvlogos-de's by default) and its metadata.txt (none for nologo, whose
    frames share one folder)."""
    where = Path(out) / channel / folder
    where.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(np.clip(np.rint(frame), 0, 255).astype(np.uint8))
    image.save(where / f"{name}.jpg", quality=int(rng.integers(*quality)))
    if box is not None:
        (where / "metadata.txt").write_text(f"{channel},{','.join(map(str, box))}\n")


def build(root, out, *, seed=0, parts=PARTS, masks=None, progress=None):
    """Write the stand-in built from the test frames of `root` into the new folder `out`;
    returns {part: frames written}. `masks`: rendering_masks(root), if already made."""
    out = Path(out)
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise MinicapsError(f"unknown parts {', '.join(sorted(unknown))}; there are "
                            f"{', '.join(PARTS)}")
    _refuse_used(out)
    progress = progress or (lambda part, done: None)
    masks = rendering_masks(root) if masks is None else masks
    logos = logo_frames(root, "test")
    frames, _ = read_index(root)
    empties = [f.path for f in frames if f.split == "test" and not f.logos]
    if not logos or not empties:
        raise MinicapsError(f"{root}: the stand-in needs test frames with and without a logo")
    counts = defaultdict(int)
    for p, part in enumerate(parts):
        if part == "overlay":
            for k, path in enumerate(empties):
                photo = read_frame(path)
                for j in range(OVERLAYS_PER_PHOTO):
                    rng = np.random.default_rng([seed, p, k, j])
                    corner = CORNERS[(k + j) % len(CORNERS)]
                    write_frame(out, NOLOGO, "test-overlay", f"{Path(path).stem}-{j}",
                                add_overlay(photo, corner, rng), None, rng)
                    counts[part] += 1
            progress(part, counts[part])
            continue
        for k, (path, channel, box) in enumerate(logos):
            rng = np.random.default_rng([seed, p, k])
            if part == "overlay+logo" and k % 3:
                continue
            frame = read_frame(path)
            mask = logo_mask(masks, channel, box, frame)
            if part in RECOLOURS:
                frame = recolour(frame, box, mask, part, rng)
            elif part == "badge":
                frame = add_badge(frame, box, mask, rng)
            elif part == "flat+badge":
                frame = add_badge(recolour(frame, box, mask, "flat", rng), box, mask, rng)
            elif part == "small":
                background = read_frame(empties[rng.integers(len(empties))])
                if rng.random() < 0.5:
                    background = background[:, ::-1].copy()
                height = min(rng.uniform(*SMALL_HEIGHTS), box[3])
                frame, box = move_logo(frame, box, mask, background, height)
            else:  # overlay+logo: in a corner the crops see, not the logo's
                free = [c for c in CORNERS if c != _frame_corner(box)]
                frame = add_overlay(frame, free[rng.integers(len(free))], rng)
            write_frame(out, channel, f"test-{part}-{k:04d}", Path(path).stem, frame, box, rng)
            counts[part] += 1
        progress(part, counts[part])
    _copy_labels(root, out)
    return dict(counts)


def build_photographic(root, out, *, seed=0, progress=None):
    """Write every test frame of `root` (with a logo or without) once per PHOTOGRAPHIC
    change into the new folder `out`, in the layout above; returns {change: frames}."""
    out = Path(out)
    _refuse_used(out)
    progress = progress or (lambda part, done: None)
    frames, _ = read_index(root)
    tested = [f for f in frames if f.split == "test"]
    if not tested:
        raise MinicapsError(f"{root}: no test frames")
    counts = defaultdict(int)
    for p, kind in enumerate(PHOTOGRAPHIC):
        quality = COMPRESSED_QUALITY if kind == "jpeg" else JPEG_QUALITY
        for k, f in enumerate(tested):
            rng = np.random.default_rng([seed, p, k])
            frame = photographic(read_frame(f.path), kind, rng)
            channel, box = first_logo(f) if f.logos else (NOLOGO, None)
            folder = f"test-{kind}" if box is None else f"test-{kind}-{k:04d}"
            write_frame(out, channel, folder, Path(f.path).stem, frame, box, rng, quality)
            counts[kind] += 1
        progress(kind, counts[kind])
    _copy_labels(root, out)
    return dict(counts)


def _refuse_used(out):
    if out.exists() and any(out.iterdir()):
        raise MinicapsError(f"{out} is not empty: the frames go into a new folder")


def _copy_labels(root, out):
    labels = Path(root) / "labels.pkl"
    if labels.is_file():  # the same class order as the source (a plain dict of str -> int)
        shutil.copy(labels, out / "labels.pkl")


def part_of(path, root):
    """The part a frame of a stand-in folder belongs to, from its folder's name."""
    folder = Path(path).relative_to(root).parts[1]
    name = folder[len("test-"):] if folder.startswith("test-") else folder
    return name.rsplit("-", 1)[0] if name[-1:].isdigit() else name


def stand_in_lengths(net, ckpt, folder, batch_size=256, any_corner=False):
    """The checkpoint's network run once over a stand-in folder (or any R&S folder: its
    folders' names make the parts): its data, each frame's part, every corner's class
    lengths (N, J), each channel's 0 outside the corners training showed it in unless
    `any_corner` (as `minicaps evaluate` decides); `tally` decides and counts the frames at
    any threshold."""
    from ..training.evaluate import checkpoint_data, class_lengths
    from ..training.frames import only_where_seen, seen_mask
    ds = checkpoint_data(ckpt, "checkpoint", str(folder))
    frames, _ = read_index(folder, unsplit="test")
    tested = [f for f in frames if f.split == "test"]
    if len(tested) != len(ds.test_frame_y):
        raise MinicapsError(f"{folder}: {len(tested) - len(ds.test_frame_y)} frames unreadable")
    lengths = class_lengths(net, ds.test_x, batch_size=batch_size, n_classes=len(ds.classes))
    if not any_corner:
        seen = seen_mask(ckpt.data_info, ds.classes)
        lengths = only_where_seen(lengths, seen, ds.test_frame)
    return ds, [part_of(f.path, folder) for f in tested], lengths


def tally(ds, parts, lengths, threshold):
    """{part: (right, frames)}, {(part, class): (right, frames)} and the frames'
    Evaluation, each frame decided at `threshold` from stand_in_lengths' lengths."""
    from ..training.evaluate import evaluation_of
    ev = evaluation_of(lengths, ds.test_y, frame=ds.test_frame, frame_y=ds.test_frame_y,
                       classes=ds.classes, threshold=threshold)
    by_part, by_class = defaultdict(lambda: [0, 0]), defaultdict(lambda: [0, 0])
    for i, y, pred in zip(ev.frame_ids, ev.frame_y, ev.frame_pred):
        for key, table in ((parts[i], by_part), ((parts[i], ds.classes[y]), by_class)):
            table[key][0] += int(y == pred)
            table[key][1] += 1
    return dict(by_part), dict(by_class), ev


def ranked_first(ds, lengths):
    """(right, logo frames): of the frames with a logo, how many have their own channel's
    capsule the longest over their corners, whatever the threshold. The frame decision's
    other half is the threshold, which turns a right but short capsule into `nologo`: this
    count tells a mark not recognised from one recognised but not surely."""
    from ..training.frames import strongest_channels
    nologo = ds.classes.index(NOLOGO)
    ids, _, channel, _ = strongest_channels(lengths, np.asarray(ds.test_frame), nologo)
    truth = np.asarray(ds.test_frame_y)[ids]
    with_logo = truth != nologo
    return int(np.sum(channel[with_logo] == truth[with_logo])), int(np.sum(with_logo))


def score_parts(net, ckpt, folder, threshold, batch_size=256, any_corner=False):
    """tally's scores at `threshold` and the classes, for the checkpoint's network on a
    stand-in folder."""
    ds, parts, lengths = stand_in_lengths(net, ckpt, folder, batch_size, any_corner)
    by_part, by_class, ev = tally(ds, parts, lengths, threshold)
    return by_part, by_class, ds.classes, ev
