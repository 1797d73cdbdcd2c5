"""The logo challenge's rules, in one place: the `nologo` class and the network that may have
no capsule for it, the frame decision over a frame's corner crops, the corners each channel
may be found in, the threshold the decision is made at and how training chooses it, and
which epoch's network is kept.

A TV frame is cut into corner crops (minicaps.data.rs), each one example labelled with the
channel whose logo it shows or `nologo`. The generic code calls this module where frames
differ from plain images: the network config (how many class capsules), training (the
scores and the threshold after every epoch, best.npz), checkpoints (their class names and
logo corners), evaluation and prediction (the decision).
"""
import numpy as np

from ..backend import get_array_module
from ..data.rs_index import NOLOGO
from ..errors import MinicapsError

# A network without a nologo capsule (train --no-nologo-capsule) says "nologo" for a corner
# when no class capsule is longer than this, the margin loss's midpoint: its nologo column
# is this constant. It is also the frame threshold where none was chosen on validation.
PRESENT = 0.5
# The frame thresholds training chooses from, on the validation frames, after every epoch.
THRESHOLDS = tuple(round(0.05 * k, 2) for k in range(1, 20))
# Of the thresholds validation cannot tell apart, training takes the one nearest this
# (best_threshold): within that range the line trades what validation frames do not show,
# logo renderings training never saw (found more often below it) against programme titles
# (called a channel more often below it), and on the study's stand-ins this is where both
# hold up.
BALANCED_THRESHOLD = 0.35
# best.npz is chosen by the validation frame scores of this many epochs, the last of them its
# own (selection_score).
SELECTION_EPOCHS = 3


def trained_on_frames(data_info):
    """Whether a checkpoint's network was trained on TV frames (its data_info's layout is the
    R&S challenge's): then an image is a frame, cut into corner crops and decided as one."""
    return data_info.get("layout") == "rs"


def nologo_index(classes):
    """The index of `nologo` in `classes`; frames cannot be scored without it."""
    if NOLOGO not in classes:
        raise MinicapsError(f"frame scores need a class named {NOLOGO!r}")
    return classes.index(NOLOGO)


def capsule_count(classes, nologo_capsule=True):
    """How many class capsules a capsule network for `classes` has: one per class, or one
    fewer without a nologo capsule (nologo examples then train every capsule towards
    absent), which needs nologo to be the last class."""
    if nologo_capsule or NOLOGO not in classes:
        return len(classes)
    if classes[-1] != NOLOGO:
        raise MinicapsError(f"without a nologo capsule, {NOLOGO!r} must be the last class")
    return len(classes) - 1


def names_fit(classes, n_capsules):
    """Whether class names fit a network with `n_capsules` class capsules: one name per
    capsule, or one more, the last, nologo."""
    return len(classes) == n_capsules or list(classes[n_capsules:]) == [NOLOGO]


def with_nologo(lengths, n_classes):
    """lengths (N, J) of a network with one capsule fewer than `n_classes` (no capsule for
    the last class, nologo) with that class's column appended as the constant PRESENT, so
    argmax says nologo exactly when no capsule is present; other lengths are returned as
    they are."""
    if lengths.shape[1] != n_classes - 1:
        return lengths
    xp = get_array_module(lengths)
    return xp.concatenate([lengths, xp.full((len(lengths), 1), PRESENT, lengths.dtype)], axis=1)


def logo_corners(y, frame, corners, classes):
    """{corner: [channel, ...]}: the channels whose logos the examples labelled `y` show in
    each corner, the examples being frame by frame (`frame` their frames), one per corner of
    `corners` in that order; None for examples laid out otherwise (data made in memory).
    Training stores it with a checkpoint (data_info) for `seen_mask`."""
    K = len(corners)
    if not _frame_by_frame(frame, K):
        return None
    labels = np.asarray(y).reshape(-1, K)
    nologo = nologo_index(classes)
    return {corner: [classes[j] for j in np.unique(labels[:, k]) if j != nologo]
            for k, corner in enumerate(corners)}


