"""minicaps: Capsule Networks (Sabour, Frosst & Hinton, 2017) with every forward and
backward pass written by hand, on NumPy (CPU) and CuPy (GPU)."""
from .errors import MinicapsError
from .model import CapsNet, CapsNetConfig
from .optim import SGD, Adam, ExponentialDecay

__version__ = "0.1.0"

__all__ = ["CapsNet", "CapsNetConfig", "Adam", "SGD", "ExponentialDecay", "MinicapsError",
           "__version__"]
