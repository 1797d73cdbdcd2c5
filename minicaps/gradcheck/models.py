"""Whole networks against finite differences: sampled single entries of each parameter,
and directions that move a parameter (or all of them) at once.

A network's probe returns its loss terms, each differenced on its own, and the sides of its
kinks by group (Network.loss_terms). A direction through all of a big layer's weights moves
every one of its units, and some unit is always near its kink: the step is shortened first
(differences.steps), and should every step still cross one, the direction moves one slice
of the parameter only. Where nothing can be measured the check says why.
"""
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from ..backend import get_array_module, to_host
from .differences import (H, _compare, _sample, derivative, numerical_gradient, rel_error,
                          steps)
from .subject import differentiated_function

DIRECTIONS = 3  # directions to try at each support before moving fewer entries
RESOLUTION = 1e-7  # the rounding error a measurement may have, relative to its derivative


class NothingMeasured(ValueError):
    """Every step of a check crossed a kink, or rounding would swamp the derivative: there
    is no error to report."""


@dataclass
class Measurement:
    """One check of one parameter: the relative error, how many entries it covered (those
    checked one by one, or those the direction moved), the shortest step it took, and why
    when error is None."""
    error: float = None
    covered: int = 0
    h: float = None
    why: str = ""


@dataclass
class Point:
    """Where a check differentiates: the net (its params moved and restored in place), the
    analytic gradients, a probe of the loss's terms and kinks, the centre's kinks, the size
    of the loss (its terms' magnitudes summed: what rounding is relative to), the
    resolution asked for, and the random generator of entries and directions."""
    net: object
    grads: dict
    probe: object
    kinks: dict
    loss: float
    resolution: float
    rng: object


@contextmanager
def checked_point(net, x, y, *, resolution=RESOLUTION, seed=0):
    """The Point of a float64 net at batch (x, y), while its forward pass computes the
    function its backward pass is the gradient of (subject.differentiated_function)."""
    _, grads = net.loss_and_grads(x, y)
    with differentiated_function(net, x):
        def probe():
            terms, kinks = net.loss_terms(x, y, with_kinks=True)
            return np.array([float(t) for t in terms.values()]), kinks

        terms, kinks = probe()
        yield Point(net, grads, probe, kinks, float(np.abs(terms).sum()), resolution,
                    np.random.default_rng(seed))


def _unresolved(slope, point):
    return (f"its derivative (about {slope:.1e}) is too small against the loss "
            f"({point.loss:.1e}) for a finite difference to resolve it to "
            f"{point.resolution:g}")


def _why(what, crossed, ladder):
    groups = ", ".join(sorted(crossed)) or "none named"
    return (f"{what} crossed a kink ({groups}) at every step tried, h = {ladder[0]:.1e} down "
            f"to {ladder[-1]:.1e}")


def entries_check(point, name, *, wanted, h=H):
    """Sampled single entries of one parameter against the analytic gradient. The steps
    suit an entry of the gradient's typical (root-mean-square) size, the size _compare
    judges errors against."""
    p, g = point.net.params[name], to_host(point.grads[name])
    typical = float(np.sqrt(np.mean(np.square(g))))
    ladder = steps(h, typical, point.loss, point.resolution)
    if not ladder:
        return Measurement(why=_unresolved(typical, point))
    candidates = _sample(p.size, wanted, point.rng)
    numeric, crossed = numerical_gradient(point.probe, p, candidates, steps=ladder,
                                          wanted=wanted, kinks=point.kinks)
    if not numeric:
        return Measurement(why=_why(f"each of {len(candidates)} sampled entries", crossed,
                                    ladder))
    return Measurement(_compare(g, numeric), len(numeric), min(d.h for d in numeric.values()))


def _direction(p, g, support, rng):
    """A unit direction on `support` (an index of p), half along the gradient and half
    random: a purely random one in a space of 10^5 dimensions is nearly orthogonal to the
    gradient, and the derivative along it would drown in rounding; the random half still
    catches a gradient pointing wrong. The random half is turned to the gradient's side, so
    that the halves never cancel (in one dimension they would, half of the time)."""
    d = np.zeros(p.shape)
    g = to_host(g).astype(np.float64)[support]
    r = rng.standard_normal(g.shape)
    r = -r if (r * g).sum() < 0 else r
    d[support] = r / np.linalg.norm(r) + (g / np.linalg.norm(g) if g.any() else 0)
    return get_array_module(p).asarray(d / np.linalg.norm(d), dtype=p.dtype)


