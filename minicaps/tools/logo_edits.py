"""Edits of a TV frame that show a channel's logo as training never did: recoloured, with a
badge beside it, smaller, or a programme's overlay in a corner that belongs to no channel;
and whole frames as another camera or broadcast chain shows them (softer, grainier).

Each edit takes a frame as an (H, W, 3) float32 array and returns a new one; the random
choices come from the generator given. Text is drawn in the system's DejaVu fonts where
they are installed (not Pillow's own font, which training's text distractors use: the
stand-in should not test the network on the very glyphs it was trained to ignore).
"""
import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from ..training.logo_augment import LUMA, hue_rotation

RECOLOURS = ("hue", "invert", "grey", "flat")
# Words broadcasters put beside a logo: the picture's quality, a region, a programme
# strand. Kept apart from the words of training's text distractors (augment.py).
BADGES = ("HD", "HD", "UHD", "NRW", "Nord", "BW", "RP", "HH", "MV", "SH", "Sachsen",
          "Bayern", "Berlin", "Hessen", "Köln", "Saar", "Thüringen", "Anhalt", "Süd", "plus")
# Programme overlays: titles, news and sport inserts, times; no channel's name.
TITLES = ("2 Broke Girls", "NACHRICHTEN", "LIVE", "Wetter", "Sport live", "Spielfilm",
          "20:15", "21:45", "Breaking News", "Fußball", "Formel 1", "Die Show",
          "Wiederholung", "Folge 12", "Staffel 3", "Gleich", "Tagesthemen", "Kino",
          "Quiz", "Magazin", "Talk", "Serie", "Exklusiv", "Premiere")
FONTS = ("DejaVuSans-Bold.ttf", "DejaVuSansCondensed-Bold.ttf", "DejaVuSans.ttf",
         "DejaVuSerif-Bold.ttf")


def font(size, rng):
    """A DejaVu font of `size` pixels drawn from FONTS; Pillow's own if none is installed."""
    try:
        return ImageFont.truetype(FONTS[rng.integers(len(FONTS))], int(size))
    except OSError:
        return ImageFont.load_default(int(size))


def luminance(rgb):
    return rgb @ np.array(LUMA, np.float32)


def recolour(frame, box, mask, kind, rng):
    """The frame with the logo in `box` (weighted by `mask` (h, w) in 0..1) recoloured:
    its hue turned by 90-270 degrees, its colours inverted, made grey, or painted in one
    colour unlike its own (other_colour) shaded by its own luminance, so that the marks
    inside it stay visible."""
    x, y, w, h = box
    out = frame.copy()
    logo = frame[y:y + h, x:x + w]
    if kind == "hue":
        new = logo @ hue_rotation(rng.uniform(90, 270)).T
    elif kind == "invert":
        new = 255 - logo
    elif kind == "grey":
        new = np.repeat(luminance(logo)[..., None], 3, axis=-1)
    elif kind == "flat":
        colour = other_colour(logo, mask, rng)
        lum = luminance(logo)
        shade = 0.35 + 0.65 * lum / max(float(lum[mask > 0.5].max(initial=1)), 1)
        new = colour * shade[..., None]
    else:
        raise ValueError(f"recolour kind must be one of {RECOLOURS}, not {kind!r}")
    m = mask[..., None]
    out[y:y + h, x:x + w] = logo * (1 - m) + np.clip(new, 0, 255) * m
    return out


def logo_colour(logo, mask, rng):
    """White half of the time, else the colour of one of the logo's own pixels (where
    the mask is sure), brightened if it is dark."""
    sure = logo[mask > 0.7]
    if rng.random() < 0.5 or not len(sure):
        return np.full(3, 245, np.float32)
    return _bright(sure[rng.integers(len(sure))])


