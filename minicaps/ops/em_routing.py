"""EM routing (Hinton, Sabour & Frosst, "Matrix Capsules with EM Routing", ICLR 2018,
Procedure 1), forward and backward written out.

Layout: votes V (B, P, J, I, H), assignments R (B, P, J, I), child activations a_in
(B, P, I), parent means and variances (B, P, J, H), parent activations (B, P, J); beta_u
and beta_a (J,), one per parent type, shared by the P parent positions. B batch, P parent
positions (1 for class capsules), J parent types, I the children a parent position sees,
H pose entries (16). Each parent is a Gaussian over the H entries of its children's votes:

    M-STEP   r_ij = R_ij a_i,  S_j = sum_i r_ij
             mu_jh = sum_i r_ij V_ijh / (S_j + SUPPORT_FLOOR)
             sigma2_jh = sum_i r_ij (V_ijh - mu_jh)^2 / (S_j + SUPPORT_FLOOR) + VARIANCE_FLOOR
             cost_jh = (beta_u_j + log sigma_jh) S_j
             a_j = logistic(lambda (beta_a_j - sum_h cost_jh))
    E-STEP   log p_ij = -sum_h [(V_ijh - mu_jh)^2 / (2 sigma2_jh) + log(2 pi sigma2_jh) / 2]
             R_ij = a_j p_ij / sum over every parent k that sees child i of a_k p_ik

R starts uniform over the parents that see each child; every iteration runs an M-step and,
but after the last, an E-step. The output is the last M-step's means (the parents' poses)
and activations.

Constants added to the paper's formulas, and why:
- VARIANCE_FLOOR is added to every variance: a parent whose votes agree exactly (one child
  alone, or identical votes) would otherwise have sigma = 0, log sigma = -inf and divide
  by zero in the E-step. Added, not a max: the result stays smooth, no kink.
- SUPPORT_FLOOR is added to S_j where it divides: in float32 every r_ij of a parent can
  underflow to 0 (R comes from exponentials), and the mean would be 0/0. It is far below
  any S_j that carries weight, and the cost keeps the paper's S_j.
No other constant: the E-step works in log space, log a_j = log logistic(x) computed
without forming a_j, and the normaliser subtracts the largest log a_k p_ik over all the
parents of child i before exponentiating, so nothing overflows or takes log(0).

Two backward passes, both exact for what they define (as minicaps.ops.routing's):
- grad="full": the gradient of the unrolled procedure, through every M-step and E-step.
  V and a_in feed every M-step, V every E-step too: their gradients sum all the paths.
- grad="last": the last assignments R are constants; the gradient reaches V, a_in and the
  betas through the last M-step only.

Overlapping receptive fields: `children` is None when every (p, i) entry is a child of its
own (class capsules), or an object with total(z) and largest(z) that combine the entries of
a (B, P, I) array that are the same child seen from several parent positions
(matrix_capsules.Windows, for convolutional capsules): the E-step's normaliser and the
initial uniform R then run over every parent that sees the child, as the paper's do.
"""
import math
from typing import NamedTuple

from ..backend import get_array_module

EM_GRADS = ("full", "last")
VARIANCE_FLOOR = 1e-4
SUPPORT_FLOOR = 1e-8
LOG_2PI = math.log(2 * math.pi)


class MStepCache(NamedTuple):
    """What m_step_forward keeps for backward."""
    votes: object  # V (B, P, J, I, H)
    assignments: object  # R (B, P, J, I), as this M-step weighs them
    activations: object  # a_in (B, P, I)
    beta_u: object  # (J,)
    r: object  # R a_in (B, P, J, I)
    support: object  # S_j (B, P, J)
    mean: object  # (B, P, J, H)
    variance: object  # (B, P, J, H)
    log_sigma: object  # sum_h log sigma_jh (B, P, J)
    logit: object  # lambda (beta_a - cost) (B, P, J)
    inverse_temperature: float


