"""The stand-in for unseen logo renderings (minicaps/tools/logo_*.py, rendering_groups.py):
masks find the logo, edits change what they say and nothing else, the set is written in
the R&S layout that evaluate reads, and the held-out split keeps renderings apart."""
import numpy as np
import pytest
from PIL import Image

from minicaps.data import load_dataset
from minicaps.data.rs_index import read_index
from minicaps.errors import MinicapsError
from minicaps.tools import logo_shift, rendering_groups
from minicaps.tools.logo_edits import add_badge, add_overlay, move_logo, photographic, recolour
from minicaps.tools.logo_masks import frame_rim_distance, logo_mask, rendering_masks
from minicaps.training.logo_augment import hue_rotation
from minicaps.training import checkpoint, loop as train
from minicaps.training.frames import stored_threshold

# two channels, each one rendering: a red bar with a white stripe (a, top left) and a blue
# square with a yellow dot (b, top right), on noisy photographs
BOXES = {"a": (20, 14, 40, 16), "b": (650, 12, 24, 24)}


def paint_logo(frame, channel, box):
    x, y, w, h = box
    if channel == "a":
        frame[y:y + h, x:x + w] = (220, 30, 30)
        frame[y + 6:y + 10, x + 4:x + w - 4] = (250, 250, 250)
    else:
        frame[y:y + h, x:x + w] = (30, 40, 210)
        frame[y + 8:y + 16, x + 8:x + 16] = (250, 230, 20)


def photo(rng):
    smooth = rng.uniform(40, 160, size=(27, 48, 3))
    return np.kron(smooth, np.ones((15, 15, 1)))[:405, :720] + rng.normal(0, 4, (405, 720, 3))


def save(path, frame):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(frame, 0, 255).astype(np.uint8)).save(path, quality=95)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("logos")
    rng = np.random.default_rng(0)
    for channel, box in BOXES.items():
        for split, n in (("train", 8), ("test", 3)):
            for i in range(n):
                frame = photo(rng)
                paint_logo(frame, channel, box)
                save(root / channel / f"{split}-{i:04d}" / f"{channel}_{i}.jpg", frame)
                (root / channel / f"{split}-{i:04d}" / "metadata.txt").write_text(
                    f"{channel},{','.join(map(str, box))}\n")
    for split, n in (("train", 8), ("test", 2)):
        for i in range(n):
            save(root / "nologo" / split / f"empty_{i}.jpg", photo(rng))
    return root


def test_masks_find_the_logo_and_not_the_photograph(root):
    masks = rendering_masks(root)
    assert set(masks) == {("a", 2.5), ("b", 1.0)}
    x, y, w, h = BOXES["a"]
    frame = np.asarray(Image.open(next((root / "a").glob("test-0000/*.jpg"))), np.float32)
    mask = logo_mask(masks, "a", BOXES["a"], frame)
    assert mask.shape == (h, w) and mask.mean() > 0.8  # the bar fills its box
    # a smooth photograph is guessed from the box's rim to within its noise: no logo
    ramp = np.linspace(30, 220, 720)[None, :, None] + np.linspace(0, 30, 405)[:, None, None]
    blank = ramp + np.random.default_rng(5).normal(0, 3, (405, 720, 3))
    assert frame_rim_distance(blank, BOXES["a"]).mean() < 10


def test_recolouring_changes_the_logo_and_nothing_else():
    rng = np.random.default_rng(1)
    frame = photo(rng).astype(np.float32)
    box = BOXES["a"]
    paint_logo(frame, "a", box)
    x, y, w, h = box
    mask = np.zeros((h, w), np.float32)
    mask[4:12, 2:-2] = 1
    for kind in ("hue", "invert", "grey", "flat"):
        out = recolour(frame, box, mask, kind, np.random.default_rng(2))
        changed = np.abs(out - frame).max(axis=-1) > 0.5
        assert changed[y + 4:y + 12, x + 2:x + w - 2].any(), kind
        assert not changed[mask_outside(frame.shape, box, mask)].any(), kind
    grey = recolour(frame, box, mask, "grey", rng)[y + 5, x + 5]
    assert grey[0] == pytest.approx(grey[1]) == pytest.approx(grey[2])
    inverted = recolour(frame, box, mask, "invert", rng)[y + 5, x + 5]
    assert np.allclose(inverted, 255 - frame[y + 5, x + 5])
    assert np.allclose(hue_rotation(360), np.eye(3), atol=1e-6)
    assert np.allclose(hue_rotation(120) @ [255, 0, 0], [0, 255, 0], atol=1e-3)
    with pytest.raises(ValueError):
        recolour(frame, box, mask, "sepia", rng)


def mask_outside(shape, box, mask):
    """Pixels of the frame outside the logo's mask."""
    x, y, w, h = box
    out = np.ones(shape[:2], bool)
    out[y:y + h, x:x + w] = mask == 0
    return out