def _supports(shapes, rng):
    """Where the directions move each parameter: everywhere, and then, should every step
    cross a kink, one slice along its last axis. For the weights and bias of a convolution
    or a linear layer that is one output unit's: then only that unit's ReLUs move directly,
    the fewest a direction through the layer can reach."""
    yield {name: (...,) for name in shapes}
    yield {name: (..., int(rng.integers(shape[-1]))) for name, shape in shapes.items()}


def direction_check(point, names, *, h=H / 10):
    """The directional derivative along a unit direction moving the parameters `names`
    together, numeric (by the stencil) against analytic <grad, d>. The derivative along d
    is large (d leans on the gradient), so a step shorter than an entry's suits: rounding
    stays small, and fewer of the decoder's thousands of ReLU units come within reach of
    their kink."""
    params, grads = point.net.params, point.grads
    originals = {n: params[n].copy() for n in names}
    crossed, unresolved, ladder = set(), None, ()
    for support in _supports({n: params[n].shape for n in names}, point.rng):
        for _ in range(DIRECTIONS):
            directions = {n: _direction(params[n], grads[n], support[n], point.rng)
                          for n in names}
            analytic = sum(float((grads[n] * d).sum()) for n, d in directions.items())
            ladder = steps(h, abs(analytic), point.loss, point.resolution)
            if not ladder:
                unresolved = _unresolved(abs(analytic), point)
                continue

            def along(t):
                for n, d in directions.items():
                    params[n][...] = originals[n] + t * d
                return point.probe()

            numeric = derivative(along, ladder, point.kinks)
            for n in names:
                params[n][...] = originals[n]
            if numeric.value is not None:
                error = rel_error(np.array([analytic]), np.array([numeric.value]))
                moved = sum(int(np.count_nonzero(to_host(d))) for d in directions.values())
                return Measurement(error, moved, numeric.h)
            crossed.update(numeric.crossed)
    if not crossed:
        return Measurement(why=unresolved)
    return Measurement(why=_why(f"each of {2 * DIRECTIONS} directions (through all entries, "
                                f"then through one slice)", crossed, ladder))


@dataclass
class ParameterCheck:
    """A parameter's row of a network check ("*": all of them moved together)."""
    name: str
    size: int
    entries: Measurement = None  # None for "*"
    direction: Measurement = None

    @property
    def errors(self):
        return [m.error for m in (self.entries, self.direction)
                if m is not None and m.error is not None]

    @property
    def unmeasured(self):
        """Nothing at all could be measured for this parameter."""
        return not self.errors


def check_network(net, x, y, *, entries=6, resolution=RESOLUTION, seed=0):
    """Every parameter of a float64 net checked on `entries` sampled entries and along a
    direction, and all parameters along one direction together ("*"): ParameterChecks.
    No measurement is made whose rounding may exceed `resolution` (relative)."""
    with checked_point(net, x, y, resolution=resolution, seed=seed) as point:
        rows = [ParameterCheck(name, p.size, entries_check(point, name, wanted=entries),
                               direction_check(point, [name]))
                for name, p in net.params.items()]
        everything = direction_check(point, list(net.params))
    return rows + [ParameterCheck("*", sum(p.size for p in net.params.values()), None,
                                  everything)]


def _errors(measurements):
    """{name: error}, or NothingMeasured naming the first parameter with none."""
    for name, m in measurements.items():
        if m.error is None:
            raise NothingMeasured(f"{name}: {m.why}")
    return {name: m.error for name, m in measurements.items()}


def check_model(net, x, y, *, max_entries=8, h=H, seed=0):
    """Per-parameter relative errors of net.loss_and_grads against central differences on
    a sample of max_entries kink-free entries of each parameter. The net should be float64."""
    with checked_point(net, x, y, seed=seed) as point:
        return _errors({name: entries_check(point, name, wanted=max_entries, h=h)
                        for name in net.params})


def directional_check(net, x, y, *, names=None, h=H / 10, seed=0):
    """Relative error of the directional derivative along a unit direction d, numeric (by
    the stencil) against analytic <grad, d>: a few forward passes check a whole gradient
    at once, so this scales to full-size models.

    Returns {name: error} for each parameter in `names` (default all) moved alone, and
    under "*" the error with every parameter moved together."""
    with checked_point(net, x, y, seed=seed) as point:
        checks = {name: direction_check(point, [name], h=h)
                  for name in (names if names is not None else net.params)}
        checks["*"] = direction_check(point, list(net.params), h=h)
    return _errors(checks)
