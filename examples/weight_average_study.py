"""Which weight average to score: one training run, several averages side by side.

`minicaps train --average-epochs A` never changes training itself (the same seed takes the
same steps with any A, or none), so one run can keep averages over several horizons and
score each of them on the same epochs. This runs `minicaps train` as the command line would
(the R&S defaults on R&S data) with the first horizon as its own, keeps the others beside
it, and from --from-epoch on scores each on the validation and test splits. Writes the run
folder as usual and <out>/averages.jsonl; prints a Markdown table of frame accuracies
(validation / test) per epoch, "none" being the training weights themselves.

    python examples/weight_average_study.py --data ../shared/data/tvlogos-de --seed 1 \\
        --out runs/average-study --horizons 1,0.5,2,4     # 35-50 min on two CPU cores

Each extra horizon costs one more scoring of both splits per epoch (~10 s on the logo data).
"""
import argparse
import json
from pathlib import Path

from minicaps.training import loop as train
from minicaps.optim import WeightAverage, weights_in


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=None, help="default: the layout's")
    parser.add_argument("--contrast-window", type=int, default=None,
                        help="default: the layout's (0: the study's runs, before it)")
    parser.add_argument("--horizons", default="1,0.5,2,4",
                        help="epochs of each average; the first is the run's own")
    parser.add_argument("--from-epoch", type=int, default=14)
    parser.add_argument("--limit", type=int, default=None, help="frames per split (a quick look)")
    args = parser.parse_args()
    horizons = [float(h) for h in args.horizons.split(",")]
    # The test split after every epoch, for the table; the rest: the data's preset.
    options = {"average_epochs": horizons[0], "test_every": 1}
    for name in ("epochs", "contrast_window"):
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    config = train.TrainConfig(data=args.data, out=args.out,
                               seed=args.seed, limit=args.limit, **options)
    # The extra averages ride along with the run's optimizer; "none" is an average over
    # one step, i.e. a copy of the training weights.
    extra, rows, epochs_scored, extra_history = {}, [], [], {}
    make_optimizer, split_scores = train.make_optimizer, train._split_scores

    def with_extra_averages(config, params, steps_per_epoch):
        opt = make_optimizer(config, params, steps_per_epoch)
        extra.update({h: WeightAverage(params, WeightAverage.steps_for(h, steps_per_epoch))
                      for h in horizons[1:]})
        extra["none"] = WeightAverage(params, 1)
        step = opt.step

        def step_and_average(grads):
            step(grads)
            for average in extra.values():
                average.update(params, opt.step_count)
        opt.step = step_and_average
        return opt

    def scores_of_every_average(net, val, test, config, classes, seen, score_test=True,
                                history=()):
        # the run's own average
        own = split_scores(net, val, test, config, classes, seen, score_test, history)
        epochs_scored.append(own)  # called once per epoch
        if len(epochs_scored) < args.from_epoch:
            return own
        row = {"epoch": len(epochs_scored), horizons[0]: own}
        for h, average in extra.items():  # each average's threshold from its own curves
            with weights_in(net.params, average.weights):
                row[h] = split_scores(net, val, test, config, classes, seen, score_test,
                                      extra_history.setdefault(h, []))
            extra_history[h].append(row[h])
        rows.append(row)
        with open(Path(args.out) / "averages.jsonl", "a") as f:
            f.write(json.dumps({str(k): v for k, v in row.items()}) + "\n")
        return own

    train.make_optimizer, train._split_scores = with_extra_averages, scores_of_every_average
    train.run(config, progress=lambda kind, **info: print(
        train_line(info["record"]), flush=True) if kind == "epoch" else None)
    names = [*horizons, "none"]
    print("\n| epoch | " + " | ".join("training weights" if h == "none" else
                                         f"average over {h:g} epochs" for h in names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for row in rows:
        cells = [" / ".join(percent(row[h].get(f"{split}_frame_accuracy"))
                            for split in ("val", "test")) for h in names]
        print(f"| {row['epoch']} | " + " | ".join(cells) + " |")


def percent(x):
    return "-" if x is None else f"{x:.2%}"


def train_line(record):
    return (f"epoch {record['epoch']}: loss {record['train_loss']:.4f}, frames val "
            f"{percent(record.get('val_frame_accuracy'))} "
            f"test {percent(record.get('test_frame_accuracy'))}")


if __name__ == "__main__":
    main()
