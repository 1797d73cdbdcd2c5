"""Let the C allocator keep freed memory for the next training step.

A training step allocates and frees the same large arrays every step (im2col columns of
16 MB, u_hat and routing's temporaries of tens of MB). glibc serves each block above its
mmap threshold (at most 32 MB) with a fresh mapping and hands it back to the kernel when
it is freed, and gives heap memory back once enough is free at its top. The next step then
touches brand-new pages, one page fault each: a sizeable share of a CPU training step
(docs/performance.md).

`reuse_freed_memory()` raises both thresholds so that freed blocks stay in the heap and
are reused. The memory a training step needs stays the same (a step's blocks are reused,
not added to); only the process no longer shrinks between steps. It
changes the whole process, so the library never calls it on import: the command line does,
and a library user may.
"""
import ctypes

# mallopt parameters, from glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD = 1 << 30  # blocks this large (a whole dataset) still get their own mapping
_TRIM_THRESHOLD = (1 << 31) - 1


def reuse_freed_memory():
    """Tell glibc to keep freed blocks for reuse. True if it took; False where there is no
    glibc (macOS, Windows, musl), which changes nothing else."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the running process's C library
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
                and mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
