"""Train EMCapsNet through minicaps' own training loop (training.loop.run) on the bundled
MNIST sample, before `minicaps train --model em` exists.

The loop does not know the EM network yet; this script supplies, from outside, exactly the
four pieces of wiring the library needs (docs/studies/em.md lists them):
  1. the network config of a run:  loop.model_config -> EMCapsNetConfig for the dataset;
  2. the start-of-run summary line: loop.describe;
  3. the memory planner: loop.check_fits (tools/plan.py plans CapsNet and the CNN only);
  4. the spread loss's margin schedule: net.set_training_progress(fraction) before every
     step, done here from the loop's "step" progress events.
Everything else (batches, augmentation, Adam, checkpoints, evaluation) is the library's.

    python benchmarks/train_em_bundled.py --epochs 3 --out runs/em
"""
import argparse
import json
import time

from minicaps.nets.emcapsnet import EMCapsNetConfig
from minicaps.training import loop
from minicaps.training.config import TrainConfig


def wire(routing_iters, caps_types):
    """Patch the loop's three model hooks; returns the list the built net lands in."""
    built = []

    def model_config(config, dataset):
        return EMCapsNetConfig(in_shape=dataset.in_shape, n_classes=dataset.n_classes,
                               routing_iters=routing_iters, routing_grad=config.routing_grad,
                               caps_types=caps_types)

    def build(*args, **kwargs):
        built.append(real_build(*args, **kwargs))
        return built[-1]

    real_build = loop.build
    loop.model_config = model_config
    loop.describe = lambda m: f"EMCapsNet, {m.n_params():,} parameters, grids {m.grids}"
    loop.check_fits = lambda *args, **kwargs: None
    loop.build = build
    return built


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3, help="epochs to train")
    parser.add_argument("--batch-size", type=int, default=32, help="examples per step")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam's learning rate")
    parser.add_argument("--routing-iters", type=int, default=2, help="EM iterations")
    parser.add_argument("--routing-grad", default="full", choices=["full", "last"],
                        help="EM routing's gradient")
    parser.add_argument("--caps-types", default="16,16",
                        help="types of each convolutional capsule layer")
    parser.add_argument("--out", default="runs/em", help="run directory (must be new)")
    parser.add_argument("--seed", type=int, default=0, help="weights, split and batches")
    args = parser.parse_args()
    built = wire(args.routing_iters, tuple(int(t) for t in args.caps_types.split(",")))
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                         routing_grad=args.routing_grad, out=args.out, seed=args.seed)
    state = {"done": 0, "steps": None}
    t0 = time.perf_counter()

    def progress(kind, **info):
        if kind == "start":
            print("\n".join(info["lines"]), flush=True)
        elif kind == "epoch_start":
            state["steps"] = info["steps"]
        elif kind == "step":  # after a step: set the margin of the next one
            state["done"] += 1
            built[0].set_training_progress(state["done"] / (state["steps"] * config.epochs))
        elif kind == "epoch":
            record = {k: v for k, v in info["record"].items()
                      if k in ("epoch", "train_loss", "train_accuracy", "val_accuracy",
                               "test_accuracy", "images_per_s", "epoch_s")}
            print(json.dumps({**record, "margin": round(built[0].margin, 3),
                              "wall_s": round(time.perf_counter() - t0)}), flush=True)

    loop.run(config, progress=progress)


if __name__ == "__main__":
    main()
