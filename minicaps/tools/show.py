"""Pictures of what a capsule network does (PNG, Pillow): reconstructions, the capsule-
dimension perturbation figure (the paper's Figure 4), coupling coefficients, training
curves. Each function returns a PIL image; callers save it."""
import json

import numpy as np
from PIL import Image, ImageDraw

from ..backend import to_host
from ..errors import MinicapsError
from ..ops.em_routing import em_routing_forward
from ..ops.routing import routing_forward

# A perceptually ordered dark-blue -> green -> yellow ramp (like matplotlib's viridis).
RAMP = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]])
STEPS = np.round(np.arange(-0.25, 0.2501, 0.05), 2)  # the paper's perturbation steps


def to_image(x, zoom=3):
    """An image (C, H, W) in [0, 1] as a Pillow image, each pixel zoom x zoom."""
    x = np.clip(to_host(x), 0, 1)
    pixels = (x.transpose(1, 2, 0) * 255).round().astype(np.uint8)  # (H, W, C)
    image = Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels)
    return image.resize((image.width * zoom, image.height * zoom), Image.NEAREST)


def grid(images, columns, gap=2, background=255):
    """Pillow images of one size in rows of `columns`, `gap` pixels apart."""
    w, h = images[0].size
    rows = (len(images) + columns - 1) // columns
    mode = "RGB" if any(im.mode == "RGB" for im in images) else "L"
    fill = (background,) * 3 if mode == "RGB" else background
    sheet = Image.new(mode, (columns * (w + gap) - gap, rows * (h + gap) - gap), fill)
    for n, im in enumerate(images):
        sheet.paste(im.convert(mode), ((n % columns) * (w + gap), (n // columns) * (h + gap)))
    return sheet


def heat(values, zoom=4):
    """A 2-D array in [0, 1] as a colour image through RAMP."""
    v = np.clip(to_host(values), 0, 1) * (len(RAMP) - 1)
    low = np.floor(v).astype(int).clip(0, len(RAMP) - 2)
    frac = (v - low)[..., None]
    rgb = (RAMP[low] * (1 - frac) + RAMP[low + 1] * frac).round().astype(np.uint8)
    image = Image.fromarray(rgb)
    return image.resize((image.width * zoom, image.height * zoom), Image.NEAREST)


def test_image(x, index):
    """x[index] of a split of images x, refusing an index outside it (the picture of some
    other image would pass for this one's)."""
    if not 0 <= index < len(x):
        held = f"its {len(x):,} images are 0 to {len(x) - 1:,}" if len(x) else "it is empty"
        raise MinicapsError(f"image {index:,} is outside the test split: {held}")
    return x[index]


def reconstruction_grid(net, x, columns=8):
    """Each input (B, C, H, W) beside its reconstruction from the predicted class's capsule."""
    v, _ = net.class_capsules(x)
    predicted = to_host((v * v).sum(axis=-1)).argmax(axis=1)
    recon = net.reconstruct(v, predicted)
    pairs = []
    for original, rebuilt in zip(net._as_input(x), recon):
        pairs += [to_image(original), to_image(rebuilt)]
    return grid(pairs, 2 * columns)


def perturbation_grid(net, x, steps=STEPS):
    """One example (C, H, W): row d shows the reconstruction with dimension d of the
    predicted class capsule moved by each step (the paper moves by 0.05 in [-0.25, 0.25])."""
    v, _ = net.class_capsules(x[None])
    k = int(to_host((v[0] * v[0]).sum(axis=-1)).argmax())
    E = v.shape[2]
    xp_v = v[0:1].repeat(E * len(steps), axis=0)  # (E * S, J, E)
    for d in range(E):
        for s, step in enumerate(steps):
            xp_v[d * len(steps) + s, k, d] += step
    recon = net.reconstruct(xp_v, np.full(len(xp_v), k))
    return grid([to_image(r) for r in recon], len(steps))


def coupling_map(net, x, iteration=-1):
    """The coupling coefficients of one example (C, H, W) at a routing iteration: row j is
    class j, showing for each primary capsule type its gh x gw map of c_ij, from the
    smallest coefficient (dark) to the largest (bright)."""
    iters = net.config.routing_iters
    _check_iteration(iteration, iters)
    _, routing_cache = net.class_capsules(x[None])
    # Routed again, keeping every iteration's couplings: with routing_grad "last" the
    # network's own pass keeps only the last one's.
    _, routing_cache = routing_forward(routing_cache.u_hat, iters=iters, grad="full")
    c = to_host(routing_cache.couplings[iteration][0])  # (J, I)
    T = net.config.primary_types
    gh, gw = net.config.grid
    return _tile_rows(c.reshape(c.shape[0], T, gh, gw))


def assignment_map(net, x, iteration=-1):
    """EM routing's assignments R into the class capsules of one example (C, H, W), as the
    M-step of an iteration weighs them (iteration 0's are uniform): row j is class j,
    showing for each capsule type of the last grid its gh x gw map of R_ij, from the
    smallest (dark) to the largest (bright). An EMCapsNet's counterpart of coupling_map."""
    cfg = net.config
    _check_iteration(iteration, cfg.routing_iters)
    _, routing_cache = net.class_capsules(x[None])
    last = routing_cache.m_steps[-1]
    # Routed again, keeping every iteration's assignments: with routing_grad "last" the
    # network's own pass keeps only the last M-step's.
    _, routing_cache = em_routing_forward(
        last.votes, last.activations, net.params["class.beta_u"], net.params["class.beta_a"],
        inverse_temperatures=cfg.inverse_temperatures(), grad="full")
    r = to_host(routing_cache.m_steps[iteration].assignments[0, 0])  # (J, I), i = (y, x, type)
    gh, gw = cfg.grids[-1]
    return _tile_rows(r.reshape(len(r), gh, gw, cfg.types[-1]).transpose(0, 3, 1, 2))


def _check_iteration(iteration, iters):
    if not -iters <= iteration < iters:
        raise MinicapsError(f"routing iteration {iteration} is outside the network's "
                            f"{iters}: 0 to {iters - 1}, or -1 for the last")


def _tile_rows(tiles):
    """Rows of heat maps, one per parent: tiles (J, T, gh, gw), scaled together from the
    smallest (dark) to the largest (bright)."""
    tiles = (tiles - tiles.min()) / max(tiles.max() - tiles.min(), 1e-12)
    return grid([heat(np.concatenate(list(row), axis=1)) for row in tiles], 1, gap=3)


def line_charts(panels, xs, size=(640, 300)):
    """Side-by-side line charts. panels: [(title, {series name: [y per x, None to skip]})]."""
    colours = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189)]
    xs = list(xs)
    w, h = size
    sheet = Image.new("RGB", (len(panels) * w, h), "white")
    draw = ImageDraw.Draw(sheet)
    for p, (title, series) in enumerate(panels):
        left, top, right, bottom = p * w + 50, 25, p * w + w - 15, h - 30
        values = [v for ys in series.values() for v in ys if v is not None]
        lo, hi = min(values), max(values)
        hi = hi if hi > lo else lo + 1
        draw.rectangle([left, top, right, bottom], outline="black")
        draw.text((left, 5), title, fill="black")
        draw.text((p * w + 5, top), f"{hi:.3g}", fill="black")
        draw.text((p * w + 5, bottom - 10), f"{lo:.3g}", fill="black")
        draw.text((left, bottom + 5), f"{xs[0]}", fill="black")
        draw.text((right - 30, bottom + 5), f"{xs[-1]}", fill="black")
        span = max(1, xs[-1] - xs[0])
        for n, (name, ys) in enumerate(series.items()):
            colour = colours[n % len(colours)]
            points = [(left + (right - left) * (x - xs[0]) / span,
                       bottom - (bottom - top) * (y - lo) / (hi - lo))
                      for x, y in zip(xs, ys) if y is not None]
            if len(points) > 1:
                draw.line(points, fill=colour, width=2)
            for px, py in points:
                draw.ellipse([px - 2, py - 2, px + 2, py + 2], fill=colour)
            draw.text((left + 8, top + 8 + 12 * n), name, fill=colour)
    return sheet


def training_curves(metrics_path, size=(640, 300)):
    """Loss (left) and accuracies (right) per epoch from a run's metrics.jsonl."""
    with open(metrics_path) as f:
        records = [json.loads(line) for line in f if line.strip()]
    return line_charts([
        ("train loss", {"loss": [r["train_loss"] for r in records]}),
        ("accuracy", {k: [r.get(f"{k}_accuracy") for r in records]
                      for k in ("train", "val", "test")}),
    ], [r["epoch"] for r in records], size)
