"""Backprop through routing: the same network trained with routing_grad "full" and
"last" from the same seed, on the same batches.

Per epoch it records test accuracy, the gradient norm of every parameter
(mean over the epoch's steps), and on a fixed probe batch how much gradient reaches the
routing's input along each path: for dynamic routing (the capsule network) u_hat through
each iteration's weighted sum and through the coupling coefficients (the "agreement" paths,
which "last" cuts); for EM routing (--model em) each layer's votes through each M-step and
through each E-step's assignments (which "last" cuts). Writes <name>.json and <name>.png
into --out (routing_study or em_routing_study; docs/studies holds the ones
docs/studies/routing.md shows) and a Markdown table to stdout.

    python examples/routing_study.py --epochs 6 --out docs/studies   # bundled MNIST sample, ~2 x 3 min
    python examples/routing_study.py --data ../shared/data/mnist --limit 10000
    python examples/routing_study.py --model em --routing-iters 2 --lr 1e-3 --batch-size 32
"""
import argparse
import json
from pathlib import Path

# minicaps before NumPy, so that OpenBLAS's idle threads sleep (minicaps/fast/idle_threads.py)
from minicaps import Adam, CapsNet, ExponentialDecay
from minicaps.nets.emcapsnet import EMCapsNet
import numpy as np

from minicaps.training.augment import shift
from minicaps.data import load_dataset
from minicaps.training.evaluate import class_lengths
from minicaps.tools.show import line_charts


def accuracy(net, x, y):
    return float((class_lengths(net, x).argmax(axis=1) == y).mean())


# The network of each --model (the bundled defaults' widths for the capsule network; the
# EM network's own defaults) and the transform its last routing takes as input.
NETWORKS = {"capsnet": (lambda **kw: CapsNet(conv_channels=64, primary_types=8, **kw), "caps.w"),
            "em": (EMCapsNet, "class.w")}


def path_name(key):
    """'sum 2', or with EM 'class e-step 1': a path's name in the JSON and the table."""
    return " ".join(str(part + 1) if isinstance(part, int) and len(key) == 2 else str(part)
                    for part in key)


def train(mode, ds, args):
    network, _ = NETWORKS[args.model]
    net = network(in_shape=ds.in_shape, n_classes=ds.n_classes,
                  routing_iters=args.routing_iters, routing_grad=mode, seed=args.seed)
    steps = len(ds.train_y) // args.batch_size
    optimizer = Adam(net.params, schedule=ExponentialDecay(args.lr, rate=0.95, steps=steps))
    rng = np.random.default_rng(args.seed)  # the same batches and shifts for both modes
    probe_x, probe_y = ds.test_x[:64], ds.test_y[:64]
    history = []
    for epoch in range(1, args.epochs + 1):
        order = rng.permutation(len(ds.train_y))
        norms = {name: 0.0 for name in net.params}
        for n in range(steps):
            batch = order[n * args.batch_size:(n + 1) * args.batch_size]
            net.set_training_progress(((epoch - 1) * steps + n) / (args.epochs * steps))
            _, grads = net.loss_and_grads(shift(ds.train_x[batch], 2, rng), ds.train_y[batch])
            for name, g in grads.items():
                norms[name] += float(np.linalg.norm(g)) / steps
            optimizer.step(grads)
        paths = net.routing_gradient_paths(probe_x, probe_y)
        record = {"epoch": epoch, "test_accuracy": accuracy(net, ds.test_x, ds.test_y),
                  "grad_norms": norms,
                  "paths": {path_name(key): v for key, v in sorted(paths.items())}}
        print(f"{mode}: epoch {epoch} test {record['test_accuracy']:.2%}", flush=True)
        history.append(record)
    return history


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(NETWORKS), default="capsnet")
    parser.add_argument("--data", default=None, help="dataset path (default: bundled sample)")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--routing-iters", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=".")
    args = parser.parse_args()
    ds = load_dataset(args.data, limit=args.limit)
    results = {mode: train(mode, ds, args) for mode in ("full", "last")}
    out, name = Path(args.out), "routing_study" if args.model == "capsnet" else "em_routing_study"
    transform = NETWORKS[args.model][1]
    (out / f"{name}.json").write_text(json.dumps(results, indent=1))
    epochs = range(1, args.epochs + 1)
    chart = line_charts([
        ("test accuracy", {mode: [r["test_accuracy"] for r in h] for mode, h in results.items()}),
        (f"{transform} gradient norm", {mode: [r["grad_norms"][transform] for r in h]
                                        for mode, h in results.items()}),
        ("full: gradient reaching the routing's input, by path", {
            path: [r["paths"][path] for r in results["full"]]
            for path in results["full"][-1]["paths"]
            if args.model == "capsnet" or path.startswith("class")}),  # EM: the class layer
    ], epochs)
    chart.save(out / f"{name}.png")
    last = {mode: h[-1] for mode, h in results.items()}
    print("\n| | full | last |\n|---|---|---|")
    print("| test accuracy, epoch 1 | " + " | ".join(
        f"{results[m][0]['test_accuracy']:.2%}" for m in ("full", "last")) + " |")
    print(f"| test accuracy, epoch {args.epochs} | " + " | ".join(
        f"{last[m]['test_accuracy']:.2%}" for m in ("full", "last")) + " |")
    for name in last["full"]["grad_norms"]:
        print(f"| mean gradient norm, {name} | " + " | ".join(
            f"{last[m]['grad_norms'][name]:.3g}" for m in ("full", "last")) + " |")
    for path in last["full"]["paths"]:
        print(f"| gradient into the routing's input via {path} | "
              f"{last['full']['paths'][path]:.3g} | "
              f"{last['last']['paths'].get(path, 0):.3g} |")


if __name__ == "__main__":
    main()
