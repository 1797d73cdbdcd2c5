"""Data-parallel training over MPI (minicaps/training/distributed.py).

The tests that launch ranks run `mpiexec -n 2` (the one next to this Python, as
`pip install 'minicaps[mpi]'` puts MPICH's there, else the one on PATH) on the bundled
sample, each with a timeout; they skip only where mpi4py is not importable. The GPU path
(NCCL, one device per rank) needs GPUs: only its choice of device is tested here.
"""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minicaps.data import load_bundled, save_npz
from minicaps.errors import MinicapsError
from minicaps.training import checkpoint, distributed
from minicaps.training.config import TrainConfig, model_config

ROOT = Path(__file__).resolve().parent.parent
LOSSES = Path(__file__).resolve().parent / "distributed_losses.py"
TIMEOUT_S = 300
# Per-step losses of two ranks against one process: float32 rounding of the split sums.
RELATIVE = 1e-6
# 180 training examples in batches of 25: shares of 12 and 13 images, the last of 5 (2, 3).
SLICE = {"limit": 200, "batch_size": 25, "seed": 3}

needs_mpi = pytest.mark.skipif(importlib.util.find_spec("mpi4py") is None,
                               reason="mpi4py is not installed (pip install 'minicaps[mpi]')")


# -- without MPI


def test_gpu_for_takes_local_rank_modulo_devices():
    assert [distributed.gpu_for(r, 4) for r in range(6)] == [0, 1, 2, 3, 0, 1]
    assert [distributed.gpu_for(r, 1) for r in range(3)] == [0, 0, 0]  # one visible each
    with pytest.raises(MinicapsError, match="no CUDA device"):
        distributed.gpu_for(0, 0)