def test_badges_overlays_and_small_logos_land_where_they_should():
    rng = np.random.default_rng(3)
    frame = photo(rng).astype(np.float32)
    box = BOXES["b"]
    x, y, w, h = box
    mask = np.ones((h, w), np.float32)
    out = add_badge(frame, box, mask, np.random.default_rng(4), word="HD")
    changed = np.argwhere(np.abs(out - frame).max(axis=-1) > 30)
    assert len(changed) and not ((changed[:, 1] >= x) & (changed[:, 1] < x + w)
                                 & (changed[:, 0] >= y) & (changed[:, 0] < y + h)).any()
    assert changed[:, 0].max() < y + 2 * h and np.abs(changed[:, 1] - (x + w / 2)).max() < 4 * w
    for corner in ("tl", "tr", "bl"):
        out = add_overlay(frame, corner, np.random.default_rng(5))
        rows, cols = np.nonzero(np.abs(out - frame).max(axis=-1) > 30)
        assert len(rows) and (rows < 96).all() == (corner[0] == "t")
        # it starts in the corner (a long title may reach past the crop)
        assert (cols.min() < 40) == (corner[1] == "l") and (cols.max() > 680) == (corner[1] == "r")
    background = photo(np.random.default_rng(6)).astype(np.float32)
    moved, (nx, ny, nw, nh) = move_logo(frame, box, mask, background, 12)
    assert nh == 12 and nw == 12 and nx + nw == x + w and ny == y  # the top right kept
    assert np.array_equal(moved[ny + nh:], background[ny + nh:])


def test_the_stand_in_is_written_in_the_layout_and_scored_by_part(root, tmp_path):
    out = tmp_path / "shift"
    counts = logo_shift.build(root, out, seed=0)
    assert counts == {**{p: 6 for p in ("hue", "invert", "grey", "flat", "badge",
                                        "flat+badge", "small")},
                      "overlay": 2 * logo_shift.OVERLAYS_PER_PHOTO, "overlay+logo": 2}
    frames, classes = read_index(out, unsplit="test")
    assert classes == ["a", "b", "nologo"] and len(frames) == sum(counts.values())
    parts = [logo_shift.part_of(f.path, out) for f in frames]
    assert {p: parts.count(p) for p in set(parts)} == counts
    small = [f for f, p in zip(frames, parts) if p == "small"]
    assert all(11 <= f.logos[0][1][3] <= 15 for f in small)
    with pytest.raises(MinicapsError, match="not empty"):
        logo_shift.build(root, out)

    run = tmp_path / "run"
    config = train.TrainConfig(data=str(root), out=str(run), epochs=1, batch_size=8,
                               conv_channels=4, primary_types=2, primary_dim=4, class_dim=4,
                               kernel_size=5, crop_corners=("tl", "tr", "bl"),
                               crop_width=192, crop_height=96, crop_scale=0.25,
                               reconstruction=False, val_fraction=0)
    train.run(config)
    ckpt = checkpoint.load(run / "last.npz")
    from minicaps.nets.kinds import build
    net = build(ckpt.model_config, ckpt.scored_params)
    by_part, by_class, names, ev = logo_shift.score_parts(net, ckpt, out,
                                                          stored_threshold(ckpt.history))
    assert {p: n for p, (_, n) in by_part.items()} == counts
    assert sum(r for r, _ in by_part.values()) == int(np.sum(ev.frame_pred == ev.frame_y))
    assert by_class[("overlay", "nologo")][1] == 8 and by_class[("badge", "a")][1] == 3
    # Decided again from the same lengths: at threshold 1 (no capsule is that long) every
    # frame is nologo, right on the overlays alone.
    ds, parts, lengths = logo_shift.stand_in_lengths(net, ckpt, out)
    np.testing.assert_array_equal(lengths, ev.lengths)
    by_part, _, _ = logo_shift.tally(ds, parts, lengths, 1.0)
    assert {p: r for p, (r, _) in by_part.items()} == {p: n if p == "overlay" else 0
                                                       for p, n in counts.items()}
    # Ranked first: the logo frames decided at threshold 0, where every frame shows its
    # strongest channel; and a channel made the longest everywhere is right on its own.
    logo_frames = sum(counts.values()) - counts["overlay"]
    by_part, _, _ = logo_shift.tally(ds, parts, lengths, 0.0)
    assert logo_shift.ranked_first(ds, lengths) == (
        sum(r for p, (r, _) in by_part.items() if p != "overlay"), logo_frames)
    only_b = lengths.copy()
    only_b[:, ds.classes.index("b")] = 2.0
    b_frames = int(np.sum(np.asarray(ds.test_frame_y) == ds.classes.index("b")))
    assert logo_shift.ranked_first(ds, only_b) == (b_frames, logo_frames)


