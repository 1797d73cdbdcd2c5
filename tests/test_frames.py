"""The logo challenge's rules (minicaps/training/frames.py): the frame decision, its
threshold, networks without a nologo capsule, and which epoch is kept."""
import numpy as np
import pytest

from minicaps.errors import MinicapsError
from minicaps.training.frames import (
    BALANCED_THRESHOLD, PRESENT, SELECTION_EPOCHS, THRESHOLDS, best_threshold, capsule_count,
    frame_accuracy, frame_decision, kept_as_best, logo_corners, names_fit, only_where_seen,
    seen_mask, selection_score, strongest_channels, threshold_curve, validation_frame_scores,
    with_nologo,
)


def test_a_frame_shows_the_channel_longest_over_its_corners():
    nologo = 2
    lengths = np.array([[0.1, 0.2, 0.9],   # frame 0: nologo
                        [0.6, 0.1, 0.2],   # frame 0: class 0 at 0.6
                        [0.1, 0.8, 0.3],   # frame 0: class 1 at 0.8 -> wins
                        [0.1, 0.1, 0.9],   # frame 1: every corner nologo
                        [0.2, 0.1, 0.7],
                        [0.7, 0.1, 0.2]])  # frame 2: class 0
    frame = np.array([0, 0, 0, 1, 1, 2])
    ids, pred = frame_decision(lengths, frame, nologo)
    assert dict(zip(ids.tolist(), pred.tolist())) == {0: 1, 1: 2, 2: 0}


def test_frame_decision_threshold_and_the_nologo_column():
    lengths = np.array([[0.45, 0.2, 0.1], [0.1, 0.3, 0.9]])  # two frames, one corner each
    assert frame_decision(lengths, np.array([0, 1]), 2)[1].tolist() == [2, 2]  # at 0.5
    assert frame_decision(lengths, np.array([0, 1]), 2, threshold=0.4)[1].tolist() == [0, 2]
    # the nologo capsule takes no part: frame 1's channel 1 counts above the threshold
    assert frame_decision(lengths, np.array([0, 1]), 2, threshold=0.25)[1].tolist() == [0, 1]
    padded = with_nologo(lengths[:, :2], 3)  # a net without a nologo capsule
    assert padded.shape == (2, 3) and np.all(padded[:, 2] == PRESENT)
    assert padded.argmax(axis=1).tolist() == [2, 2]  # no capsule longer than 0.5: nologo
    assert with_nologo(lengths, 3) is lengths


def three_frames(copies=10):
    """Corner lengths of `copies` times three one-corner frames (a faint logo, none, a clear
    one), frame ids and their classes (nologo: 2): all right at 0.25 and 0.3 only."""
    lengths = np.array([[0.3, 0.1, 0.9], [0.1, 0.2, 0.9], [0.1, 0.7, 0.1]])
    return np.tile(lengths, (copies, 1)), np.arange(3 * copies), np.tile([0, 2, 1], copies)


def test_the_frame_threshold_is_the_best_one_on_the_frames_given():
    lengths, frame, frame_y = three_frames()
    t = best_threshold([threshold_curve(lengths, frame, frame_y, nologo=2)], len(frame))
    assert t == 0.3 and frame_accuracy(lengths, frame, frame_y, 2, t) == 1.0
    assert frame_accuracy(lengths, frame, frame_y, 2) == pytest.approx(2 / 3)  # at 0.5


def test_thresholds_within_a_frame_of_the_best_are_one_and_the_balanced_is_taken():
    flat = [0.9] * len(THRESHOLDS)
    assert best_threshold([flat], 200) == BALANCED_THRESHOLD
    at = THRESHOLDS.index
    ahead = list(flat)
    ahead[at(0.45)] = ahead[at(0.2)] = 0.9 + 1 / 200  # a frame ahead: noise
    assert best_threshold([ahead], 200) == BALANCED_THRESHOLD
    ahead[at(0.45)] = 0.9 + 2 / 200  # two frames ahead
    assert best_threshold([ahead], 200) == 0.45
    one_side = [0.9 if t <= 0.3 or t == 0.4 else 0.8 for t in THRESHOLDS]
    assert best_threshold([one_side], 200) == 0.4  # of 0.3 and 0.4, as near: the higher


