"""Work on NumPy arrays split over threads.

NumPy runs each element-wise pass and strided copy on one core, but releases the GIL
while it does, so threads that work on disjoint parts of an array run in parallel. On the
CPU this speeds up what the matrix library does not parallelise for us: im2col's copies,
col2im's sums, the optimizer's update, routing (minicaps/fast/tiles.py). CuPy arrays
(already parallel on the GPU) and small arrays run as one piece.
"""
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..backend import get_array_module

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


# Bytes per tile of in_tiles: small enough to stay in a core's L2 cache beside the writes
# they feed (the best of 1-16 rows of u_hat, batch 8 to 128, on the development machine).
TILE_BYTES = 256 * 2 ** 10


def in_tiles(array, length, index_bytes, work, tile_bytes=None):
    """Call work(start, stop) over tiles of range(length) of about tile_bytes each (by
    default TILE_BYTES; index_bytes per index), the tiles split over threads as in_parts
    splits; on the GPU once over all of it (a launch per tile would cost more than the
    cache saves). `work` must not call in_parts itself: the threads it runs in are
    in_parts'."""
    if get_array_module(array) is not np:
        work(0, length)
        return
    tile = tile_length(index_bytes, tile_bytes)

    def run(start, stop):
        for first in range(start, stop, tile):
            work(first, min(stop, first + tile))

    in_parts(array, length, run)


def tile_length(index_bytes, tile_bytes=None):
    """Indices per tile of in_tiles on the CPU (at least one)."""
    return max(1, (tile_bytes or TILE_BYTES) // max(1, index_bytes))


def transposed(array, axes):
    """array.transpose(axes) as a contiguous array (the view itself if it is one already).

    NumPy copies a transpose on one core, and in the order of the result, so that its reads
    jump across the source (for a batch-first image batch made batch-last, one number per
    image's worth of bytes). Here the source is copied in tiles of its first axis, each
    small enough to stay in cache while it is written out, in parallel threads."""
    view = array.transpose(axes)
    xp = get_array_module(array)
    if xp is not np or view.flags.c_contiguous:  # the GPU copies in parallel in one launch
        return xp.ascontiguousarray(view)
    out = np.empty(view.shape, dtype=view.dtype)
    lead = (slice(None),) * axes.index(0)  # the axes in front of the source's first

    def copy(first, last):
        out[lead + (slice(first, last),)] = array[first:last].transpose(axes)

    in_tiles(array, array.shape[0], array[:1].nbytes, copy)
    return out
