"""The command line end to end: train, evaluate, predict, and one clear line per user error."""
import csv
import dataclasses
import io
import json
import os
import pickle
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from minicaps.training import checkpoint, loop as train
from minicaps.backend import gpu_available
from minicaps.cli.main import _load_net, main
from minicaps.data import RSCrop, load_dataset
from minicaps.data.rs import corner_logos
from minicaps.data.rs_index import read_index
from minicaps.training.evaluate import predict_files
from minicaps.nets.capsnet import CapsNet
from minicaps.training.presets import RS_DEFAULTS, SAMPLE_DEFAULTS

TINY = ["--conv-channels", "8", "--primary-types", "4", "--primary-dim", "4",
        "--class-dim", "8", "--batch-size", "32", "--epochs", "1"]


def invoke(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in result.output
    return result


def assert_user_error(result, *words):
    """Exit status 1 and the error as the last line of stderr, the only line saying error."""
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("minicaps: error: "), result.stderr
    assert sum("error" in line for line in lines) == 1, result.stderr
    for word in words:
        assert word in lines[-1], lines[-1]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A freshly trained tiny checkpoint on 200 + 200 images of the bundled sample."""
    out = tmp_path_factory.mktemp("run")
    result = invoke("train", "--limit", 200, "--out", out, *TINY)
    assert result.exit_code == 0, result.output
    return out


def test_train_writes_checkpoints_and_one_line_per_epoch(run_dir):
    assert {"last.npz", "best.npz", "metrics.jsonl"} <= set(os.listdir(run_dir))
    assert checkpoint.load(run_dir / "last.npz").epoch == 1


def test_train_prints_epoch_line(tmp_path):
    result = invoke("train", "--limit", 50, "--out", tmp_path, *TINY, "--no-reconstruction")
    assert result.exit_code == 0, result.output
    line = result.stdout.strip().splitlines()[-1]
    assert line.startswith("epoch 1/1") and "val" in line and "img/s" in line


def test_evaluate_prints_accuracy_and_confusion_matrix(run_dir):
    result = invoke("evaluate", run_dir / "last.npz", "--batch-size", 100)
    assert result.exit_code == 0, result.output
    assert "accuracy (examples)" in result.output and "confusion matrix" in result.output
    assert "(epoch 1)" in result.output


def test_a_checkpoint_trained_with_options_this_version_lacks_is_refused(run_dir, tmp_path):
    """evaluate and resume read its training options and refuse it in one line."""
    ckpt = checkpoint.load(run_dir / "last.npz")
    newer = {**ckpt.train_config, "titles_at_logos": 0.5}  # an option from another version
    checkpoint.save(tmp_path / "last.npz", dataclasses.replace(ckpt, train_config=newer))
    assert_user_error(invoke("evaluate", tmp_path / "last.npz"), "titles_at_logos")
    assert_user_error(invoke("train", "--resume", "--out", tmp_path, "--epochs", 2),
                      "titles_at_logos")
    assert sorted(os.listdir(tmp_path)) == ["last.npz"]  # nothing written


def test_predict_prints_class_and_lengths(run_dir, tmp_path):
    ds = load_dataset(limit=20)
    paths = []
    for i in range(2):
        paths.append(tmp_path / f"digit{i}.png")
        Image.fromarray(ds.test_x[i, 0]).save(paths[-1])
    rgb = tmp_path / "big.jpg"  # another size and mode: resized and converted
    Image.fromarray(np.repeat(np.kron(ds.test_x[0, 0], np.ones((2, 2), np.uint8))[..., None],
                              3, axis=2)).save(rgb)
    result = invoke("predict", run_dir / "last.npz", *paths, rgb, "--lengths")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 6 and lines[0].split("\t")[0] == str(paths[0])
    path, label, confidence, corner = lines[0].split("\t")
    assert label in ds.classes and 0 < float(confidence) < 1 and corner == ""
    assert len(lines[1].split()) == 20  # every class with its length
    assert float(lines[1].split()[1]) == pytest.approx(float(confidence), abs=1e-3)


def test_predict_reads_folders_and_writes_csv_or_json_lines(run_dir, tmp_path):
    ds = load_dataset(limit=20)
    for i in range(5):  # two folders deep; a file that is no image is passed over
        (tmp_path / "in" / str(i % 2)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(ds.test_x[i, 0]).save(tmp_path / "in" / str(i % 2) / f"d{i}.png")
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    result = invoke("predict", run_dir / "last.npz", tmp_path / "in", "--csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["path"] for r in rows] == sorted(str(p) for p in (tmp_path / "in").rglob("*.png"))
    assert all(r["label"] in ds.classes and r["corner"] == "" for r in rows)
    result = invoke("predict", run_dir / "last.npz", tmp_path / "in", "--json", "--lengths")
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["path"] for r in records] == [r["path"] for r in rows]
    assert all(set(r["lengths"][""]) == set(ds.classes) for r in records)
    assert [r["label"] for r in records] == [r["label"] for r in rows]
    (tmp_path / "empty").mkdir()
    assert_user_error(invoke("predict", run_dir / "last.npz", tmp_path / "empty"), "no images")
    assert_user_error(invoke("predict", run_dir / "last.npz", tmp_path / "in", "--threshold", 0.3),
                      "--threshold", "TV frames")
    assert_user_error(invoke("evaluate", run_dir / "last.npz", "--threshold", 0.3), "TV frames")
    assert_user_error(invoke("evaluate", run_dir / "last.npz", "--any-corner"), "--any-corner",
                      "TV frames")


# user errors: one line on stderr, exit status 1 (click's usage errors: status 2)

def test_missing_data_path_is_a_usage_error(tmp_path):
    result = invoke("train", "--data", tmp_path / "nowhere")
    assert result.exit_code == 2 and "does not exist" in result.output


def test_unknown_layout(tmp_path):
    (tmp_path / "notes.txt").write_text("no images here")
    assert_user_error(invoke("train", "--data", tmp_path, "--out", tmp_path / "o"),
                      "not a dataset")


def test_corrupt_images(tmp_path):
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(3):
            (tmp_path / c / f"{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    assert_user_error(invoke("train", "--data", tmp_path, "--out", tmp_path / "o"),
                      "unreadable")


def test_a_few_corrupt_images_are_one_warning_line(tmp_path):
    for c, grey in (("a", 40), ("b", 220)):
        (tmp_path / "d" / c).mkdir(parents=True)
        for i in range(12):
            Image.new("L", (28, 28), grey).save(tmp_path / "d" / c / f"{i}.png")
    (tmp_path / "d" / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    result = invoke("train", "--data", tmp_path / "d", "--out", tmp_path / "o", *TINY,
                    "--no-reconstruction")
    assert result.exit_code == 0, result.output
    warning_lines = [line for line in result.stderr.splitlines() if "broken.png" in line]
    assert len(warning_lines) == 1 and warning_lines[0].startswith("minicaps: warning: ")
    assert "warnings.warn" not in result.stderr  # no source line of the library


class Hostile:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_hostile_pickle_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "rs"
    (data / "zdf" / "train-0").mkdir(parents=True)
    (data / "master.pkl").write_bytes(pickle.dumps({"train": [Hostile()], "test": []}))
    (data / "labels.pkl").write_bytes(pickle.dumps({"zdf": 0}))
    assert_user_error(invoke("train", "--data", data, "--out", tmp_path / "o"), "master.pkl")
    assert not (tmp_path / "pwned").exists()


def test_truncated_checkpoint(run_dir, tmp_path):
    data = (run_dir / "last.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[:len(data) // 3])
    assert_user_error(invoke("evaluate", tmp_path / "cut.npz"), "cut.npz")
    assert_user_error(invoke("predict", tmp_path / "cut.npz", tmp_path / "cut.npz"), "cut.npz")


def test_corrupt_image_for_predict(run_dir, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    assert_user_error(invoke("predict", run_dir / "last.npz", bad), "bad.png")


@pytest.mark.skipif(gpu_available(), reason="a GPU is present")
def test_gpu_without_cupy_or_device(tmp_path):
    assert_user_error(invoke("train", "--gpu", "--out", tmp_path), "--gpu")


def test_resume_needs_a_checkpoint_and_refuses_other_options(run_dir, tmp_path):
    assert_user_error(invoke("train", "--resume", "--out", tmp_path), "last.npz")
    assert_user_error(invoke("train", "--resume", "--out", run_dir, "--lr", "0.5"), "--lr")
    assert_user_error(invoke("train", "--out", run_dir, *TINY, "--limit", 200), "--resume")


def test_nan_loss_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    assert invoke("train", "--limit", 30, "--out", tmp_path, *TINY).exit_code == 0
    before = checkpoint.load(tmp_path / "last.npz")
    real = CapsNet.loss_and_grads

    def poisoned(self, x, y, **kw):
        loss, grads, parts = real(self, x, y, **kw)
        return loss + np.float32("inf"), grads, parts
    monkeypatch.setattr(CapsNet, "loss_and_grads", poisoned)
    result = invoke("train", "--resume", "--out", tmp_path, "--epochs", 2)
    assert_user_error(result, "inf", "last good checkpoint")
    after = checkpoint.load(tmp_path / "last.npz")
    assert after.epoch == 1 and np.array_equal(after.params["caps.w"], before.params["caps.w"])


def test_rs_frames_end_to_end(data_root, tmp_path):
    """tvlogos-de, one frame per class and split, 1/10-scale crops: frame scores and a frame
    prediction (the shared data, read from MINICAPS_DATA)."""
    data = data_root / "tvlogos-de"
    out = tmp_path / "rs"
    result = invoke("train", "--data", data, "--out", out, "--limit", 16, "--crop-scale", 0.2,
                    "--kernel-size", 5, *TINY, "--val-fraction", 0)
    assert result.exit_code == 0, result.output
    assert "frames: val - test" in result.stdout
    result = invoke("evaluate", out / "last.npz")
    assert result.exit_code == 0, result.output
    assert "accuracy (frames)" in result.output and "nologo" in result.output
    frame = next((data / "zdf").glob("*/*.jpg"))
    result = invoke("predict", out / "last.npz", frame, "--lengths")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 4 and [line.split(":")[0].strip() for line in lines[1:]] == \
        ["tl", "tr", "bl"]  # the R&S default corners
    path, label, confidence, corner = lines[0].split("\t")
    assert path == str(frame) and label in checkpoint.load(out / "last.npz").classes
    assert corner in ("tl", "tr", "bl") if label != "nologo" else corner == ""
    # --threshold decides the frame: capsule lengths lie below 1, so at 1 it is nologo; at 0
    # every length reaches it, so it is a channel, where the stored threshold says nologo
    # (this barely trained net's lengths are near 0)
    at = {t: invoke("predict", out / "last.npz", frame, *t).stdout.rstrip("\n").split("\t")
          for t in ((), ("--threshold", 0), ("--threshold", 1))}
    assert at[()][1] == "nologo" and at[("--threshold", 1)][1] == "nologo"
    assert at[("--threshold", 0)][1] != "nologo" and at[("--threshold", 0)][3] in ("tl", "tr", "bl")
    # a channel is decided only in the corners its training frames showed it in (their boxes)
    info = checkpoint.load(out / "last.npz").data_info
    seen, crop = info["logo_corners"], RSCrop(**{**info["crop"], "corners": ("tl", "tr", "bl")})
    shown = {(corner, logo[0]) for f in read_index(data)[0] if f.split == "train"
             for corner, logo in zip(crop.corners, corner_logos(f.logos, crop)) if logo}
    assert {(corner, c) for corner, channels in seen.items() for c in channels} <= shown
    assert 0 < sum(map(len, seen.values())) < 15 * 3
    ckpt, net, _, mask = _load_net(out / "last.npz", gpu=False)  # evaluate's and predict's
    assert _load_net(out / "last.npz", gpu=False, any_corner=True)[3] is None
    assert mask.tolist() == [[c == "nologo" or c in seen[corner] for c in ckpt.classes]
                             for corner in ("tl", "tr", "bl")]
    decided, anywhere = (next(predict_files(net, [frame], ckpt.classes, ckpt.data_info, 0,
                                            seen=m)).lengths for m in (mask, None))
    assert np.array_equal(decided, anywhere * mask) and anywhere[~mask].max() > 0

    # a folder of frames to score, none for training: zdf frames in folders named for no
    # split, one wdr frame, two nologo frames; scored whole, per channel, on the net's classes
    new = tmp_path / "new"
    for k, d in enumerate(sorted((data / "zdf").glob("test-*"))[:3]):
        shutil.copytree(d, new / "zdf" / f"clip{k}")
    shutil.copytree(data / "wdr" / "test-0000", new / "wdr" / "test-0000")
    (new / "nologo" / "frames").mkdir(parents=True)
    for f in sorted((data / "nologo" / "test").glob("*.jpg"))[:2]:
        shutil.copy(f, new / "nologo" / "frames")
    result = invoke("evaluate", out / "last.npz", "--data", new)
    assert result.exit_code == 0, result.output
    assert "(6 frames)" in result.output or "/6)" in result.output
    per_class = {}  # the frames' table, which comes first
    for line in result.output.splitlines():
        if line.strip()[:1].isdigit() and len(line.split()) >= 4:
            per_class.setdefault(line.split()[1], line.split()[2])
    assert (per_class["zdf"], per_class["wdr"], per_class["nologo"], per_class["ard"]) == \
        ("3", "1", "2", "0")
    assert "frames decided at threshold 0.5 (the checkpoint's)" in result.output
    result = invoke("evaluate", out / "last.npz", "--data", new, "--threshold", 0)
    assert "frames decided at threshold 0 (given)" in result.output
    rows = [line.split() for line in result.output.splitlines() if line.strip()[:1].isdigit()]
    assert next(row for row in rows if row[1] == "nologo")[3] == "0.00%"  # every frame a channel
    (new / "zdf" / "clip0" / "metadata.txt").write_text("arte,10,10,40,20\n")
    assert_user_error(invoke("evaluate", out / "last.npz", "--data", new), "arte")
    result = invoke("predict", out / "last.npz", new, "--json")
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 6 and "predicting" not in result.stdout


def test_rs_layout_defaults_apply_unless_given(data_root, tmp_path, monkeypatch):
    """On R&S data the presets fill every option the user did not give; given ones win."""
    seen = {}
    monkeypatch.setattr(train, "run", lambda config, progress: seen.setdefault("c", config) and [])
    result = invoke("train", "--data", data_root / "tvlogos-de", "--out", tmp_path / "a",
                    "--epochs", 2, "--kernel-size", 3, "--reconstruction")
    assert result.exit_code == 0, result.output
    c = seen["c"]
    assert (c.epochs, c.kernel_size, c.reconstruction) == (2, 3, True)  # given
    for field in set(RS_DEFAULTS) - {"epochs", "kernel_size", "reconstruction"}:
        assert getattr(c, field) == RS_DEFAULTS[field], field
    assert RS_DEFAULTS["reconstruction"] is False and RS_DEFAULTS["epochs"] != 2
    seen.clear()
    result = invoke("train", "--out", tmp_path / "b")  # the bundled sample keeps its own
    assert result.exit_code == 0, result.output
    assert seen["c"].conv_channels == SAMPLE_DEFAULTS["conv_channels"] != 128
    assert seen["c"].share_transforms is False and seen["c"].epochs == 8


def test_resume_of_a_finished_run_says_so(run_dir):
    result = invoke("train", "--resume", "--out", run_dir)
    assert result.exit_code == 0 and "pass --epochs to train longer" in result.stderr
    assert checkpoint.load(run_dir / "last.npz").epoch == 1


def test_cnn_trains_evaluates_and_is_refused_by_capsule_pictures(tmp_path):
    out = tmp_path / "cnn"
    result = invoke("train", "--model", "cnn", "--cnn-channels", "8,8", "--cnn-hidden", "16",
                    "--limit", 100, "--epochs", 1, "--pad", 2, "--out", out)
    assert result.exit_code == 0, result.output
    assert "CNN with max pooling" in result.stderr
    assert checkpoint.load(out / "last.npz").model_config.in_shape == (1, 32, 32)
    result = invoke("evaluate", out / "last.npz", "--transform", "affine:1")
    assert result.exit_code == 0, result.output
    assert "affine:1" in result.output and "accuracy" in result.output
    assert_user_error(invoke("show", "couplings", out / "last.npz", "--out", tmp_path / "c.png"),
                      "CNN")


def test_bad_cnn_widths_are_a_usage_error(tmp_path):
    result = invoke("train", "--model", "cnn", "--cnn-channels", "8,x", "--out", tmp_path)
    assert result.exit_code == 2 and "--cnn-channels" in result.output


@pytest.mark.parametrize("args", [["--model", "cnn", "--routing-iters", "2"],
                                  ["--model", "cnn", "--conv-channels", "8"],
                                  ["--cnn-hidden", "16"]])
def test_options_of_the_other_kind_of_network_are_refused(tmp_path, args):
    assert_user_error(invoke("train", "--out", tmp_path, *args), "not an option of --model")


def test_a_refused_switch_is_named_as_it_was_given(tmp_path):
    assert_user_error(invoke("train", "--out", tmp_path, "--em-own-class-transforms"),
                      "--em-own-class-transforms: not an option of --model capsnet")


@pytest.mark.parametrize("kind", ["perturbations", "couplings"])
def test_show_refuses_an_index_outside_the_test_split(run_dir, tmp_path, kind):
    out = tmp_path / "picture.png"
    result = invoke("show", kind, run_dir / "last.npz", "--index", 99999, "--out", out)
    assert_user_error(result, "99,999", "1,000 images are 0 to 999")
    assert not out.exists()
    assert invoke("show", kind, run_dir / "last.npz", "--index", 999, "--out", out).exit_code == 0
    assert out.is_file()


def test_show_couplings_refuses_an_iteration_the_network_has_not(run_dir, tmp_path):
    out = tmp_path / "couplings.png"
    result = invoke("show", "couplings", run_dir / "last.npz", "--iteration", 3, "--out", out)
    assert_user_error(result, "iteration 3", "0 to 2")
    assert not out.exists()
    result = invoke("show", "couplings", run_dir / "last.npz", "--iteration", -3, "--out", out)
    assert result.exit_code == 0, result.output


def test_train_refuses_a_folder_of_one_class(tmp_path):
    folder = tmp_path / "one"
    (folder / "cats").mkdir(parents=True)
    for i in range(6):
        Image.fromarray(np.full((12, 12), 40 * i, np.uint8)).save(folder / "cats" / f"{i}.png")
    result = invoke("train", "--data", folder, "--out", tmp_path / "run", *TINY)
    assert_user_error(result, str(folder), "'cats'", "at least two")
    assert not (tmp_path / "run").exists()
