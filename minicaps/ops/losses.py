"""Margin loss (Eq. 4) and reconstruction loss. Both are means over the batch."""
from ..backend import get_array_module

M_PLUS, M_MINUS, LAMBDA = 0.9, 0.1, 0.5
RECONSTRUCTION_WEIGHT = 0.0005  # the paper scales the sum of squared errors down by this


def one_hot(y, n_classes, dtype):
    xp = get_array_module(y)
    return (xp.arange(n_classes)[None, :] == y[:, None]).astype(dtype)


def margin_loss_forward(lengths, y):
    """L = sum_k T_k max(0, m+ - |v_k|)^2 + lambda (1 - T_k) max(0, |v_k| - m-)^2 (Eq. 4),
    summed over the classes k and averaged over the batch.

    lengths (B, J), y (B,) ints. The loss is not differentiable where |v_k| = m+ (true
    class) or m- (other classes); there the gradient is taken as 0 (the flat side).
    """
    xp = get_array_module(lengths)
    B, J = lengths.shape
    t = one_hot(y, J, lengths.dtype)
    present = xp.maximum(0, M_PLUS - lengths)  # (B, J)
    absent = xp.maximum(0, lengths - M_MINUS)
    per_class = t * present ** 2 + LAMBDA * (1 - t) * absent ** 2
    return per_class.sum() / B, (t, present, absent)


def margin_loss_backward(dloss, cache):
    t, present, absent = cache
    B = t.shape[0]
    return dloss * (-2 * t * present + 2 * LAMBDA * (1 - t) * absent) / B


def reconstruction_loss_forward(recon, target):
    """0.0005 * sum of squared errors, averaged over the batch. recon, target (B, N)."""
    diff = recon - target
    B = recon.shape[0]
    return RECONSTRUCTION_WEIGHT * (diff * diff).sum() / B, diff


def reconstruction_loss_backward(dloss, cache):
    diff = cache
    return dloss * (2 * RECONSTRUCTION_WEIGHT / diff.shape[0]) * diff


def softmax_cross_entropy_forward(logits, y):
    """-log softmax(logits)[y], averaged over the batch (the CNN baseline's loss).
    logits (B, J), y (B,) ints. Smooth everywhere."""
    xp = get_array_module(logits)
    B, J = logits.shape
    shifted = logits - logits.max(axis=1, keepdims=True)  # exp cannot overflow
    log_probs = shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))
    t = one_hot(y, J, logits.dtype)
    return -(t * log_probs).sum() / B, (xp.exp(log_probs), t)


def softmax_cross_entropy_backward(dloss, cache):
    probs, t = cache
    return dloss * (probs - t) / probs.shape[0]


# The spread loss's margin: the paper starts it at 0.2 and grows it linearly to 0.9 over
# training, so that early on, while every activation sits near the others, fewer classes
# lie inside the margin and the network is not pushed to separate all of them at once.
SPREAD_MARGIN_START, SPREAD_MARGIN_END = 0.2, 0.9


def spread_margin(progress, start=SPREAD_MARGIN_START, end=SPREAD_MARGIN_END):
    """The spread loss's margin at `progress` (0 at the start of training, 1 at its end)."""
    p = min(max(float(progress), 0.0), 1.0)
    return (1 - p) * start + p * end  # exactly start at 0 and end at 1


def spread_loss_forward(activations, y, *, margin):
    """Spread loss (Matrix Capsules with EM Routing, Section 3.1):
    L = sum over the classes i != t of max(0, m - (a_t - a_i))^2, averaged over the batch.

    activations (B, J), y (B,) ints. Not differentiable where a_t - a_i = m; there the
    gradient is taken as 0 (the flat side)."""
    xp = get_array_module(activations)
    B, J = activations.shape
    t = one_hot(y, J, activations.dtype)
    target = (activations * t).sum(axis=1, keepdims=True)  # a_t (B, 1)
    hinge = xp.maximum(0, margin - (target - activations)) * (1 - t)  # (B, J), 0 at i = t
    return (hinge * hinge).sum() / B, (t, hinge)


def spread_loss_backward(dloss, cache):
    t, hinge = cache
    g = 2 * hinge / t.shape[0]  # d/da_i for i != t; a_t gets minus their sum
    return dloss * (g - t * g.sum(axis=1, keepdims=True))
