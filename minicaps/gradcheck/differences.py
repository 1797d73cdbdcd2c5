"""Fourth-order central differences, and the check of any op pair against them.

    f'(0) ~ (8 (f(h) - f(-h)) - (f(2h) - f(-2h))) / 12h
has an O(h^4) truncation error in float64, so h can be large (1e-4) and the
O(eps |f| / h) rounding error, which swamps small gradients of a model's loss when h is
tiny, stays near 1e-12.

A function may have kinks (ReLU units, hinges, pooling windows): it then reports the side
of each, and across a kink a difference measures nothing. A step that changes a side is
retried shorter, 4 times at a time (`steps`), so the stencil stays on the centre's side of
the nearest kink; but a shorter step rounds worse, so the ladder stops where rounding would
exceed the resolution asked for, and where every step crosses a kink, or where the
derivative is too small against the function for any step to resolve it, no derivative is
reported at all. Errors are relative in norm,
||analytic - numeric|| / max(||analytic||, ||numeric||).
"""
from dataclasses import dataclass

import numpy as np

from ..backend import get_array_module, to_host

H = 1e-4
H_LONGEST = 1e-3  # beyond it the truncation error of the stencil is no longer negligible
SHRINKS = 3  # at most h/4, h/16 and h/64 after h
ATTEMPTS = 8  # entries to try for each requested one
# The stencil's rounding error, as a fraction of |f| / h: the values differenced are each
# off by a fraction of an ulp of f, and this allows a whole one.
ROUNDING = np.finfo(np.float64).eps


@dataclass
class Derivative:
    """A derivative by the stencil and the step that measured it, or (value None) the
    kinks that every step crossed."""
    value: float = None
    h: float = None
    crossed: tuple = ()


def rel_error(analytic, numeric, floor=0.0):
    """||a - n|| / max(||a||, ||n||, floor); 0 when all three are zero.

    `floor` keeps a sample of entries that are all (nearly) zero, such as the row of a dead
    ReLU unit, from dividing rounding noise by rounding noise."""
    a, n = to_host(analytic).astype(np.float64), to_host(numeric).astype(np.float64)
    scale = max(np.linalg.norm(a), np.linalg.norm(n), floor)
    return 0.0 if scale == 0 else float(np.linalg.norm(a - n) / scale)


def steps(h, slope, size, resolution):
    """The steps to try for a derivative of about `slope` of a function of about `size`,
    longest first: h, or longer (up to H_LONGEST) where h would round to more than a
    tenth of `resolution` of the slope, then 4 times shorter at a time, to pass kinks,
    while rounding (ROUNDING * size / step) stays within the resolution. ROUNDING allows
    a whole ulp where the values differ by a fraction of one, so the longest step is tried
    even where it would round to up to 10 times the resolution; beyond that the list is
    empty: the derivative is too small against the function to measure. A slope of 0 (no
    path from what is moved to the function) gets every step from h: the function must
    then not change at all."""
    if slope == 0:
        return [h / 4 ** n for n in range(SHRINKS + 1)]
    shortest = ROUNDING * size / (resolution * slope)  # rounds to exactly `resolution`
    first = min(max(h, 10 * shortest), H_LONGEST)
    if first < shortest / 10:
        return []
    return [first / 4 ** n for n in range(SHRINKS + 1) if n == 0 or first / 4 ** n >= shortest]


def _crossed(kinks, sides):
    """The groups of kinks (by name) whose sides differ from the centre's."""
    if kinks is None:
        return ()
    return tuple(name for name in kinks if sides[name] != kinks[name])