def sharpness(frame):
    return np.abs(np.diff(frame, axis=1)).mean()


def pixels(path):
    with Image.open(path) as image:
        return np.asarray(image, np.float32)


def test_photographic_changes_soften_or_add_grain_and_keep_labels_and_boxes(root, tmp_path):
    rng = np.random.default_rng(0)
    frame = photo(rng)
    paint_logo(frame, "a", BOXES["a"])
    blurred, soft = photographic(frame, "blur", rng), photographic(frame, "soft", rng)
    assert sharpness(blurred) < 0.7 * sharpness(frame) and sharpness(soft) < 0.7 * sharpness(frame)
    assert abs(blurred.mean() - frame.mean()) < 1 and abs(soft.mean() - frame.mean()) < 1
    grainy = photographic(frame, "noise", rng)
    assert 5 < np.std(grainy - frame) < 7
    assert np.array_equal(photographic(frame, "jpeg", rng), frame)

    out = tmp_path / "photo"
    counts = logo_shift.build_photographic(root, out)
    assert counts == {kind: 8 for kind in ("blur", "soft", "noise", "jpeg")}
    frames, classes = read_index(out, unsplit="test")
    source, _ = read_index(root)
    boxes = sorted((f.logos[0][0], f.logos[0][1]) for f in source if f.split == "test" and f.logos)
    assert classes == ["a", "b", "nologo"] and len(frames) == 32
    parts = [logo_shift.part_of(f.path, out) for f in frames]
    for kind in counts:
        assert sorted((f.logos[0][0], f.logos[0][1]) for f, p in zip(frames, parts)
                      if p == kind and f.logos) == boxes
        assert sum(p == kind and not f.logos for f, p in zip(frames, parts)) == 2
    # The files themselves: blurred frames softer than their sources, compressed ones
    # written with coarser quantisation than the rest (the first entry of the luminance
    # table: 32-53 at quality 15-25, 5-13 at tvlogos-de's 60-85).
    def key(f):
        return f.logos[0][0] if f.logos else "nologo", f.path.stem
    source_of = {key(f): f.path for f in source if f.split == "test"}
    for f, p in zip(frames, parts):
        original = source_of[key(f)]
        if p == "blur":
            assert sharpness(pixels(f.path)) < 0.7 * sharpness(pixels(original))
        with Image.open(f.path) as image:
            assert (image.quantization[0][0] > 20) == (p == "jpeg")
    with pytest.raises(MinicapsError, match="not empty"):
        logo_shift.build_photographic(root, out)


def test_a_rendering_held_out_of_training(tmp_path):
    """Channel a in two renderings (red and, in 4 of 12 frames, green and wider): the
    green ones are held out of the training folder and make the held-out folder."""
    rng = np.random.default_rng(7)
    root = tmp_path / "logos"
    for i in range(12):
        frame = photo(rng)
        green = i % 3 == 0
        box = (20, 14, 60 if green else 40, 16)
        paint_logo(frame, "a", box)
        if green:
            frame[14:30, 20:80] = (30, 200, 40)
        save(root / "a" / f"train-{i:04d}" / f"a_{i}.jpg", frame)
        (root / "a" / f"train-{i:04d}" / "metadata.txt").write_text(
            f"a,{','.join(map(str, box))}\n")
    for split in ("train", "test"):
        save(root / "nologo" / split / "empty.jpg", photo(rng))
    rendering_groups.MIN_HELD, before = 3, rendering_groups.MIN_HELD
    try:
        counts = rendering_groups.hold_out(root, tmp_path / "split", k=2)
    finally:
        rendering_groups.MIN_HELD = before
    assert counts == {"a": (8, 4)}
    held, _ = read_index(tmp_path / "split" / "heldout", unsplit="test")
    assert sorted(int(f.path.stem.split("_")[1]) for f in held) == [0, 3, 6, 9]
    assert all(f.split == "test" for f in held)
    ds = load_dataset(tmp_path / "split" / "train")
    assert len(ds.train_frame_y) == 8 + 1


def test_kmeans_groups_separate_clusters_and_follow_the_seed():
    rng = np.random.default_rng(0)
    features = np.r_[rng.normal(0, 0.1, (20, 3)), rng.normal(5, 0.1, (10, 3)),
                     rng.normal((5, 0, 5), 0.1, (6, 3))]
    labels = rendering_groups.groups_of(features, 3, seed=1)
    assert sorted(np.bincount(labels)) == [6, 10, 20]
    for cluster in (slice(0, 20), slice(20, 30), slice(30, 36)):
        assert len(set(labels[cluster])) == 1
    assert np.array_equal(labels, rendering_groups.groups_of(features, 3, seed=1))