def other_colour(logo, mask, rng):
    """A colour unlike the logo's own (its mean where the mask is sure): one of the box's
    pixels at least 100 away from it, brightened if dark, or a plain bright colour."""
    own = logo[mask > 0.7].mean(axis=0) if (mask > 0.7).any() else logo.mean(axis=(0, 1))
    pixels = logo.reshape(-1, 3)
    far = pixels[np.sqrt(((pixels - own) ** 2).sum(axis=1)) > 100]
    if len(far) and rng.random() < 0.5:
        return _bright(far[rng.integers(len(far))])
    plain = np.array([[245, 245, 245], [30, 90, 220], [220, 30, 30], [250, 200, 0],
                      [20, 170, 60], [0, 180, 230]], np.float32)
    away = plain[np.sqrt(((plain - own) ** 2).sum(axis=1)) > 100]
    return away[rng.integers(len(away))] if len(away) else plain[1]


def _bright(colour):
    return colour * max(1.0, 160 / max(float(colour.max()), 1))


def _paste_text(frame, text, xy, size, colour, opacity, rng, shadow=False):
    """The frame with `text` drawn with its top left at `xy` (its ink's bounding box),
    blended at `opacity`; (width, height) of the ink."""
    f = font(size, rng)
    image = Image.fromarray(np.clip(frame, 0, 255).astype(np.uint8))
    layer = Image.new("RGBA", image.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=f)
    at = (xy[0] - x0, xy[1] - y0)
    alpha = int(255 * opacity)
    if shadow:
        draw.text((at[0] + 1, at[1] + 1), text, font=f, fill=(0, 0, 0, alpha))
    draw.text(at, text, font=f, fill=(*(int(c) for c in colour), alpha))
    out = Image.alpha_composite(image.convert("RGBA"), layer).convert("RGB")
    return np.asarray(out, np.float32), (x1 - x0, y1 - y0)


def text_size(text, size, rng_seed=0):
    """(width, height) of `text`'s ink at font size `size` (in the font drawn for the seed)."""
    f = font(size, np.random.default_rng(rng_seed))
    x0, y0, x1, y1 = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox((0, 0), text, font=f)
    return x1 - x0, y1 - y0


def add_badge(frame, box, mask, rng, word=None):
    """The frame with a badge word drawn beside the logo in `box`, as broadcasters add
    "HD" or a region: right of it (left where the frame ends), 35-60 % of its height, or
    below it in letters 25-40 % of its height; white or the logo's colour, at a logo's opacity."""
    x, y, w, h = box
    H, W = frame.shape[:2]
    word = word or BADGES[rng.integers(len(BADGES))]
    colour = logo_colour(frame[y:y + h, x:x + w], mask, rng)
    opacity = rng.uniform(0.7, 1.0)
    below = rng.random() < 0.3 and y + h + 0.5 * h < H
    size = max(8, h * (rng.uniform(0.25, 0.4) if below else rng.uniform(0.35, 0.6)) / 0.73)
    seed = int(rng.integers(1 << 31))
    tw, th = text_size(word, size, seed)
    gap = max(2, int(round(h * rng.uniform(0.1, 0.3))))
    if below:
        xy = (x, y + h + gap)
    elif x + w + gap + tw < W - 4:
        xy = (x + w + gap, y + int(round((h - th) * rng.uniform(0, 1))))
    else:
        xy = (x - gap - tw, y + int(round((h - th) * rng.uniform(0, 1))))
    out, _ = _paste_text(frame, word, xy, size, colour, opacity,
                         np.random.default_rng(seed))
    return out


