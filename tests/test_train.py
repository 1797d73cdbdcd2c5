"""The training loop, checkpoints, augmentation and evaluation (tiny networks, seconds each)."""
import dataclasses
import io
import json
import os
import threading
import time
from contextlib import closing

import numpy as np
import pytest
from PIL import Image

from minicaps import CapsNetConfig
from minicaps.cli import main as cli
from minicaps.cli.train import epoch_line
from minicaps.training import checkpoint, loop as train
from minicaps.training.epochs import made_ahead
from minicaps.training.augment import (RECOMPRESS_QUALITY, augment, blur, flip, jitter,
                                      recompress, rotate, shift, swap_backgrounds, zoom)
from minicaps.data import Dataset, load_dataset
from minicaps.errors import MinicapsError
from minicaps.training.evaluate import evaluate
from minicaps.nets.capsnet import CapsNet

TINY = dict(conv_channels=8, primary_types=4, primary_dim=4, class_dim=8, kernel_size=5,
            batch_size=16)


def synthetic(n_train=48, n_test=24, seed=0):
    """Three classes of 12x12 images: a bright bar in the top, middle or bottom rows."""
    rng = np.random.default_rng(seed)

    def make(n):
        y = np.arange(n) % 3
        x = rng.integers(0, 40, (n, 1, 12, 12)).astype(np.uint8)
        for i, c in enumerate(y):
            x[i, 0, 4 * c:4 * c + 3, 2:10] = 250
        return x, y.astype(np.int64)
    (tx, ty), (vx, vy) = make(n_train), make(n_test)
    return Dataset(name="bars", classes=["top", "middle", "bottom"], train_x=tx, train_y=ty,
                   test_x=vx, test_y=vy)


def synthetic_logos():
    """synthetic() as logo corners: the bottom bar removed to make the class nologo, and
    each top or middle bar's box, for the background swap."""
    ds = synthetic()
    for x, y in ((ds.train_x, ds.train_y), (ds.test_x, ds.test_y)):
        x[y == 2, :, 8:11] = 20
    box = np.array([(4 * c, 2, 4 * c + 3, 10) if c < 2 else (-1,) * 4 for c in ds.train_y])
    return dataclasses.replace(ds, classes=["top", "middle", "nologo"], train_box=box)


def tiny_config(out, **kw):
    return train.TrainConfig(out=str(out), data="synthetic", **{**TINY, **kw})


# augmentation

def test_shift_moves_content_and_pads_with_zeros():
    x = np.arange(2 * 1 * 5 * 5, dtype=np.uint8).reshape(2, 1, 5, 5) + 1
    out = shift(x, 2, np.random.default_rng(0))
    for b in range(2):  # the shifted image is a window of the zero-padded one
        padded = np.pad(x[b, 0], 2)
        assert any(np.array_equal(out[b, 0], padded[i:i + 5, j:j + 5])
                   for i in range(5) for j in range(5))
    assert out.dtype == np.uint8


def test_augment_is_seeded_and_flip_rotate_behave():
    x = np.random.default_rng(1).integers(0, 255, (8, 3, 9, 7)).astype(np.uint8)
    a = augment(x, np.random.default_rng(5), max_shift=2, hflip=True, max_degrees=10)
    b = augment(x, np.random.default_rng(5), max_shift=2, hflip=True, max_degrees=10)
    assert np.array_equal(a, b) and a.shape == x.shape and a.dtype == np.uint8
    assert np.array_equal(rotate(x, 0.0, np.random.default_rng(0)), x)
    f = flip(x, np.random.default_rng(0))
    assert all(np.array_equal(f[i], x[i]) or np.array_equal(f[i], x[i, :, :, ::-1])
               for i in range(8))
    square = np.zeros((1, 1, 9, 9), np.uint8)
    square[0, 0, 4, 4] = 9  # the centre pixel stays put under any rotation
    assert rotate(square, 45, np.random.default_rng(0))[0, 0, 4, 4] == 9