class EStepCache(NamedTuple):
    """What e_step_forward keeps for backward."""
    votes: object  # (B, P, J, I, H)
    mean: object  # (B, P, J, H)
    inv: object  # 1 / sigma^2 (B, P, J, H)
    assignments: object  # the new R (B, P, J, I)
    children: object  # None, or the overlapping fields' Windows


class EMRoutingCache(NamedTuple):
    """What em_routing_forward keeps: the M-steps' caches (every one for grad="full", the
    last alone for "last"), the E-steps' (None each for "last": none is read back), and
    the output activations."""
    m_steps: list
    e_steps: list
    out_activations: object


def _same_child(children, op, z):
    return z if children is None else getattr(children, op)(z)


def inverse_temperatures(iters, first, last):
    """lambda for each of `iters` iterations, from `first` to `last` linearly (the paper
    anneals the inverse temperature over the iterations without giving its schedule)."""
    if iters == 1:
        return (float(last),)
    return tuple(first + (last - first) * t / (iters - 1) for t in range(iters))


def log_logistic(x):
    """log(1 / (1 + exp(-x))) = min(x, 0) - log(1 + exp(-|x|)): finite for every x."""
    xp = get_array_module(x)
    return xp.minimum(x, 0) - xp.log1p(xp.exp(-xp.abs(x)))


def logistic(x):
    """1 / (1 + exp(-x)) as 0.5 (1 + tanh(x / 2)): no overflow."""
    return 0.5 * (1 + get_array_module(x).tanh(0.5 * x))


def m_step_forward(votes, assignments, activations, beta_u, beta_a, *, inverse_temperature):
    """M-STEP of Procedure 1 for every parent at once.

    votes (B, P, J, I, H), assignments R (B, P, J, I), activations a_in (B, P, I), beta_u,
    beta_a (J,) -> (mean (B, P, J, H), variance sigma^2 (B, P, J, H), log activation
    (B, P, J)). The log activation is what the E-step needs; exp of it is a_j.
    """
    xp = get_array_module(votes)
    H = votes.shape[-1]
    r = assignments * activations[:, :, None, :]  # (B, P, J, I)
    support = r.sum(axis=-1)  # S_j (B, P, J)
    denom = (support + SUPPORT_FLOOR)[..., None]  # (B, P, J, 1)
    mean = xp.einsum("bpji,bpjih->bpjh", r, votes) / denom  # (B, P, J, H)
    dev = votes - mean[:, :, :, None, :]  # (B, P, J, I, H)
    variance = xp.einsum("bpji,bpjih->bpjh", r, dev * dev) / denom + VARIANCE_FLOOR
    log_sigma = 0.5 * xp.log(variance).sum(axis=-1)  # sum_h log sigma_jh (B, P, J)
    cost = support * (H * beta_u + log_sigma)  # sum_h cost_jh (B, P, J)
    logit = inverse_temperature * (beta_a - cost)
    cache = MStepCache(votes, assignments, activations, beta_u, r, support, mean, variance,
                       log_sigma, logit, inverse_temperature)
    return (mean, variance, log_logistic(logit)), cache


