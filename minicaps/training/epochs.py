"""What one training epoch shows: the order of the example indices, and its batches made
one step ahead (made_ahead).

epoch_order draws from the training generator it is given, and made_ahead keeps the order
of the draws its batches make, so a resumed run (whose generator state comes from the
checkpoint) sees the same epochs as an uninterrupted one.
"""
from concurrent.futures import ThreadPoolExecutor, wait

import numpy as np

# One thread that makes the next batch while a step runs (made_ahead).
_maker = ThreadPoolExecutor(1, thread_name_prefix="minicaps-batches")


def epoch_size(y, nologo=None, nologo_ratio=None):
    """Examples per epoch: all of them, or with `nologo_ratio` every example of the other
    classes and that many `nologo` examples per such example (at most all of them)."""
    if nologo_ratio is None or nologo is None:
        return len(y)
    n_logo = int(np.count_nonzero(y != nologo))
    return n_logo + min(int(round(nologo_ratio * n_logo)), len(y) - n_logo)


def epoch_order(y, rng, balance=False, nologo=None, nologo_ratio=None):
    """The example indices of one epoch: a permutation, or with `balance` len(y) draws with
    replacement in which every class is equally likely (rare classes repeat), or with
    `nologo_ratio` every non-`nologo` example once and a fresh random subset of the `nologo`
    ones (R&S corners: three in four show no logo; this spends the steps on logos and still
    shows every background over a few epochs)."""
    if nologo_ratio is not None and nologo is not None:
        logo, empty = np.flatnonzero(y != nologo), np.flatnonzero(y == nologo)
        n = epoch_size(y, nologo, nologo_ratio) - len(logo)
        return rng.permutation(np.concatenate([logo, rng.choice(empty, n, replace=False)]))
    if not balance:
        return rng.permutation(len(y))
    counts = np.bincount(y)
    return rng.choice(len(y), size=len(y), p=1 / (counts[y] * np.count_nonzero(counts)))


def made_ahead(make, count):
    """make(0), ..., make(count - 1) in order, each made in a background thread while the
    caller works on the one before it. While the caller works on one the next is being
    made, so the caller must not draw from any generator `make` draws from. Use it in a
    `with contextlib.closing(...)`, so that a loop that ends early waits for the one still
    being made.

    Why: a logo batch's augmentation (recolouring, pasting, drawing text in Pillow) is
    Python that holds one core while the training step before it leaves cores idle between
    its products. Only one is made at a time, each started when the one before it is done,
    and none after the last, so `make` draws from a shared generator in the same order as a
    plain loop would: a run takes bit for bit the steps it would without this."""
    if count <= 0:
        return
    pending = _maker.submit(make, 0)
    try:
        for i in range(1, count + 1):
            made = pending.result()
            pending = _maker.submit(make, i) if i < count else None
            yield made
    finally:
        if pending is not None:  # the caller stopped early: no draws after it returns
            wait([pending])