@pytest.mark.parametrize("channels, scale", [(1, 1.0), (3, 1.0), (3, 0.5), (2, 0.5)])
def test_recompress_writes_the_chosen_images_as_jpeg_at_the_frames_scale(channels, scale):
    yy, xx = np.mgrid[:24, :40]
    picture = np.stack([(2 * xx + 3 * yy + 50 * c) % 200 for c in range(channels)])
    picture[channels - 1, 8:16, 10:30] = 250  # a bar in one colour: an edge to ring and bleed
    x = np.stack([picture] * 6).astype(np.uint8)
    out = recompress(x, 0.5, np.random.default_rng(2), scale)
    draws = np.random.default_rng(2)
    chosen, quality = draws.random(6) < 0.5, draws.integers(*RECOMPRESS_QUALITY, size=6)
    assert 0 < chosen.sum() < 6 and out.dtype == np.uint8 and out.shape == x.shape
    for b in range(6):
        if not chosen[b]:
            assert np.array_equal(out[b], x[b])
            continue
        # Pillow's own round trip, written out: enlarged to the frame's scale by repeating
        # pixels, JPEG at the drawn quality, shrunk back by averaging; RGB as one image.
        images = ([Image.fromarray(picture.transpose(1, 2, 0).astype(np.uint8))]
                  if channels == 3 else [Image.fromarray(c.astype(np.uint8)) for c in picture])
        expected = []
        for image in images:
            buffer = io.BytesIO()
            image.resize((int(40 / scale), int(24 / scale)), Image.NEAREST).save(
                buffer, format="JPEG", quality=int(quality[b]))
            decoded = np.asarray(Image.open(buffer).resize((40, 24), Image.BOX))
            expected.append(decoded.transpose(2, 0, 1) if decoded.ndim == 3 else decoded[None])
        assert np.array_equal(out[b], np.concatenate(expected))
        assert 0.5 < np.abs(out[b].astype(int) - x[b]).mean() < 20  # the same picture, lossy
    assert np.array_equal(recompress(x, 0.0, np.random.default_rng(0)), x)


def test_zoom_jitter_blur_keep_uint8_and_do_what_they_say():
    x = np.random.default_rng(1).integers(0, 255, (6, 3, 10, 14)).astype(np.uint8)
    rng = np.random.default_rng(0)
    for out in (zoom(x, 0.2, rng), jitter(x, 0.3, rng), blur(x, 0.5, rng)):
        assert out.shape == x.shape and out.dtype == np.uint8
    assert np.array_equal(zoom(x, 0.0, rng), x)  # factor 1: bilinear at the pixels themselves
    assert np.array_equal(jitter(x, 0.0, rng), x)
    assert np.array_equal(blur(x, 0.0, rng), x) and np.array_equal(blur(x, 1.0, rng), blur(x, 1.0, rng))
    flat = np.full((2, 3, 5, 5), 77, np.uint8)  # a constant image stays constant when blurred
    assert np.array_equal(blur(flat, 1.0, rng), flat)
    big = zoom(np.pad(np.full((1, 1, 3, 3), 200, np.uint8), ((0, 0), (0, 0), (4, 4), (4, 4))),
               1.0, np.random.default_rng(3))  # the centre pixel stays put under any zoom
    assert big[0, 0, 5, 5] == 200
    bright = jitter(np.full((50, 3, 4, 4), 128, np.uint8), 0.3, np.random.default_rng(0))
    assert bright.min() >= (128 - 0.3 * 128) * 0.85 - 1 and bright.std() > 5  # images differ
    kw = dict(max_shift=2, max_scale=0.1, colour=0.2, blur_p=0.3, recompress_p=0.3)
    assert np.array_equal(augment(x, np.random.default_rng(4), **kw),
                          augment(x, np.random.default_rng(4), **kw))