def test_launcher_variables_decide_who_joins_and_who_reports():
    assert distributed.launched_size({}) == 1 and distributed.reports({})
    mpich = {"PMI_SIZE": "4", "PMI_RANK": "2"}
    assert distributed.launched_size(mpich) == 4 and not distributed.reports(mpich)
    open_mpi = {"OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "0"}
    assert distributed.launched_size(open_mpi) == 2 and distributed.reports(open_mpi)
    assert distributed.reports({"PMI_SIZE": "1", "PMI_RANK": "0"})


def test_alone_without_a_launcher_imports_no_mpi(monkeypatch):
    for name in distributed.SIZE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    code = ("import sys; from minicaps.training import distributed; "
            "w = distributed.join(); assert type(w) is distributed.Alone; "
            "assert 'mpi4py' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=60)


def test_shares_cover_the_batch_and_weigh_to_one():
    rank = distributed.Rank.__new__(distributed.Rank)
    for size in (2, 3, 5):
        for n in (1, 4, 25, 64):
            rank.size = size
            shares = []
            for rank.rank in range(size):
                shares.append(rank.share(n))
            covered = [i for s in shares for i in range(s.start, s.stop)]
            assert covered == list(range(n))
            assert max(s.stop - s.start for s in shares) - min(s.stop - s.start
                                                               for s in shares) <= 1


class _NoOtherRanks:
    """MPI and a communicator whose sums add nothing: what one rank of two sees where the
    other rank's share is empty."""
    IN_PLACE, SUM = object(), object()

    def Allreduce(self, send, receive, op):
        pass


def _rank(rank, size):
    world = distributed.Rank.__new__(distributed.Rank)
    world.MPI = world.comm = _NoOtherRanks()
    world.rank, world.size, world._buffer = rank, size, None
    return world


def test_a_rank_weighs_its_share_and_adds_nothing_where_it_has_none():
    from minicaps.nets.kinds import build
    ds = load_bundled(limit=10)
    net = build(model_config(TrainConfig(conv_channels=8, primary_types=2), ds), seed=0)

    def work(x, y):
        return (*net.loss_and_grads(x, y), len(y))
    x, y = ds.train_x[:5], ds.train_y[:5]
    loss, grads, hits = _rank(0, 2).batch_gradients(work, x, y, net.params)  # 2 of 5
    share_loss, share_grads = net.loss_and_grads(x[:2], y[:2])
    assert np.isclose(loss, 0.4 * share_loss, rtol=1e-6) and hits == 2
    for name, g in share_grads.items():
        np.testing.assert_allclose(grads[name], 0.4 * g, rtol=1e-5, atol=1e-12)
    loss, grads, hits = _rank(0, 2).batch_gradients(work, x[:1], y[:1], net.params)
    assert loss == 0 and hits == 0 and all(not g.any() for g in grads.values())


def test_fingerprint_sees_options_and_data_not_the_data_path():
    ds = load_bundled(limit=50)
    config = TrainConfig(limit=50, data="/here/same.npz")
    mconfig = model_config(config, ds)
    base = distributed.fingerprint(config, mconfig, ds, 0)
    moved = TrainConfig(limit=50, data="/elsewhere/same.npz")
    assert distributed.fingerprint(moved, mconfig, ds, 0) == base
    assert distributed.fingerprint(TrainConfig(limit=50, data="/here/same.npz", lr=1e-3), mconfig, ds, 0)[0] != base[0]
    assert distributed.fingerprint(config, mconfig, ds, 1)[0] != base[0]
    ds.train_x[0, 0, 0, 0] ^= 1
    changed = distributed.fingerprint(config, mconfig, ds, 0)
    assert changed[0] == base[0] and changed[1] != base[1]


# -- two ranks


def _mpiexec():
    here = Path(sys.executable).parent / "mpiexec"
    found = str(here) if here.exists() else shutil.which("mpiexec")
    assert found, "mpi4py is installed but no mpiexec was found (pip install mpich)"
    return found


def _env():
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    for name in (*distributed.SIZE_VARIABLES, *distributed.RANK_VARIABLES):
        env.pop(name, None)  # a test run under a launcher must not look like a rank
    return env


def _run(args, ranks=None, env=None):
    command = ([_mpiexec(), "-n", str(ranks)] if ranks else []) + args
    return subprocess.run(command, cwd=ROOT, env={**_env(), **(env or {})}, text=True,
                          capture_output=True, timeout=TIMEOUT_S)


def _losses(tmp_path, name, options, ranks=None, out=None):
    path = tmp_path / f"{name}.json"
    done = _run([sys.executable, str(LOSSES), str(out or tmp_path / name), str(path),
                 json.dumps(options)], ranks)
    assert done.returncode == 0, done.stderr
    return np.array(json.loads(path.read_text()))


def _train(*args):
    return [sys.executable, "-m", "minicaps", "train", *args]


def _errors(stderr):
    return [line for line in stderr.splitlines() if line.startswith("minicaps: error:")]


@needs_mpi
def test_two_ranks_match_one_process_and_resume_alone(tmp_path):
    """One process for two epochs against two ranks for the first and one process resuming
    their checkpoint for the second: every step's loss the same to rounding."""
    alone = _losses(tmp_path, "alone", {**SLICE, "epochs": 2})
    two = _losses(tmp_path, "two", {**SLICE, "epochs": 1}, ranks=2)
    resumed = _losses(tmp_path, "resumed", {"resume_to": 2}, out=tmp_path / "two")
    steps = len(alone) // 2
    assert len(alone) == 16 and len(two) == len(resumed) == steps
    both = np.concatenate([two, resumed])
    worst = float(np.max(np.abs(both - alone) / np.abs(alone)))
    print(f"largest relative difference of {len(alone)} per-step losses: {worst:.2e}")
    assert worst <= RELATIVE
    assert alone[-1] < alone[0]  # it trained: the comparison is not of constants
    assert checkpoint.load(tmp_path / "two" / "last.npz").epoch == 2


@needs_mpi
def test_cli_under_mpiexec_reports_once_and_refuses_a_second_run(tmp_path):
    out = tmp_path / "run"
    args = _train("--limit", "100", "--batch-size", "16", "--epochs", "1", "--out", str(out))
    done = _run(args, ranks=2)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()  # rank 0's epoch line alone
    assert len(lines) == 1 and lines[0].startswith("epoch 1/1"), done.stdout
    assert "data parallel over 2 MPI ranks" in done.stderr
    assert done.stderr.count("checkpoints:") == 1
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    again = _run(args, ranks=2)  # every rank fails alike at setup: one line, status 1
    assert again.returncode == 1
    assert _errors(again.stderr) == [f"minicaps: error: {out} already holds a run (last.npz): "
                                      "continue it with --resume, or train into another --out"]


def _refused(out, rank_0, rank_1, what):
    """Ranks 0 and 1 started with other train arguments: one line, nothing written."""
    done = _run([_mpiexec(), "-n", "1", *_train(*rank_0), ":", "-n", "1", *_train(*rank_1)])
    assert done.returncode == 1
    assert _errors(done.stderr) == [
        f"minicaps: error: rank 1 of 2 was started with other {what} than rank 0 (each rank "
        f"checksums its {what}): give every rank the same"]
    assert not out.exists()


@needs_mpi
def test_ranks_with_other_options_are_refused_before_the_first_step(tmp_path):
    out = tmp_path / "run"
    common = ["--limit", "100", "--epochs", "1", "--out", str(out)]
    _refused(out, [*common, "--lr", "0.001"], [*common, "--lr", "0.002"], "options")


@needs_mpi
def test_ranks_with_other_data_are_refused_before_the_first_step(tmp_path):
    ds = load_bundled(limit=40)
    save_npz(tmp_path / "a.npz", ds)
    ds.test_x[-1, 0, 5, 5] ^= 1
    save_npz(tmp_path / "b.npz", ds)
    out = tmp_path / "run"
    common = ["--epochs", "1", "--out", str(out), "--conv-channels", "8", "--primary-types", "2"]
    _refused(out, [*common, "--data", str(tmp_path / "a.npz")],
             [*common, "--data", str(tmp_path / "b.npz")], "data")


@needs_mpi
def test_a_rank_that_fails_ends_every_rank_and_keeps_the_last_checkpoint(tmp_path):
    """Rank 1 raises in its 12th batch (epoch 2 of 8-step epochs)."""
    path = tmp_path / "losses.json"
    done = _run([sys.executable, str(LOSSES), str(tmp_path / "run"), str(path),
                 json.dumps({**SLICE, "epochs": 3})], ranks=2, env={"MINICAPS_FAIL_AT": "1,12"})
    assert done.returncode != 0
    assert _errors(done.stderr) == [
        "minicaps: error: rank 1 of 2: RuntimeError: made to fail at batch 12"]
    assert not path.exists()
    assert checkpoint.load(tmp_path / "run" / "last.npz").epoch == 1
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == \
        ["best.npz", "last.npz", "metrics.jsonl"]
