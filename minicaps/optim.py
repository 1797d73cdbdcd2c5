"""Optimizers over a params dict: they update the arrays in place, key by key.

Both keep their state as a dict of arrays (`state_dict`/`load_state_dict`) so a checkpoint
can store it and a resumed run continues exactly where it stopped. Either can also keep a
running average of the weights (`average_steps`), the network to score: see WeightAverage.
"""
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

from .backend import device_of, get_array_module, to_device
from .errors import MinicapsError
from .fast import dispatch

AVERAGE = "average"  # the state_dict prefix of the weight average: "average.<param name>"


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


class Optimizer:
    """What Adam and SGD share: the params dict they update, a step count, the schedule,
    the optional weight average."""

    def __init__(self, params, lr, schedule, average_steps=None):
        # Updates go through flat views of the parameters: those must not be copies.
        for name, p in params.items():
            if not p.flags.c_contiguous:
                raise ValueError(f"parameter {name} is not a contiguous array")
        self.params = params
        self.schedule = schedule or constant(lr)
        self.step_count = 0
        self.average = WeightAverage(params, average_steps) if average_steps else None

    @property
    def lr(self):
        return self.schedule(self.step_count)

    def step(self, grads):
        """One update of every parameter from `grads` (same keys), then of the average."""
        lr = self.lr
        self.step_count += 1
        self._update(grads, lr)
        if self.average is not None:
            self.average.update(self.params, self.step_count)

    def _update(self, grads, lr):
        raise NotImplementedError

    def _zeros(self):
        return {name: get_array_module(p).zeros_like(p) for name, p in self.params.items()}

    def _buffers(self):
        """{prefix: {param name: array}} of the per-parameter state to checkpoint."""
        own = self._update_buffers()
        return own if self.average is None else {**own, AVERAGE: self.average.weights}

    def _update_buffers(self):
        """{prefix: {param name: array}} of the update rule's own state."""
        raise NotImplementedError

    def averaged(self):
        """A block within which the parameters hold the weight average (if one is kept);
        the training weights are put back after it."""
        if self.average is None:
            return nullcontext()
        return weights_in(self.params, self.average.weights)

    def state_dict(self):
        state = {"step": self.step_count}
        for prefix, buffers in self._buffers().items():
            state.update({f"{prefix}.{n}": a for n, a in buffers.items()})
        return state

    def load_state_dict(self, state):
        self.step_count = int(state["step"])
        for prefix, buffers in self._buffers().items():
            for name, p in self.params.items():
                array = state[f"{prefix}.{name}"]
                # The update works on flat views: a buffer of the right size in another
                # shape (a layout not converted) would be taken silently, element by element.
                if tuple(array.shape) != tuple(p.shape):
                    raise MinicapsError(f"optimizer state {prefix}.{name} is {tuple(array.shape)}, "
                                        f"its parameter {tuple(p.shape)}")
                buffers[name] = to_device(array, device_of(p)).astype(p.dtype)


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction; `schedule` maps the step to a learning rate."""

    def __init__(self, params, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, schedule=None,
                 average_steps=None):
        super().__init__(params, lr, schedule, average_steps)
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.m, self.v = self._zeros(), self._zeros()

    def _update_buffers(self):
        return {"m": self.m, "v": self.v}

    def _update(self, grads, lr):
        t = self.step_count
        # Bias correction folded into the step size: one scalar instead of two array passes.
        step_size = lr * (1 - self.beta2 ** t) ** 0.5 / (1 - self.beta1 ** t)
        eps = self.eps * (1 - self.beta2 ** t) ** 0.5
        for name, p in self.params.items():  # the arithmetic: minicaps/ops/adam.py
            dispatch.adam_update(p, grads[name], self.m[name], self.v[name],
                                 beta1=self.beta1, beta2=self.beta2, step_size=step_size,
                                 eps=eps)


class SGD(Optimizer):
    """Plain stochastic gradient descent, with optional (heavy-ball) momentum."""

    def __init__(self, params, lr=0.01, momentum=0.0, schedule=None, average_steps=None):
        super().__init__(params, lr, schedule, average_steps)
        self.momentum = momentum
        self.velocity = self._zeros()

    def _update_buffers(self):
        return {"velocity": self.velocity}

    def _update(self, grads, lr):
        for name, p in self.params.items():
            if self.momentum:
                vel = self.velocity[name]
                vel *= self.momentum
                vel += grads[name]
                p -= lr * vel
            else:
                p -= lr * grads[name]


class WeightAverage:
    """A running average of the weights after each step (Polyak averaging): the mean of all
    of them until `steps` steps have been taken, then an exponential average whose weights
    fall by 1/e every `steps` steps. It smooths the step-to-step noise that late epochs
    still have; training itself never reads it (README, "Logo frames")."""

    def __init__(self, params, steps):
        if steps < 1:
            raise ValueError(f"a weight average needs at least 1 step, not {steps}")
        self.steps = steps
        self.weights = {name: p.copy() for name, p in params.items()}  # step 0 counts too

    @staticmethod
    def steps_for(epochs, steps_per_epoch):
        """The `steps` of an average over about `epochs` epochs (at least 1)."""
        return max(1, round(epochs * steps_per_epoch))

    def update(self, params, step):
        """Take in the weights after step `step` (1, 2, ...)."""
        rate = 1.0 / min(step + 1, self.steps)
        for name, p in params.items():
            avg = self.weights[name]
            avg += rate * (p - avg)


@contextmanager
def weights_in(params, weights):
    """Within the block the arrays of `params` hold `weights` (same keys); their own values
    are put back after it, in place, so whatever holds the arrays sees the change."""
    own = {name: p.copy() for name, p in params.items()}
    try:  # inside: an interruption half-way through the copies is undone too
        for name, p in params.items():
            p[...] = weights[name]
        yield
    finally:
        for name, p in params.items():
            p[...] = own[name]
