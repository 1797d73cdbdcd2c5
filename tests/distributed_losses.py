"""Train as the arguments say and write every step's loss (rank 0's view under mpiexec).

    [mpiexec -n 2] python tests/distributed_losses.py OUT LOSSES.json '{"limit": 600}'

tests/test_distributed.py runs it alone and under mpiexec and compares the two files; the
third argument holds TrainConfig fields as JSON, or {"resume_to": epochs} to continue the
run in OUT; {"dtype": "float64"} among them trains the network in float64 (for
docs/distributed.md's whole epoch). With MINICAPS_FAIL_AT="rank,n" that rank raises in its
n-th batch (a rank that fails mid-run; the rank as MPICH's PMI_RANK says).
"""
import dataclasses
import json
import os
import sys

from minicaps.training import distributed, loop
from minicaps.training.config import TrainConfig


def fail_at(spec):
    """Make the gradients of one rank's n-th batch raise (spec "rank,n")."""
    rank, n = (int(k) for k in spec.split(","))
    gradients, calls = loop._gradients, [0]

    def failing(*args):
        calls[0] += 1
        if int(os.environ.get("PMI_RANK", 0)) == rank and calls[0] == n:
            raise RuntimeError(f"made to fail at batch {n}")
        return gradients(*args)
    loop._gradients = failing


def train_in(dtype):
    """Build the networks of the runs in `dtype`."""
    model_config = loop.model_config
    loop.model_config = lambda config, ds: dataclasses.replace(model_config(config, ds),
                                                               dtype=dtype)


def main():
    out, losses_path, options = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    losses = []

    def progress(kind, **info):
        if kind == "step":
            losses.append(float(info["loss"]))

    if "dtype" in options:
        train_in(options.pop("dtype"))
    if os.environ.get("MINICAPS_FAIL_AT"):
        fail_at(os.environ["MINICAPS_FAIL_AT"])
    if "resume_to" in options:  # continue the run in OUT up to that many epochs
        loop.resume(out, epochs=options["resume_to"], progress=progress)
    else:
        loop.run(TrainConfig(out=out, **options), progress=progress)
    if distributed.reports():
        with open(losses_path, "w") as f:
            json.dump(losses, f)


if __name__ == "__main__":
    main()
