"""Where arrays live: NumPy on the host, CuPy on a CUDA GPU.

Ops never name an array library: they ask `get_array_module(x)` and follow the data. Only
the places that create arrays (parameter init, batches, checkpoint loading) choose a device,
and they do it through `to_device`.
"""
import numpy as np

from .errors import MinicapsError

try:  # CuPy is optional: minicaps runs on NumPy alone.
    import cupy as _cupy
except ImportError:  # pragma: no cover - depends on the machine
    _cupy = None


def get_array_module(*arrays):
    """NumPy or CuPy, whichever module owns the arrays (NumPy if none is a CuPy array)."""
    if _cupy is not None:
        return _cupy.get_array_module(*arrays)
    return np


def gpu_available():
    """True when CuPy is installed and sees at least one CUDA device."""
    if _cupy is None:
        return False
    try:
        return _cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no driver, no device: CuPy raises its own CUDA errors
        return False


def require_gpu():
    """The CuPy module, or a MinicapsError that says in one line why there is none."""
    if _cupy is None:
        raise MinicapsError("--gpu needs CuPy: pip install 'minicaps[gpu]' (CUDA 12) "
                            "or 'minicaps[gpu-cuda13]' (CUDA 13)")
    if not gpu_available():
        raise MinicapsError("--gpu: CuPy is installed but finds no CUDA device")
    return _cupy


def xp_for(device):
    """The array module for a device name: 'cpu' -> NumPy, 'gpu' -> CuPy."""
    if device == "cpu":
        return np
    if device == "gpu":
        return require_gpu()
    raise ValueError(f"device must be 'cpu' or 'gpu', not {device!r}")


def to_device(array, device):
    """A copy of `array` on `device` ('cpu' or 'gpu'); the array itself if it is there."""
    if device == "cpu":
        return to_host(array)
    return xp_for(device).asarray(array)


def to_host(array):
    """A NumPy array of `array`, wherever it lives."""
    if _cupy is not None and isinstance(array, _cupy.ndarray):
        return _cupy.asnumpy(array)
    return np.asarray(array)


def device_of(array):
    """'gpu' for a CuPy array, 'cpu' otherwise."""
    return "gpu" if get_array_module(array) is not np else "cpu"