def kept(run):
    """Which epochs of `run` (metrics records) kept_as_best keeps, epoch by epoch."""
    return [kept_as_best(run[:n + 1]) for n in range(len(run))]


def test_best_checkpoint_is_the_last_epoch_within_one_validation_frame_of_the_best():
    """Validation frames nearly all right move by a frame either way: a later epoch that
    falls no more than a frame under the best mean is kept, one that falls more is not."""
    def epoch(frames_right):
        return {"val_frame_accuracy": frames_right / 200, "val_accuracy": 0.98, "val_frames": 200}
    right = (190, 199, 199, 199, 198, 198, 198, 196)  # means of 3 from epoch 4: 199 198.7
    assert kept([epoch(f) for f in right]) == [True] * 7 + [False]  # 198.3 198 197.3
    plain = [{"val_accuracy": a} for a in (0.8, 0.9, 0.9, 0.89)]  # other data: the best
    assert kept(plain) == [True, True, True, False]  # ties: the later
    assert not kept_as_best([{"val_accuracy": None}])
    assert selection_score([{"val_accuracy": None}]) is None


def test_best_checkpoint_is_chosen_by_the_frames_of_the_last_epochs():
    """One epoch well ahead of a stretch of good ones is not chosen over the stretch's end
    (a one-epoch rule kept a run's epoch 29, 1.25-1.5 points of test frames behind epochs 35-40)."""
    def epoch(frames_right):
        return {"val_frame_accuracy": frames_right / 240, "val_accuracy": 0.98, "val_frames": 240}
    lucky = [epoch(f) for f in (230, 238, 228, 233, 234, 234)]  # alone, 238 is 4 frames ahead
    assert kept(lucky) == [True, True, False, True, False, True]  # means 234 232 233 231.7 233.7
    assert selection_score(lucky[:2]) == selection_score([epoch(230), epoch(238)])  # at the start
    assert selection_score(lucky) == pytest.approx(701 / 720)
    plain = [{"val_accuracy": 0.9}, {"val_accuracy": 0.8}]  # other data: the epoch's own
    assert selection_score(plain) == 0.8


def test_the_strongest_channel_names_its_corner_and_length():
    lengths = np.array([[0.1, 0.2, 0.9], [0.6, 0.1, 0.2], [0.1, 0.8, 0.3],  # frame 0
                        [0.3, 0.1, 0.9]])  # frame 1: the nologo capsule is never the answer
    ids, corner, channel, top = strongest_channels(lengths, np.array([0, 0, 0, 1]), 2)
    assert ids.tolist() == [0, 1] and corner.tolist() == [2, 3]
    assert channel.tolist() == [1, 0] and top.tolist() == [0.8, 0.3]


def test_validation_scores_choose_the_threshold_and_need_a_nologo_class():
    lengths, frame, frame_y = three_frames()
    scores = validation_frame_scores(lengths, frame, frame_y, ["a", "b", "nologo"])
    curve = threshold_curve(lengths, frame, frame_y, 2)
    assert scores == {"frame_threshold": 0.3, "val_frame_accuracy": 1.0, "val_frames": 30,
                      "val_frame_curve": curve}
    with pytest.raises(MinicapsError, match="nologo"):
        validation_frame_scores(lengths, frame, frame_y, ["a", "b", "c"])