def test_background_swap_moves_logo_boxes_onto_other_photographs():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 100, (10, 3, 8, 12)).astype(np.uint8)  # 0-3 show a logo, 4-9 none
    images = np.concatenate([x, rng.integers(150, 255, (6, 3, 8, 12)).astype(np.uint8)])
    empty = np.arange(10, 16)  # the logo-free images drawn from: brighter than any of x
    box = np.full((10, 4), -1)
    box[:4] = (2, 3, 5, 7)
    inside = np.zeros((8, 12), bool)
    inside[2:5, 3:7] = True

    def matches_a_background(image, where):
        return any(np.array_equal(image[:, where], images[e][:, where]) for e in empty)
    out = swap_backgrounds(x, box, images, empty, box[:4], 1.0, np.random.default_rng(0))
    assert out.dtype == np.uint8 and out.shape == x.shape
    for b in range(4):  # the logo box kept, everything around it from a logo-free image
        assert np.array_equal(out[b][:, inside], x[b][:, inside])
        assert matches_a_background(out[b], ~inside)
    for b in range(4, 10):  # outside the pasted box nothing changed; inside, a background
        assert np.array_equal(out[b][:, ~inside], x[b][:, ~inside])
        assert matches_a_background(out[b], inside)
    assert np.array_equal(swap_backgrounds(x, box, images, empty, box[:4], 0.0,
                                           np.random.default_rng(0)), x)
    again = swap_backgrounds(x, box, images, empty, box[:4], 1.0, np.random.default_rng(0))
    assert np.array_equal(again, out)


def test_background_swap_needs_logo_boxes(tmp_path):
    with pytest.raises(MinicapsError, match="background-swap"):
        train.run(tiny_config(tmp_path, epochs=1, background_swap=0.5), dataset=synthetic())


# evaluation

def test_evaluate_scores_frames():
    ds = synthetic()
    net = CapsNet(in_shape=(1, 12, 12), n_classes=3, conv_channels=4, kernel_size=3,
                  primary_types=2, primary_dim=4, class_dim=4)
    frame = np.arange(len(ds.test_y)) // 4
    frame_y = np.full(frame.max() + 1, 2)
    ev = evaluate(net, ds.test_x, ds.test_y, frame=frame, frame_y=frame_y,
                  classes=["a", "b", "nologo"])
    assert len(ev.frame_y) == frame.max() + 1 and 0 <= ev.frame_accuracy <= 1
    assert ev.confusion(3).sum() == len(ds.test_y)


def test_training_without_a_nologo_capsule_and_with_calibrated_transforms(tmp_path):
    ds = synthetic()
    ds.classes = ["top", "middle", "nologo"]  # the last class gets no capsule
    ds.train_frame, ds.test_frame = np.arange(48), np.arange(24)
    ds.train_frame_y, ds.test_frame_y = ds.train_y.copy(), ds.test_y.copy()
    config = tiny_config(tmp_path, epochs=1, nologo_capsule=False, init_length=0.5,
                         nologo_ratio=1.0, reconstruction=False)
    history = train.run(config, dataset=ds)
    ckpt = checkpoint.load(tmp_path / "best.npz")
    assert ckpt.model_config.n_classes == 2 and ckpt.classes == ds.classes
    assert history[0]["test_frame_accuracy"] is not None
    net = CapsNet.from_config(ckpt.model_config, ckpt.params)
    fresh = CapsNet.from_config(ckpt.model_config, seed=0)
    train.calibrate_transforms(fresh, ds.train_x[:32], 0.5)
    assert 0.4 < np.median(fresh.predict(ds.train_x[:32])) < 0.6
    assert evaluate(net, ds.test_x, ds.test_y, classes=ds.classes).lengths.shape == (24, 3)


def test_training_records_where_each_channel_was_seen_and_scores_frames_by_it(tmp_path,
                                                                              monkeypatch):
    ds = synthetic()  # example i shows class i % 3: frames of three corners, each its own
    ds.classes = ["top", "middle", "nologo"]
    ds.train_frame, ds.test_frame = np.arange(48) // 3, np.arange(24) // 3
    ds.train_frame_y, ds.test_frame_y = np.zeros(16, np.int64), np.zeros(8, np.int64)
    given, scored = [], train.evaluate

    def spy(*args, **kwargs):
        given.append(kwargs.get("seen"))
        return scored(*args, **kwargs)
    monkeypatch.setattr(train, "evaluate", spy)
    _run(tmp_path, 1, ds)
    info = checkpoint.load(tmp_path / "last.npz").data_info
    assert info["logo_corners"] == {"tl": ["top"], "tr": ["middle"], "bl": []}
    mask = [[True, False, True], [False, True, True], [False, False, True]]
    assert len(given) == 2 and all(m.tolist() == mask for m in given)  # validation, test
    # a run resumed keeps the rule it started with: one from before the corners were
    # recorded (none in its data info) goes on deciding in any corner
    ckpt = checkpoint.load(tmp_path / "last.npz")
    del ckpt.data_info["logo_corners"]
    checkpoint.save(tmp_path / "last.npz", ckpt)
    given.clear()
    train.resume(tmp_path, epochs=2, dataset=ds)
    assert checkpoint.load(tmp_path / "last.npz").data_info["logo_corners"] is None
    assert given == [None, None]
    # a channel no training frame shows in a corner can never be decided: said at the start
    ds.train_y[ds.train_y == 1] = 2
    with pytest.warns(UserWarning, match="logo of middle in a corner crop"):
        _run(tmp_path / "unseen", 1, ds)


