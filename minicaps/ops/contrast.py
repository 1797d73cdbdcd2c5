"""Local contrast: each pixel measured against its own neighbourhood.

A broadcaster's logo is blended onto whatever the camera shows, so a faint logo (grey,
half transparent) differs from the photograph around it by a few grey levels: invisible
to a network that sees the pixels as they are, where a bright sky or a busy texture varies
far more than that. Subtracting each pixel's local mean, then dividing by the local size
of what is left, makes a faint edge on a flat background as strong as a sharp edge on a
busy one, and undoes the photograph's overall brightness and contrast. (In the manner of
the local contrast normalisation of Jarrett et al. 2009, "What is the best multi-stage
architecture for object recognition?", with box windows instead of Gaussian ones, each
channel on its own, and a fixed floor.)

Works on NumPy and CuPy arrays alike; no gradient is ever needed (it only prepares input).
"""
import numpy as np

from ..backend import get_array_module
from ..errors import MinicapsError

# The smallest spread divided by (see local_contrast), in [0, 1] pixel units (about 8 grey
# levels): flat regions (a clear sky, compression noise of a grey level or two) stay flat
# instead of being blown up to full contrast. The faint logos of tvlogos-de differ from
# their background by 10-30 grey levels.
CONTRAST_FLOOR = 0.03


def check_window(window):
    """One clear error unless `window` is the integer 0 (off) or an odd one of at least 3."""
    if not isinstance(window, (int, np.integer)) or isinstance(window, bool) or \
            (window != 0 and (window < 3 or window % 2 == 0)):
        raise MinicapsError(f"contrast_window must be 0 (off) or an odd integer of at "
                            f"least 3, not {window!r}")


def box_mean(x, window):
    """The mean of each (B, C, H, W) pixel's window x window neighbourhood, the image's
    edge rows and columns repeated beyond it; summed-area tables make it cost the same
    for any window. The tables are summed in float64: in float32 the sums over a whole
    frame would lose the few grey levels that a faint logo differs by."""
    xp = get_array_module(x)
    r = window // 2
    _, _, H, W = x.shape
    padded = xp.pad(x.astype(np.float64), ((0, 0), (0, 0), (r + 1, r), (r + 1, r)),
                    mode="edge")
    padded[:, :, 0, :] = 0  # the zero row and column a summed-area table starts from
    padded[:, :, :, 0] = 0
    table = padded.cumsum(axis=2).cumsum(axis=3)
    total = (table[:, :, window:, window:] - table[:, :, :H, window:]
             - table[:, :, window:, :W] + table[:, :, :H, :W])
    return (total / (window * window)).astype(x.dtype, copy=False)


def local_contrast(x, window, floor=CONTRAST_FLOOR):
    """centred / max(spread, floor) per image and channel, for float pixels x (B, C, H, W)
    in [0, 1]: centred = x - its window x window box mean, and spread = the square root of
    the box mean of centred**2 (the local size of the centred image; each neighbour is
    measured from its own local mean, so this is not quite the window's standard
    deviation)."""
    xp = get_array_module(x)
    centred = x - box_mean(x, window)
    spread = xp.sqrt(xp.maximum(box_mean(centred * centred, window), 0))
    return centred / xp.maximum(spread, floor)