def test_the_threshold_is_chosen_on_the_curves_of_the_selection_epochs():
    """An epoch whose own curve peaks elsewhere keeps the line its window of epochs agrees
    on; epochs before the window take no part."""
    lengths, frame, frame_y = three_frames()  # right from 0.25 to 0.3
    own = threshold_curve(lengths, frame, frame_y, 2)
    at = THRESHOLDS.index
    assert own[at(0.3)] == 1.0 and own[at(0.35)] < 1.0
    higher = [1.0 if 0.3 < t <= 0.45 else 0.7 for t in THRESHOLDS]  # earlier epochs
    classes = ["a", "b", "nologo"]
    alone = validation_frame_scores(lengths, frame, frame_y, classes)
    assert alone["frame_threshold"] == 0.3
    pooled = validation_frame_scores(lengths, frame, frame_y, classes,
                                     [higher] * (SELECTION_EPOCHS - 1))
    assert pooled["frame_threshold"] == 0.35  # a mean of 0.889 at 0.35-0.45, 0.8 at 0.3
    assert pooled["val_frame_accuracy"] == own[at(0.35)] and pooled["val_frame_curve"] == own
    lower = [1.0 if t <= 0.3 else 0.0 for t in THRESHOLDS]  # one epoch more would pull to 0.3
    older = [lower] + [higher] * (SELECTION_EPOCHS - 1)  # outside the window: no part
    assert validation_frame_scores(lengths, frame, frame_y, classes,
                                   older)["frame_threshold"] == 0.35


def test_a_net_without_a_nologo_capsule_has_one_capsule_fewer():
    assert capsule_count(["a", "b", "nologo"]) == 3
    assert capsule_count(["a", "b", "nologo"], nologo_capsule=False) == 2
    assert capsule_count(["a", "b"], nologo_capsule=False) == 2  # no nologo class: no change
    with pytest.raises(MinicapsError, match="last class"):
        capsule_count(["nologo", "a"], nologo_capsule=False)
    assert names_fit(["a", "b", "nologo"], 3) and names_fit(["a", "b", "nologo"], 2)
    assert not names_fit(["a", "b", "c"], 2) and not names_fit(["a", "b"], 3)


def test_a_channel_is_decided_only_in_the_corners_training_showed_it_in():
    classes = ["a", "b", "nologo"]
    corners = ("tl", "tr")
    # three training frames, two corners each: a at tl twice, b at tr once
    y, frame = np.array([0, 2, 2, 1, 0, 2]), np.array([0, 0, 1, 1, 2, 2])
    seen = logo_corners(y, frame, corners, classes)
    assert seen == {"tl": ["a"], "tr": ["b"]}
    assert logo_corners(y, np.arange(6), corners, classes) is None  # one example a frame
    info = {"crop": {"corners": list(corners)}, "logo_corners": seen}
    mask = seen_mask(info, classes)
    assert mask.tolist() == [[True, False, True], [False, True, True]]
    assert seen_mask({"crop": {"corners": list(corners)}}, classes) is None  # older checkpoint
    lengths = np.array([[0.1, 0.6, 0.4],   # frame 0, tl: a title b's capsule takes for b
                        [0.1, 0.2, 0.9],   # frame 0, tr: nothing
                        [0.4, 0.1, 0.5],   # frame 1, tl: a's logo, faint
                        [0.7, 0.1, 0.3]])  # frame 1, tr: a title a's capsule takes for a
    at = np.array([0, 0, 1, 1])
    assert frame_decision(lengths, at, 2, 0.35)[1].tolist() == [1, 0]  # any corner
    assert strongest_channels(lengths, at, 2)[1].tolist() == [0, 3]
    decided = only_where_seen(lengths, mask, at)
    assert frame_decision(decided, at, 2, 0.35)[1].tolist() == [2, 0]  # a found at tl
    assert strongest_channels(decided, at, 2)[1].tolist() == [1, 2]
    assert decided[:, 2].tolist() == lengths[:, 2].tolist()  # nologo's column untouched
    assert decided[0].tolist() == [0.1, 0.0, 0.4]
    assert only_where_seen(lengths, None, None) is lengths
    for frame in ([0, 0, 1], [0, 1, 0, 1], [0, 0, 1, 2], [0, 0, 0, 0]):  # not whole frames
        with pytest.raises(MinicapsError, match="2 corners a frame"):
            only_where_seen(lengths[:len(frame)], mask, frame)
    with pytest.raises(MinicapsError, match="2 corners a frame"):
        only_where_seen(lengths, mask, [0, 0])  # ids for fewer examples than there are
    with pytest.raises(MinicapsError, match="no frame ids"):
        only_where_seen(lengths, mask, None)
    assert logo_corners(y, [0, 0, 1, 1, 0, 0], corners, classes) is None  # frame 0 twice