def test_validation_split_is_seeded_disjoint_and_keeps_frames_together():
    ds = synthetic(n_train=60)
    ds.train_frame = np.arange(60) // 4
    ds.train_frame_y = ds.train_y[::4].copy()
    tr, val, _ = train.split_validation(ds, 0.2, seed=3)
    tr2, val2, _ = train.split_validation(ds, 0.2, seed=3)
    assert np.array_equal(val.x, val2.x)
    assert not set(tr.frame) & set(val.frame)
    assert len(tr.y) + len(val.y) == 60 and len(val.y) % 4 == 0 and len(val.y) > 0


# checkpoints

def _run(out, epochs, dataset=None, **kw):
    return train.run(tiny_config(out, epochs=epochs, **kw), dataset=dataset or synthetic())


def test_checkpoint_round_trip(tmp_path):
    _run(tmp_path, 1)
    ckpt = checkpoint.load(tmp_path / "last.npz")
    assert ckpt.epoch == 1 and ckpt.classes == ["top", "middle", "bottom"]
    assert ckpt.model_config.conv_channels == 8 and ckpt.model_config.in_shape == (1, 12, 12)
    assert train.TrainConfig.from_json(ckpt.train_config) == tiny_config(tmp_path, epochs=1)
    assert len(ckpt.history) == 1 and int(ckpt.optimizer["step"]) == 3
    checkpoint.save(tmp_path / "copy.npz", ckpt)
    again = checkpoint.load(tmp_path / "copy.npz")
    assert again.rng_state == ckpt.rng_state and again.model_config == ckpt.model_config
    for name, p in ckpt.params.items():
        assert p.dtype == np.float32 and np.array_equal(again.params[name], p)
    with np.load(tmp_path / "last.npz", allow_pickle=False) as f:  # plain arrays only
        assert str(f["format"][()]) == checkpoint.FORMAT
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["epoch"] == 1
    assert (tmp_path / "best.npz").is_file()


@pytest.mark.parametrize("score, best_epoch", [(lambda h: 1.0, 3), (lambda h: -len(h), 1)],
                         ids=["tie", "falling"])
def test_best_checkpoint_keeps_the_later_epoch_of_a_tie(tmp_path, monkeypatch, score,
                                                         best_epoch):
    monkeypatch.setattr(train.frames, "selection_score", score)
    _run(tmp_path, 3)
    assert checkpoint.load(tmp_path / "best.npz").epoch == best_epoch


def test_each_epochs_frame_threshold_comes_from_the_last_three_curves(tmp_path):
    ds = synthetic()
    ds.classes = ["top", "middle", "nologo"]
    ds.train_frame, ds.test_frame = np.arange(48), np.arange(24)
    ds.train_frame_y, ds.test_frame_y = ds.train_y.copy(), ds.test_y.copy()
    history = _run(tmp_path, 4, ds, test_every=0)
    curves = [r["val_frame_curve"] for r in history]
    assert all(len(c) == len(train.frames.THRESHOLDS) for c in curves)
    for n, record in enumerate(history):
        window = curves[max(n - train.frames.SELECTION_EPOCHS + 1, 0):n + 1]
        assert record["frame_threshold"] == train.frames.best_threshold(window,
                                                                        record["val_frames"])
    assert "test_frame_accuracy" not in history[0] and "test_frame_accuracy" in history[-1]
    line = epoch_line(history[0], 4)  # an epoch without a test score
    assert "val " in line and line.count("test -") == 2 and "frames: val" in line


