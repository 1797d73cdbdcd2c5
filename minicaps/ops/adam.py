"""Adam's update of one parameter (Kingma & Ba, Algorithm 1), the arithmetic that
minicaps.optim.Adam runs on every parameter at every step."""
from ..backend import get_array_module


def adam_update(p, g, m, v, *, beta1, beta2, step_size, eps):
    """Update p, m, v in place from the gradient g:

        m = beta1 m + (1 - beta1) g,   v = beta2 v + (1 - beta2) g^2,
        p = p - step_size m / (sqrt(v) + eps),

    with the bias correction folded into step_size and eps by the caller. Each line
    rounds as it is written, in this order (the fused kernel does the same)."""
    xp = get_array_module(p)
    m *= beta1
    m += (1 - beta1) * g
    v *= beta2
    v += (1 - beta2) * (g * g)
    p -= step_size * m / (xp.sqrt(v) + eps)
