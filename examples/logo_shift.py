"""A stand-in for logo renderings and photographs that tvlogos-de's training frames never show
(issue 20), and the scores of checkpoints on it.

    # the set, from tvlogos-de's test frames (minicaps/tools/logo_shift.py says what is in it)
    python examples/logo_shift.py build ../shared/data/tvlogos-de /tmp/logo-shift
    # every test frame softer, grainier or more compressed, as other sources show frames
    python examples/logo_shift.py photographic ../shared/data/tvlogos-de /tmp/logo-photo
    # a held-out rendering per channel: a training folder without it, a folder of it to score
    python examples/logo_shift.py heldout ../shared/data/tvlogos-de /tmp/logo-heldout
    minicaps train --data /tmp/logo-heldout/train --out runs/heldout
    # scores: whole, per part, per channel of each part
    minicaps evaluate runs/tvlogos-de/best.npz --data /tmp/logo-shift
    python examples/logo_shift.py score runs/tvlogos-de/best.npz /tmp/logo-shift
    python examples/logo_shift.py score runs/heldout/best.npz /tmp/logo-heldout/heldout
    python examples/logo_shift.py score runs/tvlogos-de/best.npz /tmp/logo-photo
    # the frame decision at other thresholds than the checkpoint's
    python examples/logo_shift.py score runs/tvlogos-de/best.npz /tmp/logo-shift \
        --thresholds 0.1,0.2,0.3,0.4,0.5
    # each channel decided in any corner, not only where training showed it
    python examples/logo_shift.py score runs/tvlogos-de/best.npz /tmp/logo-shift --any-corner

`score --json FILE` also writes the scores for a study's tables.
"""
import argparse
import json
import sys
import time

from minicaps.errors import MinicapsError
from minicaps.nets.kinds import build as build_net
from minicaps.tools import logo_shift, rendering_groups
from minicaps.training import checkpoint
from minicaps.training.frames import stored_threshold


def build(args):
    _write(args, lambda progress: logo_shift.build(
        args.data, args.out, seed=args.seed, progress=progress,
        parts=args.parts.split(",") if args.parts else logo_shift.PARTS))


def photographic(args):
    _write(args, lambda progress: logo_shift.build_photographic(
        args.data, args.out, seed=args.seed, progress=progress))


def _write(args, write):
    t0 = time.perf_counter()
    counts = write(lambda part, n: print(f"{part}: {n} frames", file=sys.stderr))
    print(f"{args.out}: {sum(counts.values())} frames in {time.perf_counter() - t0:.0f}s: "
          + ", ".join(f"{part} {n}" for part, n in counts.items()))


def heldout(args):
    groups = rendering_groups.hold_out(args.data, args.out, k=args.groups, seed=args.seed)
    for channel, (kept, held) in groups.items():
        print(f"{channel:<14} kept {kept:>3} training frames, held out {held:>3}")
    print(f"train without them: minicaps train --data {args.out}/train; "
          f"score them: python examples/logo_shift.py score CKPT {args.out}/heldout")


def score(args):
    results = {}
    for path in args.checkpoints:
        ckpt = checkpoint.load(path)
        net = build_net(ckpt.model_config, ckpt.scored_params)
        ds, parts, lengths = logo_shift.stand_in_lengths(net, ckpt, args.folder,
                                                         any_corner=args.any_corner)
        first, with_logo = logo_shift.ranked_first(ds, lengths)
        if with_logo:
            print(f"{path} on {args.folder}: the right channel the strongest on "
                  f"{first / with_logo:.2%} of {with_logo} logo frames (at any threshold)")
        for threshold in args.thresholds or [stored_threshold(ckpt.history)]:
            by_part, by_class, ev = logo_shift.tally(ds, parts, lengths, threshold)
            right = sum(r for r, _ in by_part.values())
            total = sum(n for _, n in by_part.values())
            print(f"{path} on {args.folder} at threshold {threshold:g}: "
                  f"{right / total:.2%} of {total} frames")
            for part, (r, n) in by_part.items():
                low = sorted((r2 / n2, c, r2, n2) for (p, c), (r2, n2) in by_class.items()
                             if p == part and r2 < n2)[:3]
                lows = ", ".join(f"{c} {r2}/{n2}" for _, c, r2, n2 in low)
                print(f"  {part:<13} {r / n:7.2%} ({r}/{n}){'  lowest: ' + lows if lows else ''}")
            key = path if not args.thresholds else f"{path}@{threshold:g}"
            results[key] = {"threshold": threshold, "overall": [right, total],
                            "ranked_first": [first, with_logo], "parts": by_part,
                            "classes": {f"{p}/{c}": v for (p, c), v in by_class.items()},
                            "confusion": ev.confusion(len(ds.classes), frames=True).tolist(),
                            "class_names": ds.classes}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


def thresholds(text):
    values = [float(t) for t in text.split(",")]
    if not all(0 < t < 1 for t in values):
        raise argparse.ArgumentTypeError(f"thresholds must lie in (0, 1): {text}")
    return values


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("build", help="write the stand-in from an R&S folder's test frames")
    p.add_argument("data", help="an R&S folder (tvlogos-de)")
    p.add_argument("out", help="a new folder for the stand-in")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--parts", help=f"comma-separated, of {','.join(logo_shift.PARTS)}")
    p.set_defaults(run=build)
    p = sub.add_parser("photographic", help="every test frame blurred, softened, grainy and "
                                            "heavily compressed")
    p.add_argument("data", help="an R&S folder (tvlogos-de)")
    p.add_argument("out", help="a new folder for the changed frames")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=photographic)
    p = sub.add_parser("heldout", help="hold one rendering per channel out of training")
    p.add_argument("data", help="an R&S folder (tvlogos-de)")
    p.add_argument("out", help="a new folder: <out>/train and <out>/heldout")
    p.add_argument("--groups", type=int, default=4, help="appearance groups per channel")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=heldout)
    p = sub.add_parser("score", help="frame accuracy of checkpoints, whole and per part")
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("folder", help="a stand-in folder (or any R&S folder)")
    p.add_argument("--thresholds", type=thresholds,
                   help="frame thresholds to decide at, comma-separated (default: the "
                        "checkpoint's, chosen on its validation frames); the network runs once")
    p.add_argument("--any-corner", action="store_true",
                   help="decide each channel in any corner, as `minicaps evaluate --any-corner`")
    p.add_argument("--json", help="also write the scores here")
    p.set_defaults(run=score)
    args = parser.parse_args()
    try:
        args.run(args)
    except MinicapsError as e:
        sys.exit(f"logo_shift: error: {e}")


if __name__ == "__main__":
    main()
