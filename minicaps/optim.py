"""Optimizers over a params dict: they update the arrays in place, key by key.

Both keep their state as a dict of arrays (`state_dict`/`load_state_dict`) so a checkpoint
can store it and a resumed run continues exactly where it stopped.
"""
from dataclasses import dataclass

from .backend import device_of, get_array_module, to_device


@dataclass(frozen=True)
class ExponentialDecay:
    """lr_t = lr * rate ** (t / steps): the paper's exponentially decaying learning rate
    (its code used rate 0.96 every 2000 steps)."""
    lr: float
    rate: float = 0.96
    steps: int = 2000

    def __call__(self, step):
        return self.lr * self.rate ** (step / self.steps)


def constant(lr):
    return ExponentialDecay(lr, rate=1.0)


class Adam:
    """Adam (Kingma & Ba) with bias correction; `schedule` maps the step to a learning rate."""

    def __init__(self, params, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, schedule=None):
        self.params = params
        self.schedule = schedule or constant(lr)
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.step_count = 0
        self.m = {name: get_array_module(p).zeros_like(p) for name, p in params.items()}
        self.v = {name: get_array_module(p).zeros_like(p) for name, p in params.items()}

    @property
    def lr(self):
        return self.schedule(self.step_count)

    def step(self, grads):
        lr = self.lr
        self.step_count += 1
        t = self.step_count
        # Bias correction folded into the step size: one scalar instead of two array passes.
        step_size = lr * (1 - self.beta2 ** t) ** 0.5 / (1 - self.beta1 ** t)
        eps = self.eps * (1 - self.beta2 ** t) ** 0.5
        for name, p in self.params.items():
            xp = get_array_module(p)
            g, m, v = grads[name], self.m[name], self.v[name]
            m *= self.beta1
            m += (1 - self.beta1) * g
            v *= self.beta2
            v += (1 - self.beta2) * (g * g)
            p -= step_size * m / (xp.sqrt(v) + eps)

    def state_dict(self):
        state = {"step": self.step_count}
        state.update({f"m.{n}": a for n, a in self.m.items()})
        state.update({f"v.{n}": a for n, a in self.v.items()})
        return state

    def load_state_dict(self, state):
        self.step_count = int(state["step"])
        for name, p in self.params.items():
            self.m[name] = to_device(state[f"m.{name}"], device_of(p)).astype(p.dtype)
            self.v[name] = to_device(state[f"v.{name}"], device_of(p)).astype(p.dtype)


class SGD:
    """Plain stochastic gradient descent, with optional (heavy-ball) momentum."""

    def __init__(self, params, lr=0.01, momentum=0.0, schedule=None):
        self.params = params
        self.schedule = schedule or constant(lr)
        self.momentum = momentum
        self.step_count = 0
        self.velocity = {name: get_array_module(p).zeros_like(p) for name, p in params.items()}

    @property
    def lr(self):
        return self.schedule(self.step_count)

    def step(self, grads):
        lr = self.lr
        self.step_count += 1
        for name, p in self.params.items():
            if self.momentum:
                vel = self.velocity[name]
                vel *= self.momentum
                vel += grads[name]
                p -= lr * vel
            else:
                p -= lr * grads[name]

    def state_dict(self):
        state = {"step": self.step_count}
        state.update({f"velocity.{n}": a for n, a in self.velocity.items()})
        return state

    def load_state_dict(self, state):
        self.step_count = int(state["step"])
        for name, p in self.params.items():
            self.velocity[name] = to_device(state[f"velocity.{name}"],
                                            device_of(p)).astype(p.dtype)
