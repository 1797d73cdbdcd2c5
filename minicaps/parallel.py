"""Element-wise work on NumPy arrays split over threads.

NumPy runs each element-wise pass and strided copy on one core, but releases the GIL
while it does, so threads that work on disjoint parts of an array run in parallel. On the
CPU this speeds up what the matrix library does not parallelise for us: im2col's copies,
col2im's sums, the optimizer's update. CuPy arrays (already parallel on the GPU) and small
arrays run as one piece.
"""
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .backend import get_array_module

THREADS = min(4, os.cpu_count() or 1)
MIN_ELEMENTS = 1 << 16  # below this, a thread costs more than it saves
_pool = ThreadPoolExecutor(THREADS) if THREADS > 1 else None


def in_parts(array, length, work):
    """Call work(start, stop) over a split of range(length) (an axis of `array`), in
    parallel threads when `array` is a large NumPy array, else once over all of it."""
    if (_pool is None or get_array_module(array) is not np or length < THREADS
            or array.size < MIN_ELEMENTS):
        work(0, length)
        return
    bounds = [length * n // THREADS for n in range(THREADS + 1)]
    for future in [_pool.submit(work, a, b) for a, b in zip(bounds[:-1], bounds[1:])]:
        future.result()