def m_step_backward(dout, cache):
    """dvotes, dassignments, dactivations, dbeta_u, dbeta_a from dout = (dmean, dvariance,
    dlog_activation), any of them None for no gradient. The variance's deviations are
    recomputed from the votes rather than kept (they are as large as the votes)."""
    (votes, assignments, activations, beta_u, r, support, mean, variance, log_sigma, logit,
     lam) = cache
    xp = get_array_module(votes)
    H = votes.shape[-1]
    dmean, dvariance, dlog_a = (xp.zeros_like(x) if d is None else d
                                for d, x in zip(dout, (mean, variance, log_sigma)))
    dlogit = dlog_a * logistic(-logit)  # d log logistic(x) / dx = logistic(-x)
    dbeta_a = lam * dlogit.sum(axis=(0, 1))
    dcost = -lam * dlogit  # (B, P, J)
    dsupport = dcost * (H * beta_u + log_sigma)
    dbeta_u = H * (dcost * support).sum(axis=(0, 1))
    # log sigma_jh = log(sigma2_jh) / 2, weighted by S_j in the cost.
    dvariance = dvariance + (0.5 * dcost * support)[..., None] / variance  # (B, P, J, H)
    denom = (support + SUPPORT_FLOOR)[..., None]
    dspread = dvariance / denom  # the gradient of sum_i r_ij dev_ijh^2, (B, P, J, H)
    dsupport = dsupport - (dvariance * (variance - VARIANCE_FLOOR)).sum(axis=-1) / denom[..., 0]
    # dev = V - mean: the gradient reaching dev is 2 r dspread dev, and the mean gets minus
    # its sum over i, 2 dspread sum_i r_ij dev_ijh = 2 dspread mean SUPPORT_FLOOR exactly
    # (sum_i r_ij V_ijh = mean (S_j + SUPPORT_FLOOR)).
    dmean = dmean - 2 * SUPPORT_FLOOR * dspread * mean
    dsum = dmean / denom  # the gradient of sum_i r_ij V_ijh
    dsupport = dsupport - (dmean * mean).sum(axis=-1) / denom[..., 0]
    dev = votes - mean[:, :, :, None, :]  # (B, P, J, I, H)
    dvotes = dev * (2 * dspread)[:, :, :, None, :]
    dr = 0.5 * xp.einsum("bpjih,bpjih->bpji", dvotes, dev)  # sum_h dspread dev^2
    del dev
    dr += (votes @ dsum[..., None])[..., 0]  # sum_h dsum V
    dr += dsupport[..., None]  # S_j = sum_i r_ij
    dvotes += dsum[:, :, :, None, :]
    dvotes *= r[..., None]  # r (2 dspread dev + dsum)
    dassignments = dr * activations[:, :, None, :]
    dactivations = (dr * assignments).sum(axis=2)
    return dvotes, dassignments, dactivations, dbeta_u, dbeta_a


def e_step_forward(votes, mean, variance, log_activation, *, children=None):
    """E-STEP of Procedure 1: the assignments R (B, P, J, I) of every child to the parents
    that see it, from votes (B, P, J, I, H), the parents' mean and variance (B, P, J, H)
    and log activations (B, P, J), normalised in log space."""
    xp = get_array_module(votes)
    dev = votes - mean[:, :, :, None, :]  # (B, P, J, I, H)
    inv = 1 / variance
    log_p = -0.5 * (xp.einsum("bpjih,bpjh->bpji", dev * dev, inv)
                    + (LOG_2PI + xp.log(variance)).sum(axis=-1)[..., None])  # (B, P, J, I)
    log_ap = log_activation[..., None] + log_p
    # Any per-child constant cancels in R: the largest term over all of the child's parents
    # makes every exponential at most 1 and the largest exactly 1.
    shift = _same_child(children, "largest", log_ap.max(axis=2))  # (B, P, I)
    ap = xp.exp(log_ap - shift[:, :, None, :])
    assignments = ap / _same_child(children, "total", ap.sum(axis=2))[:, :, None, :]
    return assignments, EStepCache(votes, mean, inv, assignments, children)


def e_step_backward(dassignments, cache):
    """dvotes, dmean, dvariance, dlog_activation from dassignments (B, P, J, I)."""
    votes, mean, inv, assignments, children = cache
    xp = get_array_module(votes)
    R = assignments
    # R_e = exp(l_e) / sum of exp(l_f) over the f of e's child: dl = R (dR - sum R dR).
    per_child = _same_child(children, "total", (R * dassignments).sum(axis=2))  # (B, P, I)
    dlog_ap = R * (dassignments - per_child[:, :, None, :])  # (B, P, J, I)
    dlog_activation = dlog_ap.sum(axis=-1)
    scaled = votes - mean[:, :, :, None, :]
    scaled *= inv[:, :, :, None, :]  # (V - mean) / sigma^2, (B, P, J, I, H)
    # log p = -sum_h [(V - mean)^2 / sigma^2 + log sigma^2] / 2 (+ a constant)
    dvotes = -dlog_ap[..., None] * scaled
    dmean = -dvotes.sum(axis=3)
    dvariance = 0.5 * (-xp.einsum("bpjih,bpjih->bpjh", dvotes, scaled)
                       - dlog_ap.sum(axis=-1)[..., None] * inv)
    return dvotes, dmean, dvariance, dlog_activation