@pytest.mark.parametrize("every, scored", [(1, [1, 2, 3, 4, 5]), (2, [2, 4, 5]), (0, [5])])
def test_the_test_split_is_scored_every_test_every_epochs_and_after_the_last(
        tmp_path, every, scored):
    history = _run(tmp_path, 5, test_every=every)
    assert [r["epoch"] for r in history if r["test_accuracy"] is not None] == scored
    assert all(r["val_accuracy"] is not None for r in history)


@pytest.mark.parametrize("make, swap, average", [(synthetic, 0.0, 0.0),
                                                  (synthetic_logos, 0.5, 1.0)])
def test_resume_ends_bitwise_equal_to_an_uninterrupted_run(tmp_path, make, swap, average):
    kw = dict(shift=2, flip=True, rotate=10, optimizer="adam", background_swap=swap,
              average_epochs=average)
    _run(tmp_path / "straight", 2, make(), **kw)
    _run(tmp_path / "split", 1, make(), **kw)
    history = train.resume(tmp_path / "split", epochs=2, dataset=make())
    assert [r["epoch"] for r in history] == [1, 2]
    a = checkpoint.load(tmp_path / "straight" / "last.npz")
    b = checkpoint.load(tmp_path / "split" / "last.npz")
    assert a.epoch == b.epoch == 2 and a.rng_state == b.rng_state
    for name in a.params:
        assert np.array_equal(a.params[name], b.params[name]), name
    for key in a.optimizer:
        assert np.array_equal(a.optimizer[key], b.optimizer[key]), key
    lines = (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]


def test_a_weight_average_is_what_is_scored_and_evaluated(tmp_path, monkeypatch):
    """With --average-epochs the scores (and so best.npz) are the averaged network's, and a
    checkpoint's scored_params (what evaluate and predict load) are those weights; training's
    own weights (params, for resuming) stay apart and equal a run without the average."""
    scored, split_scores = [], train._split_scores

    def spy(net, *args, **kwargs):
        scored.append({n: p.copy() for n, p in net.params.items()})
        return split_scores(net, *args, **kwargs)
    monkeypatch.setattr(train, "_split_scores", spy)
    _run(tmp_path / "avg", 2, average_epochs=1.0)
    ckpt = checkpoint.load(tmp_path / "avg" / "last.npz")
    loaded = cli._load_net(tmp_path / "avg" / "last.npz", gpu=False)[1]  # evaluate's, predict's
    for n in ckpt.params:
        assert np.array_equal(scored[-1][n], ckpt.scored_params[n]), n
        assert np.array_equal(loaded.params[n], ckpt.scored_params[n]), n
        assert not np.array_equal(ckpt.scored_params[n], ckpt.params[n]), n
    _run(tmp_path / "plain", 2)
    plain = checkpoint.load(tmp_path / "plain" / "last.npz")
    for n in plain.params:  # the average never feeds back into training
        assert np.array_equal(plain.params[n], ckpt.params[n]), n
        assert np.array_equal(scored[-1][n], plain.params[n]), n
    assert plain.scored_params is plain.params
    partial = dict(ckpt.optimizer)
    del partial["average.conv1.w"]
    checkpoint.save(tmp_path / "partial.npz", dataclasses.replace(ckpt, optimizer=partial))
    with pytest.raises(MinicapsError, match="weight average does not match"):
        checkpoint.load(tmp_path / "partial.npz")
    checkpoint.save(tmp_path / "avg" / "last.npz", dataclasses.replace(plain, train_config={
        **plain.train_config, "average_epochs": 1.0, "out": str(tmp_path / "avg")}))
    with pytest.raises(MinicapsError, match="optimizer state lacks"):
        train.resume(tmp_path / "avg", epochs=3, dataset=synthetic())


