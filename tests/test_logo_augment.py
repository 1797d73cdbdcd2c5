"""Training's logo augmentations (minicaps/training/logo_augment.py, the swap's shrinking in
augment.py): they change what they say and nothing else, draw from the generator given,
and a run with them resumes bit for bit."""
import dataclasses

import numpy as np
import pytest

from minicaps.errors import MinicapsError
from minicaps.training import augment, checkpoint, logo_augment, loop as train
from minicaps.training.augment import swap_backgrounds
from minicaps.training.logo_augment import (beside, draw_text, logo_mask, photograph_behind,
                                            recolour_logos, text_distractors, text_extent)

from test_train import _run, synthetic_logos


def crops(n=6, seed=0):
    """n smooth 3x24x48 crops; the first half show a logo (a red bar with a white stripe)
    in the box (4, 6, 12, 22), the rest none."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(40, 120, 48)[None, None, :] + np.linspace(0, 30, 24)[None, :, None]
    x = np.repeat(ramp[None], n, axis=0) + rng.normal(0, 2, (n, 3, 24, 48))
    x = np.clip(x, 0, 255).astype(np.uint8)
    box = np.full((n, 4), -1)
    box[:n // 2] = (4, 6, 12, 22)
    x[:n // 2, :, 4:12, 6:22] = np.array([220, 30, 30], np.uint8)[:, None, None]
    x[:n // 2, :, 7:9, 8:20] = 250
    return x, box


def test_the_logo_mask_covers_the_logo_not_the_photograph():
    x, box = crops()
    assert logo_mask(x[0], box[0]).min() > 0.9  # the bar fills its box
    assert logo_mask(x[-1], (4, 6, 12, 22)).max() < 0.1  # an empty box on the ramp


def test_recolouring_changes_logo_pixels_only():
    x, box = crops()
    out = recolour_logos(x, box, 1.0, np.random.default_rng(0))
    assert out.dtype == np.uint8 and out.shape == x.shape
    changed = np.abs(out.astype(int) - x).max(axis=1) > 0  # (B, H, W)
    inside = np.zeros(x.shape[2:], bool)
    inside[4:12, 6:22] = True
    assert changed[:3, inside].any() and not changed[:3][:, ~inside].any()
    assert not changed[3:].any()  # no logo, nothing to recolour
    again = recolour_logos(x, box, 1.0, np.random.default_rng(0))
    assert np.array_equal(out, again)
    grey = recolour_logos(x[:3, :1], box[:3], 1.0, np.random.default_rng(0))
    assert grey.shape == (3, 1, 24, 48)  # one-channel images: inversion or one brightness


def test_recolouring_draws_its_ways_as_RECOLOUR_WAYS_says(monkeypatch):
    x, box = crops(n=40)
    monkeypatch.setattr(logo_augment, "MIN_OPACITY", 1.0)  # no fading: grey stays grey
    y0, x0, y1, x1 = box[0]

    def grey_and_one_colour(ways):
        """How many of the 20 logos came out grey, and how many in one colour (every
        pixel the same hue and saturation, shaded: grey logos are one colour too)."""
        monkeypatch.setattr(logo_augment, "RECOLOUR_WAYS", ways)
        out = recolour_logos(x, box, 1.0, np.random.default_rng(0)).astype(float)
        logos = out[:20, :, y0:y1, x0:x1]
        grey = (np.ptp(logos, axis=1) <= 1).all(axis=(1, 2))
        chroma = logos / np.maximum(logos.sum(axis=1, keepdims=True), 1)
        one_colour = (np.ptp(chroma, axis=(2, 3)) < 0.03).all(axis=1)
        return int(grey.sum()), int(one_colour.sum())

    assert grey_and_one_colour((0, 0, 1, 0)) == (20, 20)  # every logo grey
    grey, one_colour = grey_and_one_colour((0, 0, 0, 1))
    assert one_colour == 20 and grey < 20  # every logo in one colour, not all grey
    assert grey_and_one_colour((0.5, 0.5, 0, 0)) == (0, 0)  # hue and inversion keep two
    assert 0 < grey_and_one_colour((0.25, 0.25, 0.25, 0.25))[1] < 20


def test_recoloured_logos_fade_towards_the_photograph_behind_them(monkeypatch):
    x, box = crops()
    faded = recolour_logos(x, box, 1.0, np.random.default_rng(0)).astype(float)
    monkeypatch.setattr(logo_augment, "MIN_OPACITY", 1.0)  # the same draws, fully opaque
    opaque = recolour_logos(x, box, 1.0, np.random.default_rng(0)).astype(float)
    y0, x0, y1, x1 = box[0]
    for b in range(3):
        assert logo_mask(x[b], box[b]).min() == 1  # all logo: each pixel is the new colour
        behind = photograph_behind(x[b], box[b])
        near = np.abs(faded[b, :, y0:y1, x0:x1] - behind)
        far = np.abs(opaque[b, :, y0:y1, x0:x1] - behind)
        assert (near <= far + 1).all()  # never further from it (1: rounding)
        assert (near < far - 5).any()  # and nearer it, by the opacity drawn for it


def test_titles_can_have_a_shadow_or_an_outline():
    grey = np.full((3, 24, 48), 128, np.uint8)
    white = (255, 255, 255)
    plain = draw_text(grey, "TITLE", 6, 4, 10, white, 1.0)
    assert plain.min() >= 127  # white text on grey: nothing darker
    for kind in ("shadow", "outline"):
        edged = draw_text(grey, "TITLE", 6, 4, 10, white, 1.0, edge=(kind, (0, 0, 0)))
        assert edged.min() < 60 and edged.max() > 200, kind
    ink = np.argwhere(plain[0] > 200)
    shadow = draw_text(grey, "TITLE", 6, 4, 10, white, 1.0, edge=("shadow", (0, 0, 0)))
    dark = np.argwhere(shadow[0] < 100)
    assert (dark.mean(axis=0) > ink.mean(axis=0)).all()  # down and right of the letters
    assert (dark.min(axis=0) >= ink.min(axis=0)).all()  # never above or left of them
    outline = draw_text(grey, "TITLE", 6, 4, 10, white, 1.0, edge=("outline", (0, 0, 0)))
    dark = np.argwhere(outline[0] < 100)
    assert (dark.min(axis=0) < ink.min(axis=0)).all()  # a rim all round: above and left too


def test_text_never_covers_the_logo_and_goes_anywhere_without_one():
    x, box = crops(40)
    out = text_distractors(x, box, 1.0, np.random.default_rng(1))
    changed = np.abs(out.astype(int) - x).max(axis=1) > 8
    assert not changed[:20, 4:12, 6:22].any()
    assert changed[:20].any(axis=(1, 2)).sum() >= 10 and changed[20:].any(axis=(1, 2)).all()
    w, h = text_extent("HD", 8)
    assert 5 < h <= 9 and w > h
    assert beside((4, 6, 12, 22), (10, 5), 2, False, (24, 48)) == (5.5, 24)  # right of it
    assert beside((4, 30, 12, 46), (10, 5), 2, False, (24, 48)) == (5.5, 18)  # left of it
    assert beside((4, 6, 12, 22), (10, 5), 2, True, (24, 48)) == (14, 6)  # below it
    assert beside((4, 6, 20, 42), (10, 5), 2, True, (24, 48)) is None  # no room
    drawn = draw_text(x[-1], "TEXT", 2, 2, 8, (255, 255, 0), 1.0, bar=((0, 0, 0), 0.8))
    assert drawn.dtype == np.uint8 and (drawn != x[-1]).any()


def test_titles_keep_their_size_in_the_frame_at_any_crop_scale(monkeypatch):
    """A title's height is a share of the crop's (TITLE_HEIGHTS), so the same draws give
    titles 1.5 times as high in a crop 1.5 times as large, as the frame's own text is."""
    heights = []

    def record(image, text, top, left, height, *rest):
        heights.append(height)
        return image
    monkeypatch.setattr(logo_augment, "draw_text", record)
    for H in (48, 72):
        x = np.zeros((30, 3, H, 2 * H), np.uint8)
        text_distractors(x, np.full((30, 4), -1), 1.0, np.random.default_rng(3))
    small, large = np.array(heights[:30]), np.array(heights[30:])
    np.testing.assert_allclose(large, 1.5 * small)
    lo, hi = logo_augment.TITLE_HEIGHTS
    assert (small >= 48 * lo).all() and (small <= 48 * hi).all()
    assert np.ptp(small) > 48 * (hi - lo) / 2  # drawn over the range, not at one size