def uniform_assignments(votes, children=None):
    """R (B, P, J, I) before the first M-step: 1 / (the number of parents that see i)."""
    xp = get_array_module(votes)
    B, P, J, I, _ = votes.shape
    ones = xp.ones((B, P, J, I), dtype=votes.dtype)
    return ones / _same_child(children, "total", ones.sum(axis=2))[:, :, None, :]


def em_routing_forward(votes, activations, beta_u, beta_a, *, inverse_temperatures,
                       children=None, grad="full"):
    """Procedure 1: parents' poses (B, P, J, H) and activations (B, P, J) from votes
    (B, P, J, I, H) and child activations (B, P, I). One iteration per entry of
    inverse_temperatures (lambda of each M-step)."""
    if grad not in EM_GRADS:
        raise ValueError(f"EM routing grad must be one of {EM_GRADS}, not {grad!r}")
    iters = len(inverse_temperatures)
    if iters < 1:
        raise ValueError("EM routing needs at least one iteration")
    xp = get_array_module(votes)
    assignments = uniform_assignments(votes, children)
    m_caches, e_caches = [], []
    for t, lam in enumerate(inverse_temperatures):
        (mean, variance, log_a), m_cache = m_step_forward(
            votes, assignments, activations, beta_u, beta_a, inverse_temperature=lam)
        if grad == "full" or t == iters - 1:
            m_caches.append(m_cache)
        if t < iters - 1:
            assignments, e_cache = e_step_forward(votes, mean, variance, log_a,
                                                  children=children)
            e_caches.append(e_cache if grad == "full" else None)  # "last": none read back
    out_activations = xp.exp(log_a)
    return (mean, out_activations), EMRoutingCache(m_caches, e_caches, out_activations)


def em_routing_backward(dout, cache, paths=None):
    """dvotes, dactivations, dbeta_u, dbeta_a from dout = (dposes, dactivations): the last
    M-step first, then each E-step and the M-step before it, in reverse. `paths`, a dict,
    receives the norm of the votes' gradient along each path, {("m-step" | "e-step", t):
    norm} with t counted from 1: through M-step t's means and variances directly, and
    through E-step t's assignments (the paths "last" cuts)."""
    dposes, dout_activations = dout
    m_caches, e_caches = cache.m_steps, cache.e_steps
    xp = get_array_module(dposes)

    def record(kind, t, dvotes):
        if paths is not None:
            paths[kind, t] = float(xp.linalg.norm(dvotes))

    # An M-step's outputs feed its E-step only, and the last M-step's the routing's output.
    upstream = (dposes, None, dout_activations * cache.out_activations)  # a = exp(log a)
    totals = None
    first = len(e_caches) + 1 - len(m_caches)  # the first M-step kept, from 0 ("last": n-1)
    for t in range(len(m_caches) - 1, -1, -1):
        dvotes, dassignments, dact, dbeta_u, dbeta_a = m_step_backward(upstream, m_caches[t])
        record("m-step", first + t + 1, dvotes)
        grads = (dvotes, dact, dbeta_u, dbeta_a)
        totals = grads if totals is None else tuple(a + g for a, g in zip(totals, grads))
        if t == 0:  # the first M-step's R is the constant uniform one; "last" keeps one
            break
        dvotes, dmean, dvariance, dlog_a = e_step_backward(dassignments, e_caches[t - 1])
        record("e-step", t, dvotes)
        totals = (totals[0] + dvotes, *totals[1:])
        upstream = (dmean, dvariance, dlog_a)
    return totals