def test_a_failed_write_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    _run(tmp_path, 1)
    before = checkpoint.load(tmp_path / "last.npz")

    def crash(*args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(OSError):
        train.resume(tmp_path, epochs=2, dataset=synthetic())
    after = checkpoint.load(tmp_path / "last.npz")
    assert after.epoch == 1
    assert all(np.array_equal(before.params[n], after.params[n]) for n in before.params)
    assert sorted(os.listdir(tmp_path)) == ["best.npz", "last.npz", "metrics.jsonl"]


def test_truncated_or_foreign_checkpoints_are_user_errors(tmp_path):
    _run(tmp_path, 1)
    data = (tmp_path / "last.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[:len(data) // 2])
    (tmp_path / "flipped.npz").write_bytes(data[:2000] + bytes(b ^ 0xFF for b in data[2000:2400])
                                           + data[2400:])
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    (tmp_path / "text.npz").write_text("hello")
    for name in ("cut.npz", "flipped.npz", "other.npz", "text.npz", "missing.npz"):
        with pytest.raises(MinicapsError, match=name):
            checkpoint.load(tmp_path / name)


def test_a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    _run(tmp_path, 1)
    good = checkpoint.load(tmp_path / "last.npz")
    real = CapsNet.loss_and_grads

    def poisoned(self, x, y, **kw):
        loss, grads, parts = real(self, x, y, **kw)
        return loss * np.float32("nan"), grads, parts
    monkeypatch.setattr(CapsNet, "loss_and_grads", poisoned)
    with pytest.raises(MinicapsError, match="nan"):
        train.resume(tmp_path, epochs=2, dataset=synthetic())
    kept = checkpoint.load(tmp_path / "last.npz")
    assert kept.epoch == 1
    assert all(np.array_equal(good.params[n], kept.params[n]) for n in good.params)


def test_refuses_to_overwrite_a_run(tmp_path):
    _run(tmp_path, 1)
    with pytest.raises(MinicapsError, match="--resume"):
        _run(tmp_path, 1)


def test_a_short_run_on_real_images_beats_chance(tmp_path):
    ds = load_dataset(limit=1000)  # the bundled MNIST sample: 1,000 train / 1,000 test images
    config = train.TrainConfig(out=str(tmp_path), epochs=3, conv_channels=16, primary_types=4,
                               kernel_size=9, batch_size=32, lr=3e-3)
    history = train.run(config, dataset=ds)
    assert history[-1]["test_accuracy"] > 0.7, history  # chance: 0.1; typically ~0.88


def test_balanced_epochs_draw_every_class_equally():
    y = np.array([0] * 90 + [1] * 10)
    order = train.epoch_order(y, np.random.default_rng(0), balance=True)
    assert len(order) == 100 and 0.35 < np.mean(y[order] == 1) < 0.65
    assert sorted(train.epoch_order(y, np.random.default_rng(0))) == list(range(100))


def test_nologo_ratio_keeps_every_logo_and_subsamples_nologo():
    y = np.array([3] * 60 + [0] * 10 + [1] * 5)  # class 3 is nologo
    rng = np.random.default_rng(0)
    a, b = (train.epoch_order(y, rng, nologo=3, nologo_ratio=2.0) for _ in range(2))
    assert len(a) == train.epoch_size(y, 3, 2.0) == 45 and len(set(a.tolist())) == 45
    assert sorted(a[y[a] != 3].tolist()) == list(range(60, 75))  # every logo once
    assert np.sum(y[a] == 3) == 30 and set(a.tolist()) != set(b.tolist())  # fresh nologo draws
    assert train.epoch_size(y, 3, 100.0) == 75  # never more than there are


def test_batches_made_ahead_come_in_order_one_at_a_time_with_a_plain_loops_draws():
    busy, overlaps, threads, made = threading.Lock(), [], set(), []

    def make(rng):
        def one(i):
            if not busy.acquire(blocking=False):
                overlaps.append(i)  # two being made at once: draws would interleave
                busy.acquire()
            threads.add(threading.get_ident())
            made.append(i)
            time.sleep(0.002)
            busy.release()
            return i, rng.random(3)
        return one

    ahead_rng, plain_rng = np.random.default_rng(5), np.random.default_rng(5)
    ahead = list(made_ahead(make(ahead_rng), 6))
    makers, made_count = set(threads), len(made)
    one_by_one = make(plain_rng)
    plain = [one_by_one(i) for i in range(6)]
    assert [i for i, _ in ahead] == list(range(6)) and not overlaps and made_count == 6
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(ahead, plain))
    assert ahead_rng.random() == plain_rng.random()  # no draw beyond the last batch
    assert threading.get_ident() not in makers  # made beside the caller, not by it
    assert list(made_ahead(make(ahead_rng), 0)) == []

    # stopped early (a step failed): the batch being made is waited for, and is the only extra
    del made[:]
    with closing(made_ahead(make(ahead_rng), 6)) as batches:
        for i, _ in batches:
            if i == 1:
                break
    assert made == [0, 1, 2] and not busy.locked()

    def failing(i):
        if i == 2:
            raise MinicapsError("bad batch")
        return i
    with pytest.raises(MinicapsError, match="bad batch"):
        list(made_ahead(failing, 4))


# the CNN baseline

def test_the_cnn_baseline_trains_resumes_and_round_trips(tmp_path):
    kw = dict(model="cnn", cnn_channels=(8, 8), cnn_kernel_size=3, cnn_hidden=(16,),
              standardize=True, lr=1e-2)
    history = _run(tmp_path / "straight", 4, **kw)
    assert history[-1]["test_accuracy"] > 0.8, history  # chance: 1/3; bars are easy
    ckpt = checkpoint.load(tmp_path / "straight" / "last.npz")
    assert ckpt.model_config.channels == (8, 8) and ckpt.model_config.input_mean is not None
    assert train.TrainConfig.from_json(ckpt.train_config).cnn_hidden == (16,)
    _run(tmp_path / "split", 2, **kw)
    train.resume(tmp_path / "split", epochs=4, dataset=synthetic())
    again = checkpoint.load(tmp_path / "split" / "last.npz")
    for name in ckpt.params:
        assert np.array_equal(ckpt.params[name], again.params[name]), name


def test_capsule_only_options_are_refused_for_the_cnn(tmp_path):
    with pytest.raises(MinicapsError, match="init-length"):
        _run(tmp_path, 1, model="cnn", init_length=0.3)


def _as_written_before(path, old, version, conv_weights):
    """Rewrite checkpoint `path` as `old` as version `version` (1 or 2) wrote it: conv
    weights and their optimizer arrays out-first, and (version 1) no model_kind."""
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files if version > 1 or k != "model_kind"}
    for key in arrays:
        name = key.partition("/")[2]  # "conv1.w", or an optimizer's "m.conv1.w"
        if name in conv_weights or name.partition(".")[2] in conv_weights:
            arrays[key] = np.moveaxis(arrays[key], -1, 0)
    arrays["format"] = np.array(f"minicaps-checkpoint-{version}")
    np.savez(old, **arrays)