def test_the_swap_shrinks_logos_between_their_centre_and_corner_and_not_without_it():
    x, box = crops()
    images = np.concatenate([x, np.full((4, 3, 24, 48), 200, np.uint8)])
    empty = np.arange(6, 10)
    out = swap_backgrounds(x, box, images, empty, box[:3], 1.0, np.random.default_rng(2),
                           min_scale=0.5)
    for b in range(3):
        red = np.argwhere((out[b, 0] > 150) & (out[b, 1] < 100))
        assert 0 < len(red) < 8 * 16  # smaller than the box
        # Within the box (4, 6, 12, 22), from centred towards its top left (the image's):
        # its top-left pixel between the box's and the centred logo's.
        top_left, h, w = red.min(axis=0), *(red.max(axis=0) - red.min(axis=0) + 1)
        assert 4 <= top_left[0] <= 4 + (8 - h) // 2 + 1
        assert 6 <= top_left[1] <= 6 + (16 - w) // 2 + 1
        assert red.max(axis=0)[0] <= 11 and red.max(axis=0)[1] <= 21
    plain = swap_backgrounds(x, box, images, empty, box[:3], 1.0, np.random.default_rng(2))
    assert np.array_equal(plain[:3, :, 4:12, 6:22], x[:3, :, 4:12, 6:22])  # as it was


