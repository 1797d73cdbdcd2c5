"""Matrix capsules and EM routing: the gradient table's rows (EM_OPS, run by
test_gradients.py and test_gpu.py with every other op), the "last" gradient mode, and what
the ops must satisfy beyond their gradients, against naive references."""
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from minicaps.backend import get_array_module
from minicaps.gradcheck import check_op
from minicaps.ops import em_routing as em
from minicaps.ops import losses
from minicaps.ops import matrix_capsules as mc

from helpers import KINK_MARGIN, TOLERANCE, dims, normal


def uniform(data, shape, low, high):
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    return np.random.default_rng(seed).uniform(low, high, shape)


def joined(forward, backward):
    """An op with several outputs as one with a single flat output (what the checker and
    the GPU parity test difference), its backward taking that output's gradient."""
    def forward_joined(*inputs, **kwargs):
        outs, cache = forward(*inputs, **kwargs)
        xp = get_array_module(outs[0])
        return xp.concatenate([o.reshape(-1) for o in outs]), (cache, [o.shape for o in outs])

    def backward_joined(dflat, cache):
        cache, shapes = cache
        douts, start = [], 0
        for shape in shapes:
            size = int(np.prod(shape))
            douts.append(dflat[start:start + size].reshape(shape))
            start += size
        return backward(tuple(douts), cache)

    return forward_joined, backward_joined


def assume_unsaturated(activations, lam):
    """Keep the logistic of the activations off its flat tails: there the gradient through
    it (lambda a (1 - a)) sinks below what differences of the outputs resolve."""
    assume((lam * activations * (1 - activations)).min() > 1e-3)


def draw_routing_sizes(data):
    return (dims(data, 1, 2, "B"), dims(data, 1, 3, "P"), dims(data, 1, 4, "J"),
            dims(data, 1, 5, "I"), data.draw(st.sampled_from([1, 2, 3, 16]), label="H"))


def draw_m_step(data):
    B, P, J, I, H_ = draw_routing_sizes(data)
    lam = data.draw(st.sampled_from([0.01, 0.3, 1.0]), label="lambda")
    inputs = [normal(data, (B, P, J, I, H_)), uniform(data, (B, P, J, I), 0.01, 1),
              uniform(data, (B, P, I), 0.01, 1), normal(data, (J,)), normal(data, (J,))]
    (_, variance, log_a), _ = em.m_step_forward(*inputs, inverse_temperature=lam)
    assume_unsaturated(np.exp(log_a), lam)
    assume_above_variance_floor(variance)
    return inputs, {"inverse_temperature": lam}


def draw_e_step(data):
    B, P, J, I, H_ = draw_routing_sizes(data)
    return [normal(data, (B, P, J, I, H_)), normal(data, (B, P, J, H_)),
            uniform(data, (B, P, J, H_), 0.2, 2), np.log(uniform(data, (B, P, J), 0.01, 1))], {}


def draw_temperatures(data):
    iters = dims(data, 1, 4, "iters")
    first = data.draw(st.sampled_from([0.01, 0.3, 1.0]), label="lambda first")
    return em.inverse_temperatures(iters, first, 2 * first)


def assume_above_variance_floor(variance):
    """Keep every variance well above VARIANCE_FLOOR: a parent left with a single child has
    the floor's variance, where the log-likelihood's curvature grows as 1 / variance and
    the stencil's h^4 truncation error shows (measured: 1.5e-6 at variances of 1.7e-4)."""
    assume(variance.min() > 100 * em.VARIANCE_FLOOR)


def unsaturated_routing(inputs, kwargs):
    """Routing inputs kept off the logistic's tails and the variance floor."""
    (_, activations), cache = em.em_routing_forward(*inputs, **kwargs)
    assume_unsaturated(activations, kwargs["inverse_temperatures"][-1])
    for step in cache.m_steps:
        assume_above_variance_floor(step.variance)
    return inputs, kwargs


def draw_em_routing(data):
    B, P, J, I, H_ = draw_routing_sizes(data)
    return unsaturated_routing(
        [normal(data, (B, P, J, I, H_)), uniform(data, (B, P, I), 0.01, 1),
         normal(data, (J,)), normal(data, (J,))],
        {"inverse_temperatures": draw_temperatures(data), "grad": "full"})


def draw_grid(data, kernel, label):
    return dims(data, kernel, kernel + 3, label)