def derivative(f, steps=(H,), kinks=None):
    """f'(0) of a function of one float by the fourth-order central stencil, written as
    differences of symmetric pairs so that a constant f gives exactly 0.

    f(t) returns (value, kinks): value may be a vector of terms, summed after differencing;
    kinks maps a group's name to the sides of its units (None: f has no kinks). Each step
    is tried in turn until one keeps every side as it is at the centre (`kinks`). The
    outer points go first: a unit that crosses its kink within 2h shows it there."""
    crossed = ()
    for h in steps:
        values = {}
        for t in (-2 * h, 2 * h, -h, h):
            values[t], sides = f(t)
            crossed = _crossed(kinks, sides)
            if crossed:
                break
        if not crossed:
            stencil = 8 * (values[h] - values[-h]) - (values[2 * h] - values[-2 * h])
            return Derivative(float(np.sum(stencil)) / (12 * h), h)
    return Derivative(crossed=crossed)


def numerical_gradient(probe, x, entries, *, steps=(H,), wanted=None, kinks=None):
    """Derivatives of probe() -> (value, kinks) with respect to the flat `entries` of x
    (tried in order), which the probe reads and which is perturbed in place (and restored).

    Stops after `wanted` measured entries. Every entry is tried at the first step, and the
    entries whose step crossed a kink are retried at the next only if that leaves fewer
    than `wanted`, and so on: a shorter step's rounding error is larger, so each entry gets
    the longest step any entry can. Returns ({flat index: Derivative}, the kinks crossed
    by the entries left unmeasured)."""
    flat = x.reshape(-1)  # a view: perturbing it perturbs x
    measured, crossed = {}, {int(k): () for k in entries}  # crossed: the entries pending
    for h in steps:
        for k in list(crossed):
            if wanted is not None and len(measured) == wanted:
                return measured, set()
            old = flat[k].copy()

            def shifted(delta):
                flat[k] = old + delta
                return probe()

            d = derivative(shifted, (h,), kinks)
            flat[k] = old
            if d.value is None:
                crossed[k] = d.crossed
            else:
                del crossed[k]
                measured[k] = d
    return measured, {group for groups in crossed.values() for group in groups}


def _sample(size, wanted, rng):
    """Flat indices in random order: all of them, or enough to find `wanted` kink-free."""
    if wanted is None or size <= wanted:
        return rng.permutation(size)
    return rng.choice(size, min(size, wanted * ATTEMPTS), replace=False)


def _compare(analytic, numeric_by_index):
    """Relative error on the sampled entries. The floor is the norm the sample would have
    if its entries were of the whole gradient's typical (root-mean-square) size."""
    keys = sorted(numeric_by_index)
    full = to_host(analytic).astype(np.float64).reshape(-1)
    typical = np.linalg.norm(full) * np.sqrt(len(keys) / full.size)
    return rel_error(full[keys], np.array([numeric_by_index[k].value for k in keys]), typical)


def check_op(forward, backward, inputs, *, kwargs=None, wrt=None, h=H, max_entries=None,
             seed=0):
    """Relative error of backward's gradients against central differences, one per input.

    forward(*inputs, **kwargs) -> (out, cache); backward(dout, cache) -> the gradients of
    the inputs in order (a single array for one input). The scalar checked is
    sum(out * dout) for a fixed random dout, so every output entry matters. `wrt` picks
    the differentiable inputs (default: all); inputs must be float64 arrays. Keeping away
    from an op's kinks is the caller's job (see tests/test_gradients.py).
    """
    kwargs = kwargs or {}
    rng = np.random.default_rng(seed)
    out, cache = forward(*inputs, **kwargs)
    xp = get_array_module(out)
    dout = xp.asarray(rng.standard_normal(out.shape))
    grads = backward(dout, cache)
    grads = grads if isinstance(grads, tuple) else (grads,)
    wrt = range(len(grads)) if wrt is None else wrt

    def probe():
        return float((forward(*inputs, **kwargs)[0] * dout).sum()), None

    errors = []
    for n in wrt:
        entries = _sample(inputs[n].size, max_entries, rng)
        numeric, _ = numerical_gradient(probe, inputs[n], entries, steps=(h,),
                                        wanted=max_entries)
        errors.append(_compare(grads[n], numeric))
    return errors