def move_logo(frame, box, mask, background, height):
    """`background` (H, W, 3) with the logo of `frame`'s `box` pasted at `height` pixels
    high (its aspect ratio kept), anchored at the box's corner nearest the frame's corner;
    returns (new frame, new box)."""
    x, y, w, h = box
    H, W = frame.shape[:2]
    nh = int(round(height))
    nw = max(int(round(w * nh / h)), 1)
    nx = x if x + w / 2 < W / 2 else x + w - nw
    ny = y if y + h / 2 < H / 2 else y + h - nh
    logo = Image.fromarray(np.clip(frame[y:y + h, x:x + w], 0, 255).astype(np.uint8))
    small = np.asarray(logo.resize((nw, nh), Image.LANCZOS), np.float32)
    m = np.asarray(Image.fromarray(mask.astype(np.float32)).resize((nw, nh), Image.BILINEAR))
    m = np.clip(m, 0, 1)[..., None]
    out = background.copy()
    out[ny:ny + nh, nx:nx + nw] = background[ny:ny + nh, nx:nx + nw] * (1 - m) + small * m
    return out, (nx, ny, nw, nh)


CORNER_BOXES = {"tl": (0, 0), "tr": (528, 0), "bl": (0, 309), "br": (528, 309)}  # 192x96


def add_overlay(frame, corner, rng):
    """The frame with a programme overlay in `corner`'s 192x96 region: a title, plain
    with a shadow, on a half-transparent bar, or a red "LIVE"-style box; text 10-26 px
    high. It belongs to no channel."""
    left, top = CORNER_BOXES[corner]
    text = TITLES[rng.integers(len(TITLES))]
    size = rng.uniform(10, 26) / 0.73
    seed = int(rng.integers(1 << 31))
    tw, th = text_size(text, size, seed)
    style = rng.integers(3)
    margin = rng.integers(6, 30, size=2)
    x = left + margin[0] if corner[1] == "l" else left + 192 - margin[0] - tw
    y = top + margin[1] if corner[0] == "t" else top + 96 - margin[1] - th
    x, y = int(np.clip(x, 0, 720 - tw - 1)), int(np.clip(y, 0, 405 - th - 1))
    out = frame.copy()
    if style > 0:  # a bar behind the text
        pad = max(2, th // 3)
        colour = np.array([200, 20, 30] if style == 2 else rng.uniform(0, 90, 3), np.float32)
        alpha = 0.95 if style == 2 else rng.uniform(0.45, 0.8)
        y0, y1 = max(y - pad, 0), min(y + th + pad, 405)
        x0, x1 = max(x - pad, 0), min(x + tw + pad, 720)
        out[y0:y1, x0:x1] = out[y0:y1, x0:x1] * (1 - alpha) + colour * alpha
    colour = (255, 255, 255) if rng.random() < 0.7 else (250, 220, 40)
    out, _ = _paste_text(out, text, (x, y), size, colour, rng.uniform(0.85, 1.0),
                         np.random.default_rng(seed), shadow=style == 0)
    return out


# A whole frame as another source would show it. The frames of tvlogos-de are sharp and
# clean; broadcast frames are often softer (upscaled from SD, filtered), grainier, or more
# compressed (that change is made where the frame is written: logo_shift.py).
PHOTOGRAPHIC = ("blur", "soft", "noise", "jpeg")
BLUR_SIGMA = 1.5  # pixels of the 720x405 frame
GRAIN_SIGMA = 6.0  # grey levels


def photographic(frame, kind, rng):
    """The whole frame (H, W, 3) blurred (Gaussian, BLUR_SIGMA), softened (half size and
    back, as SD content shown in HD), with grain (Gaussian noise, GRAIN_SIGMA), or as it
    is (`jpeg`: the change is the compression)."""
    if kind == "noise":
        return frame + rng.normal(0, GRAIN_SIGMA, frame.shape).astype(np.float32)
    if kind not in ("blur", "soft"):
        return frame.copy()
    image = Image.fromarray(np.clip(np.rint(frame), 0, 255).astype(np.uint8))
    if kind == "blur":
        return np.asarray(image.filter(ImageFilter.GaussianBlur(BLUR_SIGMA)), np.float32)
    half = image.resize((image.width // 2, image.height // 2), Image.BILINEAR)
    return np.asarray(half.resize(image.size, Image.BILINEAR), np.float32)