def draw_windowed_routing(data):
    """Convolutional capsules: children in overlapping receptive fields."""
    B, J, T = dims(data, 1, 2, "B"), dims(data, 1, 3, "J"), dims(data, 1, 2, "T")
    K, s = dims(data, 1, 3, "K"), dims(data, 1, 2, "stride")
    gh, gw = draw_grid(data, K, "gh"), draw_grid(data, K, "gw")
    children = mc.Windows(grid=(gh, gw), types=T, kernel=K, stride=s)
    P = ((gh - K) // s + 1) * ((gw - K) // s + 1)
    H_ = data.draw(st.sampled_from([2, 16]), label="H")
    return unsaturated_routing(
        [normal(data, (B, P, J, K * K * T, H_)), uniform(data, (B, P, K * K * T), 0.01, 1),
         normal(data, (J,)), normal(data, (J,))],
        {"inverse_temperatures": draw_temperatures(data), "children": children, "grad": "full"})


def draw_windows(data):
    K, s = dims(data, 1, 3, "K"), dims(data, 1, 3, "stride")
    shape = (dims(data, 1, 2, "B"), draw_grid(data, K, "gh"), draw_grid(data, K, "gw"),
             dims(data, 1, 3, "T"), dims(data, 1, 3, "H"))
    return [normal(data, shape)], {"kernel": K, "stride": s}


def draw_votes(data):
    B, P, G, T, J = (dims(data, 1, 2, "B"), dims(data, 1, 3, "P"), dims(data, 1, 3, "G"),
                     dims(data, 1, 3, "T"), dims(data, 1, 3, "J"))
    return [normal(data, (B, P, G * T, mc.H)), normal(data, (T, J, mc.POSE, mc.POSE))], {}


def draw_coordinate_addition(data):
    B, J, T = dims(data, 1, 2, "B"), dims(data, 1, 3, "J"), dims(data, 1, 3, "T")
    gh, gw = dims(data, 1, 4, "gh"), dims(data, 1, 4, "gw")
    rows, cols = uniform(data, (gh,), 0, 1), uniform(data, (gw,), 0, 1)
    return [normal(data, (B, 1, J, gh * gw * T, mc.H))], {"rows": list(rows), "cols": list(cols)}


def draw_primary(data):
    B, A, T = dims(data, 1, 2, "B"), dims(data, 1, 3, "A"), dims(data, 1, 3, "T")
    gh, gw = dims(data, 1, 4, "gh"), dims(data, 1, 4, "gw")
    n_out = T * mc.H + T
    return [normal(data, (B, A, gh, gw)), normal(data, (A, 1, 1, n_out)),
            normal(data, (n_out,))], {"types": T}


def draw_spread(data):
    B, J = dims(data, 1, 4, "B"), dims(data, 2, 5, "J")
    activations = uniform(data, (B, J), 0, 1)
    y = np.array(data.draw(st.lists(st.integers(0, J - 1), min_size=B, max_size=B)))
    margin = data.draw(st.sampled_from([0.2, 0.5, 0.9]), label="margin")
    # The loss has a kink wherever a_t - a_i = m.
    gap = activations[np.arange(B), y][:, None] - activations
    others = np.arange(J)[None, :] != y[:, None]
    assume(np.abs(margin - gap)[others].min() > KINK_MARGIN)
    return [activations, y], {"margin": margin}


# name: (draw, forward, backward, which inputs are differentiable), as test_gradients.OPS
EM_OPS = {
    "em_m_step": (draw_m_step, *joined(em.m_step_forward, em.m_step_backward), None),
    "em_e_step": (draw_e_step, em.e_step_forward, em.e_step_backward, None),
    "em_routing": (draw_em_routing, *joined(em.em_routing_forward, em.em_routing_backward),
                   None),
    "em_routing_windows": (draw_windowed_routing,
                           *joined(em.em_routing_forward, em.em_routing_backward), None),
    "capsule_windows": (draw_windows, mc.windows_forward, mc.windows_backward, None),
    "capsule_votes": (draw_votes, mc.votes_forward, mc.votes_backward, None),
    "coordinate_addition": (draw_coordinate_addition, mc.coordinate_addition_forward,
                            mc.coordinate_addition_backward, None),
    "matrix_primary_capsules": (draw_primary,
                                *joined(mc.primary_forward, mc.primary_backward), None),
    "spread_loss": (draw_spread, losses.spread_loss_forward, losses.spread_loss_backward, (0,)),
}


# --- the "last" gradient mode ------------------------------------------------------------

def frozen_last_m_step(votes, activations, beta_u, beta_a, *, assignments,
                       inverse_temperature):
    """The last M-step with its assignments held fixed, mapped to routing's outputs (poses
    and activations): the function whose exact gradient grad="last" defines."""
    (mean, _, log_a), cache = em.m_step_forward(votes, assignments, activations, beta_u,
                                                beta_a, inverse_temperature=inverse_temperature)
    return (mean, np.exp(log_a)), (cache, np.exp(log_a))


def frozen_last_m_step_backward(dout, cache):
    cache, a = cache
    dposes, da = dout
    dvotes, _, dact, dbeta_u, dbeta_a = em.m_step_backward((dposes, None, da * a), cache)
    return dvotes, dact, dbeta_u, dbeta_a


@pytest.mark.parametrize("windowed", [False, True])
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_last_mode_is_the_exact_gradient_with_the_last_assignments_frozen(windowed, data):
    inputs, kwargs = (draw_windowed_routing if windowed else draw_em_routing)(data)
    kwargs = {**kwargs, "grad": "last"}
    out, cache = em.em_routing_forward(*inputs, **kwargs)
    last_assignments = cache[0][-1][1]  # the last M-step's R
    lam = kwargs["inverse_temperatures"][-1]
    rng = np.random.default_rng(0)
    dout = tuple(rng.standard_normal(o.shape) for o in out)
    analytic = em.em_routing_backward(dout, cache)
    frozen = {"assignments": last_assignments, "inverse_temperature": lam}
    frozen_out, frozen_cache = frozen_last_m_step(*inputs, **frozen)
    for a, b in zip(out, frozen_out):
        np.testing.assert_array_equal(a, b)
    expected = frozen_last_m_step_backward(dout, frozen_cache)
    for a, b in zip(analytic, expected):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
    errors = check_op(*joined(frozen_last_m_step, frozen_last_m_step_backward), inputs,
                      kwargs=frozen)
    assert max(errors) < TOLERANCE, errors


def test_gradient_modes_agree_for_one_iteration_and_differ_beyond():
    rng = np.random.default_rng(3)
    votes, a = rng.standard_normal((2, 1, 3, 5, 4)), rng.uniform(0.1, 1, (2, 1, 5))
    beta_u, beta_a = rng.standard_normal(3), rng.standard_normal(3)
    dout = (rng.standard_normal((2, 1, 3, 4)), rng.standard_normal((2, 1, 3)))
    grads = {}
    for iters in (1, 3):
        for mode in em.EM_GRADS:
            _, cache = em.em_routing_forward(
                votes, a, beta_u, beta_a, inverse_temperatures=(0.5,) * iters, grad=mode)
            grads[iters, mode] = em.em_routing_backward(dout, cache)
    for full, last in zip(grads[1, "full"], grads[1, "last"]):
        np.testing.assert_allclose(full, last, rtol=1e-12)
    assert np.abs(grads[3, "full"][0] - grads[3, "last"][0]).max() > 1e-3


# --- properties --------------------------------------------------------------------------

def naive_em_routing(votes, activations, beta_u, beta_a, lambdas, parents_of):
    """Procedure 1 loop by loop over children and parents, for one example. A child c is
    a key of parents_of, which lists the (parent, vote) pairs that see it; parents are
    (position, type) pairs. Returns {parent: (mean, activation)}."""
    parents = sorted({p for pairs in parents_of.values() for p, _ in pairs})
    R = {(c, p): 1 / len(pairs) for c, pairs in parents_of.items() for p, _ in pairs}
    for t, lam in enumerate(lambdas):
        stats = {}
        for p in parents:
            seen = [(c, v) for c, pairs in parents_of.items() for q, v in pairs if q == p]
            r = {c: R[c, p] * activations[c] for c, _ in seen}
            S = sum(r.values())
            mean = sum(r[c] * v for c, v in seen) / (S + em.SUPPORT_FLOOR)
            var = sum(r[c] * (v - mean) ** 2 for c, v in seen) / (S + em.SUPPORT_FLOOR) \
                + em.VARIANCE_FLOOR
            cost = ((beta_u[p[1]] + np.log(np.sqrt(var))) * S).sum()
            a = 1 / (1 + np.exp(-lam * (beta_a[p[1]] - cost)))
            stats[p] = (mean, var, a)
        if t == len(lambdas) - 1:
            return {p: (m, a) for p, (m, _, a) in stats.items()}
        for c, pairs in parents_of.items():
            ap = {}
            for p, v in pairs:
                mean, var, a = stats[p]
                p_density = np.exp(-((v - mean) ** 2 / (2 * var)).sum()) / \
                    np.sqrt(np.prod(2 * np.pi * var))
                ap[p] = a * p_density
            for p, _ in pairs:
                R[c, p] = ap[p] / sum(ap.values())


@pytest.mark.parametrize("K, stride", [(1, 1), (2, 1), (3, 2), (2, 3)])
def test_windowed_routing_equals_procedure_1_written_naively(K, stride):
    rng = np.random.default_rng(K * 10 + stride)
    gh, gw, T, J, H_ = 5, 4, 2, 3, 3
    oh, ow = (gh - K) // stride + 1, (gw - K) // stride + 1
    P, I = oh * ow, K * K * T
    votes = rng.standard_normal((1, P, J, I, H_))
    a_in = rng.uniform(0.1, 1, (gh, gw, T))
    beta_u, beta_a = rng.standard_normal(J), rng.standard_normal(J)
    field_a = mc.windows_forward(a_in[None], kernel=K, stride=stride)[0].reshape(1, P, I)
    lambdas = (0.3, 0.6, 0.9)
    (poses, acts), _ = em.em_routing_forward(
        votes, field_a, beta_u, beta_a, inverse_temperatures=lambdas,
        children=mc.Windows(grid=(gh, gw), types=T, kernel=K, stride=stride))
    parents_of = {}  # child (row, col, type) -> [((position, parent type), vote)]
    for y in range(oh):
        for x in range(ow):
            for i, (r, c, t) in enumerate(np.ndindex(K, K, T)):
                child = (stride * y + r, stride * x + c, t)
                parents_of.setdefault(child, []).extend(
                    ((y * ow + x, j), votes[0, y * ow + x, j, i]) for j in range(J))
    naive = naive_em_routing(votes, {c: a_in[c] for c in parents_of}, beta_u, beta_a,
                             lambdas, parents_of)
    for (p, j), (mean, a) in naive.items():
        np.testing.assert_allclose(poses[0, p, j], mean, rtol=1e-10)
        np.testing.assert_allclose(acts[0, p, j], a, rtol=1e-10)


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_each_childs_assignments_sum_to_one_over_the_parents_that_see_it(data):
    inputs, kwargs = (draw_windowed_routing if data.draw(st.booleans()) else
                      draw_em_routing)(data)
    children = kwargs.get("children")
    (_, activations), cache = em.em_routing_forward(*inputs, **kwargs)
    for step in cache.m_steps:
        R = step.assignments  # (B, P, J, I), the R each M-step used
        per_entry = R.sum(axis=2) if children is None else children.total(R.sum(axis=2))
        np.testing.assert_allclose(per_entry, 1, rtol=1e-12)
        assert (R >= 0).all()
    assert ((activations > 0) & (activations < 1)).all()


@settings(max_examples=30, deadline=None)
@given(scale=st.sampled_from([1e-3, 1.0, 1e3]), beta=st.sampled_from([-1e3, 0.0, 1e3]),
       lam=st.sampled_from([0.01, 1.0, 100.0]), seed=st.integers(0, 2**32 - 1))
def test_routing_stays_finite_with_activations_in_the_unit_interval_at_extremes(
        scale, beta, lam, seed):
    """Votes far apart or on top of each other, betas and lambda large: nothing overflows
    and nothing is NaN (log space, the floors). Activations stay in [0, 1]: the logistic
    of an argument beyond +-37 rounds to 1, below -745 to 0, in float64."""
    rng = np.random.default_rng(seed)
    votes = rng.standard_normal((2, 1, 3, 6, 16)) * scale
    a_in = rng.uniform(0.01, 1, (2, 1, 6))
    (poses, acts), cache = em.em_routing_forward(
        votes, a_in, np.full(3, beta), np.full(3, beta), inverse_temperatures=(lam,) * 3)
    assert np.isfinite(poses).all() and np.isfinite(acts).all()
    assert ((acts >= 0) & (acts <= 1)).all()
    dout = (np.ones_like(poses), np.ones_like(acts))
    assert all(np.isfinite(g).all() for g in em.em_routing_backward(dout, cache))


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_windows_equal_a_loop_and_their_backward_is_the_adjoint(data):
    (x,), kwargs = draw_windows(data)
    out, cache = mc.windows_forward(x, **kwargs)
    s = kwargs["stride"]
    for y, z, r, c in np.ndindex(*out.shape[1:5]):
        np.testing.assert_array_equal(out[:, y, z, r, c], x[:, s * y + r, s * z + c])
    d = normal(data, out.shape)
    assert (out * d).sum() == pytest.approx((x * mc.windows_backward(d, cache)).sum(),
                                            rel=1e-12, abs=1e-12)


def test_windows_total_counts_every_field_that_covers_a_child():
    """With K = 3 and stride 1 over a 5 x 5 grid, the centre cell is in all 9 fields, a
    corner in 1; total of ones gives those counts in every copy."""
    children = mc.Windows(grid=(5, 5), types=1, kernel=3, stride=1)
    counts = children.total(np.ones((1, 9, 9))).reshape(3, 3, 3, 3)  # (oh, ow, K, K)
    assert counts[1, 1, 1, 1] == 9  # cell (2, 2) seen from the centre field
    assert counts[0, 0, 0, 0] == 1  # cell (0, 0)
    assert counts[0, 0, 0, 1] == 2  # cell (0, 1)
    values = np.random.default_rng(0).standard_normal((1, 9, 9))
    largest = children.largest(values).reshape(3, 3, 3, 3)
    assert largest[0, 0, 0, 0] == values.reshape(3, 3, 3, 3)[0, 0, 0, 0]
    centre_copies = [values.reshape(3, 3, 3, 3)[y, x, 2 - y, 2 - x]
                     for y in range(3) for x in range(3)]
    assert largest[1, 1, 1, 1] == max(centre_copies)


def test_votes_are_each_pose_times_its_types_transform():
    rng = np.random.default_rng(0)
    B, P, G, T, J = 2, 3, 2, 3, 4
    poses, w = rng.standard_normal((B, P, G * T, mc.H)), rng.standard_normal((T, J, 4, 4))
    votes, _ = mc.votes_forward(poses, w)
    for b, p, j, g, t in np.ndindex(B, P, J, G, T):
        expected = poses[b, p, g * T + t].reshape(4, 4) @ w[t, j]
        np.testing.assert_allclose(votes[b, p, j, g * T + t].reshape(4, 4), expected,
                                   rtol=1e-12)


def test_coordinate_addition_moves_with_the_grid():
    """A capsule one cell further down gets exactly one row step more in entry (0, 3) and
    the same column in entry (1, 3); every other entry is untouched."""
    layers = [(5, 2), (1, 1), (3, 2), (3, 1)]  # the default EM network's, on 28 x 28
    rows = mc.receptive_field_centres(28, layers)
    cols = mc.receptive_field_centres(28, layers)
    assert len(rows) == 3
    # Cell 0 sees pixels 0..16 (centre 8.5); the strides 2, 1, 2, 1 put cells 4 pixels apart.
    np.testing.assert_allclose(rows, np.array([8.5, 12.5, 16.5]) / 28, rtol=1e-15)
    T, J = 2, 3
    votes = np.zeros((1, 1, J, 3 * 3 * T, mc.H))
    moved, _ = mc.coordinate_addition_forward(votes, rows=rows, cols=cols)
    moved = moved.reshape(J, 3, 3, T, 4, 4)
    np.testing.assert_allclose(moved[:, 1:, :, :, 0, 3] - moved[:, :-1, :, :, 0, 3],
                               np.full((J, 2, 3, T), 4 / 28), rtol=1e-12)
    np.testing.assert_array_equal(moved[:, 1:, :, :, 1, 3], moved[:, :-1, :, :, 1, 3])
    np.testing.assert_allclose(moved[:, :, 1:, :, 1, 3] - moved[:, :, :-1, :, 1, 3],
                               np.full((J, 3, 2, T), 4 / 28), rtol=1e-12)
    untouched = np.ones((4, 4), bool)
    untouched[0, 3] = untouched[1, 3] = False
    assert (moved[..., untouched] == 0).all()


def test_spread_loss_equals_its_definition():
    rng = np.random.default_rng(0)
    a, y, m = rng.random((5, 4)), np.array([0, 3, 1, 1, 2]), 0.4
    loss, _ = losses.spread_loss_forward(a, y, margin=m)
    naive = sum(max(0, m - (a[b, y[b]] - a[b, i])) ** 2
                for b in range(5) for i in range(4) if i != y[b]) / 5
    assert float(loss) == pytest.approx(naive, rel=1e-12)
    assert losses.spread_margin(0) == 0.2 and losses.spread_margin(1) == 0.9
    assert losses.spread_margin(0.5) == pytest.approx(0.55) and losses.spread_margin(2) == 0.9