def test_a_checkpoint_without_a_model_kind_is_a_capsnet(tmp_path):
    """Checkpoints written before the CNN existed hold no model_kind."""
    _run(tmp_path, 1)
    _as_written_before(tmp_path / "last.npz", tmp_path / "old.npz", 1,
                       CapsNetConfig.conv_weight_names())
    assert checkpoint.load(tmp_path / "old.npz").model_config.conv_channels == 8


@pytest.mark.parametrize("model", ["capsnet", "cnn"])
def test_checkpoints_with_conv_weights_out_first_are_read_in_todays_layout(tmp_path, model):
    """Formats 1 and 2 held conv weights (out, in, kh, kw): reading moves them, their Adam
    moments and their weight average into (in, kh, kw, out), and nothing else."""
    _run(tmp_path, 2, model=model, average_epochs=1.0)
    today = checkpoint.load(tmp_path / "last.npz")
    names = today.model_config.conv_weight_names()
    assert len(names) >= 2 and all(today.params[n].ndim == 4 for n in names)
    _as_written_before(tmp_path / "last.npz", tmp_path / "old.npz", 2, names)
    with np.load(tmp_path / "old.npz") as f:  # the rewrite did move them
        assert all(f[f"params/{n}"].shape != today.params[n].shape for n in names)
    old = checkpoint.load(tmp_path / "old.npz")
    for mine, theirs in [(today.params, old.params), (today.optimizer, old.optimizer)]:
        assert set(mine) == set(theirs)
        for key in mine:
            assert np.array_equal(mine[key], theirs[key]), key
            assert np.asarray(theirs[key]).flags.c_contiguous, key
    assert {k.partition(".")[0] for k in old.optimizer} >= {"m", "v", "average"}


def test_padding_puts_images_in_a_larger_canvas(tmp_path):
    ds = synthetic().padded(3)
    assert ds.in_shape == (1, 18, 18) and (ds.train_x[:, :, :3] == 0).all()
    np.testing.assert_array_equal(ds.test_x[:, :, 3:-3, 3:-3], synthetic().test_x)
