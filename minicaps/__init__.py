"""minicaps: Capsule Networks (Sabour, Frosst & Hinton, 2017) with every forward and
backward pass written by hand, on NumPy (CPU) and CuPy (GPU)."""
from .fast.idle_threads import let_idle_threads_sleep

let_idle_threads_sleep()  # before anything imports NumPy: see minicaps/fast/idle_threads.py

from .errors import MinicapsError  # noqa: E402
from .nets.capsnet import CapsNet, CapsNetConfig  # noqa: E402
from .optim import SGD, Adam, ExponentialDecay  # noqa: E402

__version__ = "0.1.0"

__all__ = ["CapsNet", "CapsNetConfig", "Adam", "SGD", "ExponentialDecay", "MinicapsError",
           "__version__"]
