"""Finite-difference gradient checks for any op pair and for whole models.

Fourth-order central differences in float64,
    f'(x) ~ (f(x - 2h) - 8 f(x - h) + 8 f(x + h) - f(x + 2h)) / 12h,
have an O(h^4) truncation error, so h can be large (1e-4) and the O(eps |f| / h) rounding
error, which swamps small gradients of a model's loss when h is tiny, stays near 1e-12.
Errors are relative in norm, ||analytic - numeric|| / max(||analytic||, ||numeric||), so an
entry that is tiny in both does not blow up the ratio.
"""
import numpy as np

from .backend import get_array_module, to_host


def rel_error(analytic, numeric):
    """||a - n|| / max(||a||, ||n||); 0 when both are exactly zero."""
    a, n = to_host(analytic).astype(np.float64), to_host(numeric).astype(np.float64)
    scale = max(np.linalg.norm(a), np.linalg.norm(n))
    return 0.0 if scale == 0 else float(np.linalg.norm(a - n) / scale)


def _entries(size, max_entries, rng):
    """All flat indices, or a sample of max_entries of them for big arrays."""
    if max_entries is None or size <= max_entries:
        return np.arange(size)
    return rng.choice(size, max_entries, replace=False)


STENCIL = ((-2, 1 / 12), (-1, -8 / 12), (1, 8 / 12), (2, -1 / 12))  # (offset, weight)
H = 1e-4


def derivative(f, h=H):
    """f'(0) of a scalar function of one float, by the fourth-order central stencil."""
    return sum(weight * f(offset * h) for offset, weight in STENCIL) / h


def numerical_gradient(f, x, *, h=H, entries=None):
    """Central differences of f() (a scalar, or terms to be summed) with respect to x, which f reads and which is
    perturbed in place (and restored). Returns a dict flat index -> derivative, or an array
    of x's shape when entries is None."""
    flat = x.reshape(-1)  # a view: perturbing it perturbs x
    indices = range(flat.size) if entries is None else entries
    grad = {}
    for k in indices:
        old = flat[k].copy()

        def shifted(delta):
            flat[k] = old + delta
            return f()

        grad[int(k)] = float(np.sum(derivative(shifted, h)))  # f may be a vector of terms
        flat[k] = old
    if entries is None:
        return np.array([grad[k] for k in range(flat.size)]).reshape(x.shape)
    return grad


def _compare(analytic, numeric_by_index):
    keys = sorted(numeric_by_index)
    a = to_host(analytic).reshape(-1)[keys]
    return rel_error(a, np.array([numeric_by_index[k] for k in keys]))


def check_op(forward, backward, inputs, *, kwargs=None, wrt=None, h=H, max_entries=None,
             seed=0):
    """Relative error of backward's gradients against central differences, one per input.

    forward(*inputs, **kwargs) -> (out, cache); backward(dout, cache) -> the gradients of
    the inputs in order (a single array for one input). The scalar checked is
    sum(out * dout) for a fixed random dout, so every output entry matters. `wrt` picks
    the differentiable inputs (default: all); inputs must be float64 arrays.
    """
    kwargs = kwargs or {}
    rng = np.random.default_rng(seed)
    out, cache = forward(*inputs, **kwargs)
    xp = get_array_module(out)
    dout = xp.asarray(rng.standard_normal(out.shape))
    grads = backward(dout, cache)
    grads = grads if isinstance(grads, tuple) else (grads,)
    wrt = range(len(grads)) if wrt is None else wrt

    def scalar():
        return (forward(*inputs, **kwargs)[0] * dout).sum()

    errors = []
    for n in wrt:
        entries = _entries(inputs[n].size, max_entries, rng)
        errors.append(_compare(grads[n], numerical_gradient(scalar, inputs[n], h=h,
                                                            entries=entries)))
    return errors


def _terms_of(net, x, y):
    """The model's loss as a vector of its terms: each is differenced on its own (see
    CapsNet.loss_terms), and the derivative of the sum is the sum of the derivatives."""
    return lambda: np.array([float(t) for t in net.loss_terms(x, y).values()])


def check_model(net, x, y, *, max_entries=8, h=H, seed=0):
    """Per-parameter relative errors of net.loss_and_grads against central differences on
    a sample of max_entries entries of each parameter. The net should be float64."""
    rng = np.random.default_rng(seed)
    _, grads = net.loss_and_grads(x, y)
    errors = {}
    terms = _terms_of(net, x, y)
    for name, p in net.params.items():
        numeric = numerical_gradient(terms, p, h=h, entries=_entries(p.size, max_entries, rng))
        errors[name] = _compare(grads[name], numeric)
    return errors


def directional_check(net, x, y, *, names=None, h=H, seed=0):
    """Relative error of the directional derivative along a unit direction d,
    numeric (by the stencil) against analytic sum <grad, d>: a few forward passes check a
    whole gradient at once, so this scales to full-size models.

    Returns {name: error} for each parameter in `names` (moved alone), and under "*" the
    error with every parameter moved together."""
    rng = np.random.default_rng(seed)
    _, grads = net.loss_and_grads(x, y)
    directions = {}
    for name, p in net.params.items():
        # Half along the gradient, half random: a purely random direction in a space of
        # 10^5 dimensions is nearly orthogonal to the gradient, and the derivative along it
        # would drown in rounding; the random half still catches a wrong direction.
        g = to_host(grads[name]).astype(np.float64)
        r = rng.standard_normal(p.shape)
        d = r / np.linalg.norm(r) + (g / np.linalg.norm(g) if g.any() else 0)
        directions[name] = get_array_module(p).asarray(d / np.linalg.norm(d), dtype=p.dtype)
    originals = {name: p.copy() for name, p in net.params.items()}
    terms = _terms_of(net, x, y)

    def error(moved):
        analytic = sum(float((grads[n] * directions[n]).sum()) for n in moved)

        def terms_along(t):
            for n in moved:
                net.params[n][...] = originals[n] + t * directions[n]
            return terms()

        numeric = float(np.sum(derivative(terms_along, h)))
        for n in moved:
            net.params[n][...] = originals[n]
        return rel_error(np.array([analytic]), np.array([numeric]))

    errors = {name: error([name]) for name in (names if names is not None else net.params)}
    errors["*"] = error(list(net.params))
    return errors
