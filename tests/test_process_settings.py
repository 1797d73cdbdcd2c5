"""Settings that change the whole process: the command line's allocator setting
(minicaps/fast/allocator.py) and how OpenBLAS's idle threads wait (minicaps/fast/idle_threads.py).
Each takes where it should and changes no number a training step computes."""
import os
import platform
import subprocess
import sys

STEP = """
import numpy as np
from minicaps import CapsNet
from minicaps.fast.allocator import reuse_freed_memory
took = {reuse} and reuse_freed_memory()
net = CapsNet(in_shape=(1, 20, 20), conv_channels=16, primary_types=4, seed=3)
rng = np.random.default_rng(0)
x, y = rng.random((8, 1, 20, 20), dtype=np.float32), rng.integers(0, 10, 8)
for _ in range(2):  # the second step reuses what the first freed
    loss, grads = net.loss_and_grads(x, y)
print(took, repr(float(loss)), repr(float(sum(float(abs(g).sum()) for g in grads.values()))))
"""


def _python(code, **env):
    """stdout of `code` run by a fresh interpreter, with `env` added to the environment
    (a None value removes that variable)."""
    environ = {**os.environ, **env}
    environ = {name: value for name, value in environ.items() if value is not None}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=environ)
    return out.stdout


def _step(reuse, **env):
    return _python(STEP.format(reuse=reuse), **env).split()


def test_reused_memory_changes_no_result():
    took, *with_reuse = _step(True)
    _, *without = _step(False)
    assert with_reuse == without
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert took == "True"


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


def test_idle_threads_setting_changes_no_result():
    assert (_step(False, OPENBLAS_THREAD_TIMEOUT=None)
            == _step(False, OPENBLAS_THREAD_TIMEOUT="28"))
