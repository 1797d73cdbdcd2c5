"""Augmentations of logo corners that take away cues a channel's other renderings do not
share (issue 20): the logo's colours, and what stands beside it.

A network trained on tvlogos-de learnt renderings, colour included: a blue "WDR HD" where
training showed a white "WDR" with a red slash went to other channels, and programme
titles in a corner were taken for logos. Here a training corner's logo gets other colours
(its own pixels found inside its box, not the whole box, so that no rectangle marks it),
text is drawn beside logos as broadcasters add "HD" or a region, and text and bars are
drawn into corners without a logo, as programmes do, so that text alone never says logo.

Like augment.py: uint8 batches (B, C, H, W) on the host, every random choice drawn from
the generator given, in a fixed order. Text is drawn in Pillow's own font (the stand-in
in minicaps/tools draws in other fonts, so it does not test on these very glyphs).
"""
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# A pixel inside a logo box this far (grey levels) from the photograph guessed from the
# box's rim is not logo (FAINT) or surely logo (CLEAR); linear between. Averaged over a
# rendering's frames, the photograph inside a box lies 13-25 grey levels from the guess
# (5th percentiles of tvlogos-de's test renderings), logos 80-200 (medians).
FAINT, CLEAR = 30.0, 70.0
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
# Text is drawn at this many times the crop's resolution and then scaled down, as a
# frame's text is by the crop (a downscaled frame's letters are soft, not jagged).
SUPERSAMPLE = 2
# A recoloured logo is shown at this opacity or more over the photograph behind it: on air
# logos are often half transparent, and a logo recoloured towards the photograph's colours
# stands out less than the renderings training shows.
MIN_OPACITY = 0.5
# How often each way of recolouring is drawn: hue turned, inverted, grey, one flat colour.
# A channel's other renderings are mostly one colour (a white or a blue "WDR HD" where
# training shows white letters and a red slash), and those are the logos still lost, so
# the one-colour ways are drawn far more often than the two that keep a logo's colours
# apart, which the network learns to see through from few examples (docs/studies/
# logo_shift.md).
RECOLOUR_WAYS = (0.1, 0.1, 0.3, 0.5)
# A title in a corner without a logo is drawn this fraction of the image's height high
# (its ink), so that titles keep their size in the frame whatever crop_scale the corner
# is resized by.
TITLE_HEIGHTS = (1 / 12, 0.3)
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601 luminance weights of R, G, B


def photograph_behind(image, box, rim=2):
    """(C, h, w) guess of the photograph behind `box` = (y0, x0, y1, x1) of `image`
    (C, H, W): the mean of the `rim` rows and columns just outside each edge (the box's own
    edge where it meets the image's), interpolated across the box."""
    y0, x0, y1, x1 = box
    im = image.astype(np.float32)
    C, H, W = im.shape
    inner = im[:, y0:y1, x0:x1]
    left = im[:, y0:y1, max(x0 - rim, 0):x0].mean(axis=2) if x0 > 0 else inner[:, :, 0]
    right = im[:, y0:y1, x1:x1 + rim].mean(axis=2) if x1 < W else inner[:, :, -1]
    top = im[:, max(y0 - rim, 0):y0, x0:x1].mean(axis=1) if y0 > 0 else inner[:, 0]
    bottom = im[:, y1:y1 + rim, x0:x1].mean(axis=1) if y1 < H else inner[:, -1]
    u = np.linspace(0, 1, x1 - x0, dtype=np.float32)[None, None, :]
    v = np.linspace(0, 1, y1 - y0, dtype=np.float32)[None, :, None]
    return (left[:, :, None] * (1 - u) + right[:, :, None] * u
            + top[:, None, :] * (1 - v) + bottom[:, None, :] * v) / 2


def rim_distance(image, box, rim=2, behind=None):
    """(h, w) colour distance of each pixel in `box` = (y0, x0, y1, x1) of `image`
    (C, H, W) from the photograph guessed behind it (photograph_behind, unless given)."""
    y0, x0, y1, x1 = box
    inner = image[:, y0:y1, x0:x1].astype(np.float32)
    if behind is None:
        behind = photograph_behind(image, box, rim)
    return np.sqrt(((inner - behind) ** 2).sum(axis=0))


def ramp(distance):
    """Distances from the photograph (grey levels) as a mask in 0..1: FAINT to CLEAR."""
    return np.clip((distance - FAINT) / (CLEAR - FAINT), 0, 1)


