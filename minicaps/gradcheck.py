"""Finite-difference gradient checks for any op pair and for whole models.

Fourth-order central differences in float64,
    f'(0) ~ (8 (f(h) - f(-h)) - (f(2h) - f(-2h))) / 12h,
have an O(h^4) truncation error, so h can be large (1e-4) and the O(eps |f| / h) rounding
error, which swamps small gradients of a model's loss when h is tiny, stays near 1e-12.

Kinks are detected, not tolerated: a model check also records which side of its kink
every ReLU unit and margin hinge sits on, and a step that changes any of them is thrown
away (another entry or direction is tried), since across a kink the finite difference
measures nothing. Errors are relative in norm, ||analytic - numeric|| / max(||analytic||,
||numeric||).
"""
import numpy as np

from .backend import get_array_module, to_host

H = 1e-4
ATTEMPTS = 8  # kink-free samples to try for each requested one


def rel_error(analytic, numeric, floor=0.0):
    """||a - n|| / max(||a||, ||n||, floor); 0 when all three are zero.

    `floor` keeps a sample of entries that are all (nearly) zero, such as the row of a dead
    ReLU unit, from dividing rounding noise by rounding noise."""
    a, n = to_host(analytic).astype(np.float64), to_host(numeric).astype(np.float64)
    scale = max(np.linalg.norm(a), np.linalg.norm(n), floor)
    return 0.0 if scale == 0 else float(np.linalg.norm(a - n) / scale)


def derivative(f, h=H, kinks=None):
    """f'(0) of a function of one float by the fourth-order central stencil, written as
    differences of symmetric pairs so that a constant f gives exactly 0.

    f(t) returns (value, kink signature); value may be a vector of terms, which are summed
    after differencing. Returns None when a signature differs from `kinks` (the centre's)."""
    values = {}
    for t in (-2 * h, -h, h, 2 * h):
        values[t], signature = f(t)
        if kinks is not None and signature != kinks:
            return None
    stencil = 8 * (values[h] - values[-h]) - (values[2 * h] - values[-2 * h])
    return float(np.sum(stencil)) / (12 * h)


def numerical_gradient(probe, x, *, h=H, entries=None, wanted=None, kinks=None):
    """Derivatives of probe() -> (value, signature) with respect to entries of x, which the
    probe reads and which is perturbed in place (and restored).

    entries: flat indices to try, in order (default: all); wanted: stop after this many
    kink-free ones. Returns {flat index: derivative}, entries whose steps cross a kink left
    out. Without entries and kinks, an array of x's shape."""
    flat = x.reshape(-1)  # a view: perturbing it perturbs x
    indices = range(flat.size) if entries is None else entries
    grad = {}
    for k in indices:
        old = flat[k].copy()

        def shifted(delta):
            flat[k] = old + delta
            return probe()

        d = derivative(shifted, h, kinks)
        flat[k] = old
        if d is not None:
            grad[int(k)] = d
            if wanted is not None and len(grad) == wanted:
                break
    if entries is None and kinks is None:
        return np.array([grad[k] for k in range(flat.size)]).reshape(x.shape)
    return grad


def _sample(size, wanted, rng):
    """Flat indices in random order: all of them, or enough to find `wanted` kink-free."""
    if wanted is None or size <= wanted:
        return rng.permutation(size)
    return rng.choice(size, min(size, wanted * ATTEMPTS), replace=False)


def _compare(analytic, numeric_by_index):
    """Relative error on the sampled entries. The floor is the norm the sample would have
    if its entries were of the whole gradient's typical (root-mean-square) size."""
    keys = sorted(numeric_by_index)
    if not keys:
        raise ValueError("every sampled step crossed a kink: nothing could be checked")
    full = to_host(analytic).astype(np.float64).reshape(-1)
    typical = np.linalg.norm(full) * np.sqrt(len(keys) / full.size)
    return rel_error(full[keys], np.array([numeric_by_index[k] for k in keys]), typical)


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
        numeric = numerical_gradient(probe, inputs[n], h=h, entries=entries, wanted=max_entries)
        errors.append(_compare(grads[n], numeric))
    return errors


def _model_probe(net, x, y):
    """The model's loss as a vector of its terms, each differenced on its own (see
    CapsNet.loss_terms), with the kink signature of the point."""
    def probe():
        terms, kinks = net.loss_terms(x, y, with_kinks=True)
        return np.array([float(t) for t in terms.values()]), kinks
    return probe


def check_model(net, x, y, *, max_entries=8, h=H, seed=0):
    """Per-parameter relative errors of net.loss_and_grads against central differences on
    a sample of max_entries kink-free entries of each parameter. The net should be float64."""
    rng = np.random.default_rng(seed)
    _, grads = net.loss_and_grads(x, y)
    probe = _model_probe(net, x, y)
    _, kinks = probe()
    errors = {}
    for name, p in net.params.items():
        numeric = numerical_gradient(probe, p, h=h, entries=_sample(p.size, max_entries, rng),
                                     wanted=max_entries, kinks=kinks)
        errors[name] = _compare(grads[name], numeric)
    return errors


def scale_to_operating_point(net, x, *, target=0.5, max_doublings=16):
    """Scale the capsule transforms up until the longest class capsule of each example
    averages `target`, as in a net that has learnt something. At initialisation the class
    capsules are ~0.01 long and the decoder's gradients sit at the rounding floor of finite
    differences, so a check there measures rounding, not the backward pass."""
    for _ in range(max_doublings):
        if float(net.predict(x).max(axis=1).mean()) >= target:
            break
        net.params["caps.w"] *= 2
    return net


def _direction(p, g, rng):
    """A unit direction, half along the gradient and half random: a purely random one in a
    space of 10^5 dimensions is nearly orthogonal to the gradient, and the derivative along
    it would drown in rounding; the random half still catches a gradient pointing wrong."""
    g = to_host(g).astype(np.float64)
    r = rng.standard_normal(p.shape)
    d = r / np.linalg.norm(r) + (g / np.linalg.norm(g) if g.any() else 0)
    return get_array_module(p).asarray(d / np.linalg.norm(d), dtype=p.dtype)


def directional_check(net, x, y, *, names=None, h=H / 10, seed=0):
    """Relative error of the directional derivative along a unit direction d, numeric (by
    the stencil) against analytic <grad, d>: a few forward passes check a whole gradient
    at once, so this scales to full-size models. The derivative along d is large (d leans
    on the gradient), so a smaller step suits: rounding stays small, and fewer of the
    decoder's thousands of ReLU units come within reach of their kink.

    Returns {name: error} for each parameter in `names` (default all) moved alone, and
    under "*" the error with every parameter moved together."""
    rng = np.random.default_rng(seed)
    _, grads = net.loss_and_grads(x, y)
    probe = _model_probe(net, x, y)
    _, kinks = probe()
    originals = {name: p.copy() for name, p in net.params.items()}

    def error(moved):
        for _ in range(ATTEMPTS):
            directions = {n: _direction(net.params[n], grads[n], rng) for n in moved}
            analytic = sum(float((grads[n] * d).sum()) for n, d in directions.items())

            def along(t):
                for n, d in directions.items():
                    net.params[n][...] = originals[n] + t * d
                return probe()

            numeric = derivative(along, h, kinks)
            for n in moved:
                net.params[n][...] = originals[n]
            if numeric is not None:
                return rel_error(np.array([analytic]), np.array([numeric]))
        raise ValueError(f"every direction for {moved} crossed a kink: nothing was checked")

    errors = {name: error([name]) for name in (names if names is not None else net.params)}
    errors["*"] = error(list(net.params))
    return errors
