"""Let OpenBLAS's idle worker threads sleep at once instead of spinning.

After each matrix product OpenBLAS keeps its worker threads spinning (a sched_yield loop)
for 2**28 cycles, about a tenth of a second, in case another product follows. In a
training step each product is followed by copies and element-wise passes that minicaps
splits over threads of its own (minicaps/fast/parallel.py): on a machine with no more
cores than threads, the spinning worker takes a core from them, and the update and the
whole step slow down (docs/performance.md has the figures).

OPENBLAS_THREAD_TIMEOUT=4, the smallest it takes (2**4 cycles), lets the workers sleep
right after each product; waking them costs microseconds, against products of milliseconds.
OpenBLAS reads the variable once, when NumPy loads it, so minicaps sets it first thing on
import (keeping a value of the user's own): where NumPy was imported before minicaps, it
changes nothing. It only changes how OpenBLAS's threads wait, never a result.
"""
import os

SPIN_CYCLES_LOG2 = "4"


def let_idle_threads_sleep():
    """Set OPENBLAS_THREAD_TIMEOUT unless it is set already (see above)."""
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", SPIN_CYCLES_LOG2)