def logo_mask(image, box, behind=None):
    """(h, w) in 0..1: how surely each pixel of `box` belongs to the logo (against the
    photograph guessed behind it, unless `behind` is given)."""
    return ramp(rim_distance(image, box, behind=behind))


def hue_rotation(degrees):
    """(3, 3) matrix turning RGB colours about the grey axis (Rodrigues' formula)."""
    t = np.deg2rad(degrees)
    K = np.array([[0, -1, 1], [1, 0, -1], [-1, 1, 0]]) / np.sqrt(3)
    return (np.eye(3) + np.sin(t) * K + (1 - np.cos(t)) * K @ K).astype(np.float32)


def recolour_logos(x, box, p, rng):
    """A fraction p of the images that show a logo (box[b] = (y0, x0, y1, x1); -1s where
    none) get its pixels (logo_mask) recoloured, one of four ways drawn per image
    (RECOLOUR_WAYS): hue turned by 60-300 degrees, inverted, grey, or one random colour
    shaded by the logo's own luminance; then faded towards the photograph behind it
    (MIN_OPACITY..1). On one-channel images the colour ways become inversion or a random
    brightness."""
    chosen = (rng.random(len(x)) < p) & (box[:, 0] >= 0)
    kinds = rng.choice(4, size=len(x), p=RECOLOUR_WAYS)
    angles = rng.uniform(60, 300, size=len(x))
    colours = rng.uniform(0, 255, size=(len(x), 3)).astype(np.float32)
    opacities = rng.uniform(MIN_OPACITY, 1, size=len(x)).astype(np.float32)
    out = x.copy()
    for b in np.flatnonzero(chosen):
        y0, x0, y1, x1 = box[b]
        logo = x[b, :, y0:y1, x0:x1].astype(np.float32)  # (C, h, w)
        lum = logo.mean(axis=0) if len(logo) == 1 else np.tensordot(
            LUMA, logo, axes=1).astype(np.float32)
        kind = kinds[b] if len(logo) == 3 else (1, 3)[kinds[b] % 2]
        if kind == 0:
            new = np.tensordot(hue_rotation(angles[b]), logo, axes=1)
        elif kind == 1:
            new = 255 - logo
        elif kind == 2:
            new = np.broadcast_to(lum, logo.shape)
        else:
            shade = 0.35 + 0.65 * lum / max(float(lum.max()), 1)
            new = colours[b, :len(logo), None, None] * shade
        behind = photograph_behind(x[b], box[b])
        new = behind + opacities[b] * (new - behind)
        m = logo_mask(x[b], box[b], behind)
        out[b, :, y0:y1, x0:x1] = np.clip(np.rint(logo * (1 - m) + new * m), 0, 255)
    return out


@lru_cache(maxsize=64)
def _font(size):
    return ImageFont.load_default(size)


def _text_font(height):
    """Pillow's font at SUPERSAMPLE times the size whose ink is about `height` pixels."""
    return _font(max(int(round(SUPERSAMPLE * height / 0.72)), 4))


def text_extent(text, height):
    """(width, height) in pixels of `text`'s ink drawn `height` pixels high."""
    x0, y0, x1, y1 = _text_font(height).getbbox(text)
    return (x1 - x0) / SUPERSAMPLE, (y1 - y0) / SUPERSAMPLE


