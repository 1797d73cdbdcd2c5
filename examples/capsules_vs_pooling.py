"""Capsules against max pooling under transformations the networks never saw in training.

Give it checkpoints trained the same way on upright data (one `minicaps train` and one
`minicaps train --model cnn`); it scores each on its own test split, upright and under every
transform, and prints a Markdown table (frame accuracy for R&S frames, else accuracy).

    minicaps train --data ../shared/data/mnist --pad 6 --shift 6 --epochs 3 \
        --conv-channels 64 --primary-types 8 --out runs/vs-mnist-caps
    minicaps train --data ../shared/data/mnist --pad 6 --shift 6 --epochs 3 \
        --model cnn --cnn-channels 32,64,64 --out runs/vs-mnist-cnn
    python examples/capsules_vs_pooling.py runs/vs-mnist-caps/best.npz \
        runs/vs-mnist-cnn/best.npz --json versus-mnist.json

Every transform is applied to the already padded test images, so "shift" and "affine" move
the content within the canvas the networks were trained on.
"""
import argparse
import json
import time

from minicaps.training import checkpoint
from minicaps.tools import transforms
from minicaps.training.evaluate import checkpoint_data, evaluate
from minicaps.training.frames import seen_mask, stored_threshold
from minicaps.nets.kinds import build, kind_of

TRANSFORMS = ("rotate:15", "rotate:30", "rotate:45", "rotate:90", "rotate:180", "flip",
              "shift:3", "shift:6", "scale:0.8", "scale:1.2", "affine:0")


def scores(path, specs, limit=None):
    """{transform: accuracy} of the checkpoint at `path` on its own data's test split (its
    first `limit` images; frame data always whole)."""
    ckpt = checkpoint.load(path)
    net = build(ckpt.model_config, ckpt.scored_params)
    ds = checkpoint_data(ckpt, path)
    test_x, test_y = ds.test_x, ds.test_y
    if limit and ds.test_frame is None:
        test_x, test_y = test_x[:limit], test_y[:limit]
    result = {}
    for spec in ("upright", *specs):
        x = test_x if spec == "upright" else transforms.apply(test_x, spec)
        ev = evaluate(net, x, test_y, frame=ds.test_frame, frame_y=ds.test_frame_y,
                      classes=ds.classes, threshold=stored_threshold(ckpt.history),
                      seen=seen_mask(ckpt.data_info, ds.classes))
        result[spec] = ev.frame_accuracy if ev.frame_accuracy is not None else ev.accuracy
    return kind_of(ckpt.model_config), ckpt.model_config.n_params(), ds.name, result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+", help="best.npz of each network")
    parser.add_argument("--transforms", default=",".join(TRANSFORMS),
                        help="comma-separated --transform specs")
    parser.add_argument("--limit", type=int, help="score the first N test images only")
    parser.add_argument("--json", help="also write the scores here")
    args = parser.parse_args()
    specs = [s for s in args.transforms.split(",") if s]
    for spec in specs:
        transforms.parse(spec)
    t0 = time.perf_counter()
    columns = {path: scores(path, specs, args.limit) for path in args.checkpoints}
    names = [f"{kind} ({n:,} weights)" for kind, n, _, _ in columns.values()]
    data = sorted({name for _, _, name, _ in columns.values()})
    print(f"test split of {', '.join(data)}; {time.perf_counter() - t0:.0f}s\n")
    print("| test images | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for spec in ("upright", *specs):
        cells = [f"{c[3][spec]:.1%}" for c in columns.values()]
        print(f"| {spec} | " + " | ".join(cells) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({path: {"model": c[0], "params": c[1], "data": c[2], "scores": c[3]}
                       for path, c in columns.items()}, f, indent=1)


if __name__ == "__main__":
    main()
