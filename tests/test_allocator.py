"""The allocator setting of the command line (minicaps/allocator.py): it takes on glibc and
changes no number a training step computes."""
import platform
import subprocess
import sys

STEP = """
import numpy as np
from minicaps import CapsNet
from minicaps.allocator import reuse_freed_memory
took = {reuse} and reuse_freed_memory()
net = CapsNet(in_shape=(1, 20, 20), conv_channels=16, primary_types=4, seed=3)
rng = np.random.default_rng(0)
x, y = rng.random((8, 1, 20, 20), dtype=np.float32), rng.integers(0, 10, 8)
for _ in range(2):  # the second step reuses what the first freed
    loss, grads = net.loss_and_grads(x, y)
print(took, repr(float(loss)), repr(float(sum(float(abs(g).sum()) for g in grads.values()))))
"""


def _step(reuse):
    out = subprocess.run([sys.executable, "-c", STEP.format(reuse=reuse)],
                         capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_reused_memory_changes_no_result():
    took, *with_reuse = _step(True)
    _, *without = _step(False)
    assert with_reuse == without
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert took == "True"


def test_reuse_is_harmless_without_glibc(monkeypatch):
    import ctypes

    from minicaps import allocator

    def no_libc(name):
        raise OSError("no C library here")
    monkeypatch.setattr(ctypes, "CDLL", no_libc)
    assert allocator.reuse_freed_memory() is False