def seen_mask(data_info, classes):
    """(K, J) bool for a checkpoint's frame examples, one row per corner of its crop: where
    a class may be decided, a channel in the corners its logo was shown in training
    (data_info's logo_corners), nologo in all; None where the checkpoint records no corners
    (trained before they were kept, or not on frames): every class everywhere."""
    seen = data_info.get("logo_corners")
    if seen is None:
        return None
    return np.array([[name == NOLOGO or name in seen.get(corner, ()) for name in classes]
                     for corner in data_info["crop"]["corners"]])


def _frame_by_frame(frame, K):
    """Whether examples whose frames are `frame` (N,) come frame by frame, the K of each
    frame in a row and no frame twice (a frame's corners, in the crop's order: how
    minicaps.data.rs lays them out)."""
    frame = np.asarray(frame)
    if len(frame) % K:
        return False
    firsts = frame[::K]
    return (bool(np.all(frame.reshape(-1, K) == firsts[:, None]))
            and len(np.unique(firsts)) == len(firsts))


def only_where_seen(lengths, mask, frame):
    """lengths (N, J) of frame examples (frame by frame as `frame` (N,) says, one row per
    corner of `mask` (K, J), in its order) with every channel's length set to 0 in the
    corners where its logo was never seen; as they are where `mask` is None.

    Why: a channel keeps its logo in its corner (13 of tvlogos-de's 15 channels in one,
    WDR and NDR in two), and programme titles in corners a channel never uses were often
    taken for its logo; this removed a quarter to over a half of the titles called a
    channel at one threshold (docs/studies/logo_shift.md)."""
    if mask is None:
        return lengths
    K = len(mask)
    if frame is None:
        raise MinicapsError("these examples are not from frames (no frame ids): a channel's "
                            "corners cannot be told")
    if len(frame) != len(lengths) or not _frame_by_frame(frame, K):
        raise MinicapsError(f"{len(lengths)} examples are not frame by frame, {K} corners "
                            "a frame: a channel's corners cannot be told")
    return lengths * np.tile(mask, (len(lengths) // K, 1))


def strongest_channels(lengths, frame, nologo):
    """For each frame in `frame` (N,), the example (a corner) whose longest channel capsule
    is the longest over the frame's examples: (frame ids (F,), that example's index (F,),
    its channel (F,), that capsule's length (F,)). The nologo capsule takes no part."""
    channels = lengths.astype(float)  # a copy
    channels[:, nologo] = -np.inf
    best, top = channels.argmax(axis=1), channels.max(axis=1)  # (N,)
    order = np.lexsort((top, frame))  # by frame, then by the longest channel capsule
    f = frame[order]
    last = order[np.r_[f[1:] != f[:-1], True]]  # each frame's corner with the longest one
    return frame[last], last, best[last], top[last]


def frame_decision(lengths, frame, nologo, threshold=PRESENT):
    """Frame ids (F,) and their predicted class (F,) from the lengths (N, J) of their corner
    examples, `frame` (N,) giving each example's frame. A frame shows the channel whose
    capsule is the longest over all its corners when that length reaches `threshold`, and
    is `nologo` otherwise; the nologo capsule takes no part.

    Why not each corner's argmax: a frame has at most one logo, so each channel capsule can
    act as a detector of its logo in any of the frame's corners (those `only_where_seen`
    leaves it). Asking each corner whether a channel
    beats nologo lost the faint logos (sat1gold, prosiebenmaxx) to nologo, the class of
    two corners in three; this way scored more test frames right (docs/studies/logos.md)."""
    ids, _, channel, top = strongest_channels(lengths, frame, nologo)
    return ids, np.where(top >= threshold, channel, nologo)


def frame_accuracy(lengths, frame, frame_y, nologo, threshold=PRESENT):
    """The fraction of frames (those present in `frame`) whose decision is right."""
    ids, pred = frame_decision(lengths, np.asarray(frame), nologo, threshold)
    return float(np.mean(pred == np.asarray(frame_y)[ids]))


def threshold_curve(lengths, frame, frame_y, nologo):
    """The frame accuracy at each entry of THRESHOLDS."""
    return [frame_accuracy(lengths, frame, frame_y, nologo, t) for t in THRESHOLDS]


def best_threshold(curves, n_frames):
    """The entry of THRESHOLDS nearest BALANCED_THRESHOLD (of two as near, the higher) of
    those whose frame accuracy, averaged over `curves` (each one threshold_curve of the
    same `n_frames` frames), is within one frame of the best.

    Why not the best alone: the curve is flat at its top over several thresholds, and which
    of those is a frame ahead is noise that moved the line from one end of them to the other
    between epochs and seeds (docs/studies/logo_shift.md)."""
    mean = np.mean(curves, axis=0)
    best = mean.max()
    near_best = [t for t, m in zip(THRESHOLDS, mean) if within_a_frame(m, best, n_frames)]
    return min(near_best, key=lambda t: (round(abs(t - BALANCED_THRESHOLD), 9), -t))


def within_a_frame(accuracy, best, n_frames):
    """Whether a frame accuracy (a mean over epochs of `n_frames` frames) is at most one
    frame under `best`; the slack is for means of whole frames summed in another order."""
    return (best - accuracy) * n_frames <= 1 + 1e-9


def validation_frame_scores(lengths, frame, frame_y, classes, earlier_curves=()):
    """{"val_frame_curve", "frame_threshold", "val_frame_accuracy", "val_frames"} of an
    epoch: these validation frames' accuracy at every threshold, the threshold chosen on it
    averaged with the curves of the epochs before (`earlier_curves`, the last
    SELECTION_EPOCHS - 1 of them), this epoch's accuracy there and how many frames it is
    of. Recorded with every epoch; the test frames, and evaluate and predict with its
    checkpoint, are decided at that threshold.

    Why several epochs: with a few hundred validation frames, few of them without a logo,
    the curve is flat at its top and one epoch's choice moves with a frame or two
    (docs/studies/logo_shift.md); the epochs that choose best.npz (selection_score) are as
    many times the evidence for where the line goes."""
    nologo = nologo_index(classes)
    curve = threshold_curve(lengths, frame, frame_y, nologo)
    n_frames = len(np.unique(frame))
    threshold = best_threshold([*earlier_curves, curve][-SELECTION_EPOCHS:], n_frames)
    return {"val_frame_curve": curve, "frame_threshold": threshold,
            "val_frame_accuracy": curve[THRESHOLDS.index(threshold)], "val_frames": n_frames}


def stored_threshold(history):
    """The frame threshold of a checkpoint: chosen in its last epoch, on the validation
    curves of that epoch and the two before it (older checkpoints: of that epoch alone)."""
    return history[-1].get("frame_threshold", PRESENT) if history else PRESENT


def selection_score(history):
    """What best.npz is chosen by, for the last epoch of `history` (higher is better; None
    without validation data): for frame data, validation frame accuracy averaged over the
    last SELECTION_EPOCHS epochs; else the epoch's own validation accuracy.

    Why the average: a few hundred validation frames score in coarse steps, one frame at a
    time, so one epoch's score is noisy: a lucky early epoch was once kept over a run's
    better last ones (docs/studies/logo_shift.md); an epoch at the end of a good stretch is
    steadier evidence."""
    record = history[-1]
    if record.get("val_accuracy") is None:
        return None
    if record.get("val_frame_accuracy") is None:
        return record["val_accuracy"]
    window = [r for r in history[-SELECTION_EPOCHS:] if r.get("val_frame_accuracy") is not None]
    return float(np.mean([r["val_frame_accuracy"] for r in window]))


def kept_as_best(history):
    """Whether the last epoch of `history` is kept as best.npz: on frame data, its
    selection_score is within one validation frame of the highest any epoch of `history`
    reached; on other data, whose records count no frames, it must reach that highest. The
    training loop asks after every epoch, so best.npz is the last epoch to pass.

    Why a frame's slack: validation frames show the logo renderings training shows; by the
    middle of a run nearly all of them are right, and later epochs move by a frame or so
    either way while still learning what unseen renderings need. A run once kept an epoch
    well before its last, ahead of it by less than a frame, and that network was the weaker
    one on the held-out renderings at every threshold (docs/studies/logo_shift.md): a frame
    is noise, and of two networks validation cannot tell apart the later has trained longer."""
    scores = [selection_score(history[:n + 1]) for n in range(len(history))]
    if scores[-1] is None:
        return False
    top = max(s for s in scores if s is not None)
    n_frames = history[-1].get("val_frames")
    return within_a_frame(scores[-1], top, n_frames) if n_frames else scores[-1] >= top