@pytest.mark.parametrize("box, flush", [((4, 6, 12, 22), (4, 6)), ((14, 30, 22, 46), (18, 38))])
def test_a_shrunk_logo_moves_from_the_centre_to_the_corner_nearest_the_images(box, flush):
    """Halved, the 8x16 box's logo is 4x8: centred at toward 0, flush with the box's corner
    nearest the image's corner (top left, then bottom right) at 1."""
    source = np.zeros((3, 24, 48), np.uint8)
    source[:, box[0]:box[2], box[1]:box[3]] = 200
    for toward, (y0, x0) in ((0.0, (box[0] + 2, box[1] + 4)), (1.0, flush)):
        target = np.zeros_like(source)
        augment._paste_scaled(target, source, box, 0.5, toward)
        ink = np.argwhere(target[0] > 100)
        assert tuple(ink.min(axis=0)) == (y0, x0) and tuple(ink.max(axis=0)) == (y0 + 3, x0 + 7)


def test_a_run_with_them_resumes_bit_for_bit(tmp_path):
    kw = dict(shift=1, background_swap=0.5, logo_scale=0.6, logo_recolour=0.5,
              text_distractors=0.5)
    _run(tmp_path / "straight", 2, synthetic_logos(), **kw)
    _run(tmp_path / "split", 1, synthetic_logos(), **kw)
    train.resume(tmp_path / "split", epochs=2, dataset=synthetic_logos())
    a = checkpoint.load(tmp_path / "straight" / "last.npz")
    b = checkpoint.load(tmp_path / "split" / "last.npz")
    for name in a.params:
        assert np.array_equal(a.params[name], b.params[name]), name
    without_boxes = dataclasses.replace(synthetic_logos(), train_box=None)
    with pytest.raises(MinicapsError, match="logo-recolour"):
        _run(tmp_path / "no-boxes", 1, without_boxes, logo_recolour=0.5)
