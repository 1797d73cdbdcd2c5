"""Settings that change the whole process: the command line's allocator setting
(minicaps/fast/allocator.py) and how OpenBLAS's idle threads wait (minicaps/fast/idle_threads.py).
Each must take effect where it should. Neither can change a number a step computes (one
sets how freed memory is kept, the other how idle threads wait), so no test claims it."""
import os
import platform
import subprocess
import sys

import pytest


def _python(code, **env):
    """stdout of `code` run by a fresh interpreter, with `env` added to the environment
    (a None value removes that variable)."""
    environ = {**os.environ, **env}
    environ = {name: value for name, value in environ.items() if value is not None}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=environ)
    return out.stdout


@pytest.mark.skipif(not (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"),
                    reason="the allocator setting is glibc's")
def test_reused_memory_is_set_on_glibc():
    """mallopt accepted both settings, in a fresh process as the command line calls it."""
    code = "from minicaps.fast.allocator import reuse_freed_memory; print(reuse_freed_memory())"
    assert _python(code).split() == ["True"]


def test_reuse_is_harmless_without_glibc(monkeypatch):
    import ctypes

    from minicaps.fast import allocator

    def no_libc(name):
        raise OSError("no C library here")
    monkeypatch.setattr(ctypes, "CDLL", no_libc)
    assert allocator.reuse_freed_memory() is False


# Prints OPENBLAS_THREAD_TIMEOUT as it is when NumPy starts to load, which is when OpenBLAS
# reads it.
TIMEOUT_WHEN_NUMPY_LOADS = """
import os, sys

class Watch:
    def find_spec(self, name, path=None, target=None):
        if name == "numpy":
            print(os.environ.get("OPENBLAS_THREAD_TIMEOUT"))
            sys.meta_path.remove(self)
        return None

sys.meta_path.insert(0, Watch())
import minicaps
"""


def test_idle_threads_setting_comes_before_numpy():
    assert _python(TIMEOUT_WHEN_NUMPY_LOADS, OPENBLAS_THREAD_TIMEOUT=None).split() == ["4"]


def test_idle_threads_setting_keeps_the_users_own():
    assert _python(TIMEOUT_WHEN_NUMPY_LOADS, OPENBLAS_THREAD_TIMEOUT="12").split() == ["12"]