def draw_text(image, text, top, left, height, colour, opacity, bar=None, edge=None):
    """`image` (C, H, W) uint8 with `text` drawn `height` pixels high (its ink) with its
    top left at (top, left), blended at `opacity`; with `bar` = (colour, alpha), on a
    rectangle a third of the height larger all round; with `edge` = (kind, colour), kind
    "shadow" (a copy of the text in that colour an eighth of its height down and right,
    under it) or "outline" (a rim of that colour round each letter), as programme titles
    are drawn to stand out on any picture. Drawn at SUPERSAMPLE times the resolution and
    scaled down."""
    C, H, W = image.shape
    s = SUPERSAMPLE
    f = _text_font(height)
    layer = Image.new("RGBA", (W * s, H * s), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    bx0, by0, bx1, by1 = draw.textbbox((0, 0), text, font=f)
    at = (round(left * s) - bx0, round(top * s) - by0)
    if bar is not None:
        pad = max(by1 - by0, 3) // 3
        draw.rectangle((at[0] + bx0 - pad, at[1] + by0 - pad, at[0] + bx1 + pad,
                        at[1] + by1 + pad), fill=(*bar[0], int(255 * bar[1])))
    text_alpha, rim = int(255 * opacity), {}  # Pillow's 0..255
    if edge is not None and edge[0] == "shadow":
        d = max(round(height * s / 8), 1)
        draw.text((at[0] + d, at[1] + d), text, font=f, fill=(*edge[1], text_alpha))
    elif edge is not None and edge[0] == "outline":
        rim = dict(stroke_width=max(round(height * s / 10), 1), stroke_fill=(*edge[1], text_alpha))
    elif edge is not None:
        raise ValueError(f"edge must be a shadow or an outline, not {edge[0]!r}")
    draw.text(at, text, font=f, fill=(*colour, text_alpha), **rim)
    layer = np.asarray(layer.resize((W, H), Image.LANCZOS), np.float32)  # (H, W, 4)
    alpha = layer[..., 3] / 255
    ink = layer[..., :3] if C == 3 else layer[..., :3].mean(axis=-1, keepdims=True)
    out = image.astype(np.float32) * (1 - alpha[None]) + ink.transpose(2, 0, 1) * alpha
    return np.clip(np.rint(out), 0, 255).astype(image.dtype)


def _word(rng):
    n = rng.integers(2, 10)
    word = "".join(LETTERS[i] for i in rng.integers(len(LETTERS), size=n))
    return word.upper() if rng.random() < 0.5 else word


def _title(rng):
    """One word, or two with a space, as a programme's title."""
    return _word(rng) if rng.random() < 0.6 else f"{_word(rng)} {_word(rng)}"


def _edge(rng):
    """None, or a shadow or an outline in a random dark colour (text_distractors)."""
    kind = rng.integers(3)
    dark = tuple(int(c) for c in rng.integers(0, 80, size=3))
    return (None, ("shadow", dark), ("outline", dark))[kind]


def _text_colour(rng):
    if rng.random() < 0.5:
        return (255, 255, 255)
    return tuple(int(c) for c in rng.integers(0, 256, size=3))


def beside(box, size, gap, below, shape):
    """(top, left) for text of `size` (w, h) beside the logo `box` (y0, x0, y1, x1) in an
    image of `shape` (H, W), never over it: below it if `below`, else right of it, else
    left of it; None where it does not fit there."""
    y0, x0, y1, x1 = box
    (w, h), (H, W) = size, shape
    if below:
        return (y1 + gap, x0) if y1 + gap + h <= H else None
    top = y0 + max((y1 - y0 - h) / 2, 0)
    if x1 + gap + w <= W:
        return top, x1 + gap
    return (top, x0 - gap - w) if x0 - gap - w >= 0 else None


def text_distractors(x, box, p, rng):
    """A fraction p of the images get text: beside the logo where there is one (right of
    it, left where the image ends, or below it in smaller letters; 30-70 % of its height;
    never over it), anywhere in an image without one (a word or two, TITLE_HEIGHTS of the
    image high, on a bar two times in five, plain, shadowed or outlined a third of the time
    each), as broadcasters and programmes put text in a corner. Labels do not change: text
    beside a logo is still that channel, text alone is still no logo."""
    chosen = rng.random(len(x)) < p
    out = x.copy()
    H, W = x.shape[2:]
    for b in np.flatnonzero(chosen):
        colour, opacity = _text_colour(rng), rng.uniform(0.6, 1.0)
        bar = edge = None
        if box[b, 0] >= 0:
            word, below = _word(rng), rng.random() < 0.3
            height = max(4.0, (box[b, 2] - box[b, 0]) * rng.uniform(0.3, 0.45 if below else 0.7))
            at = beside(box[b], text_extent(word, height), int(rng.integers(1, 4)), below, (H, W))
            if at is None:
                continue
        else:
            word, edge, height = _title(rng), _edge(rng), H * rng.uniform(*TITLE_HEIGHTS)
            at = (rng.uniform(0, H - 3), rng.uniform(0, W - 6))
            if rng.random() < 0.4:
                bar = (tuple(int(c) for c in rng.integers(0, 256, size=3)),
                       rng.uniform(0.4, 0.9))
        out[b] = draw_text(out[b], word, at[0], at[1], height, colour, opacity, bar, edge)
    return out
