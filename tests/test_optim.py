"""The optimizers: against their definitions, their state saved and refused, a few steps
lowering the loss on a fixed batch, the weight average apart from training."""
import numpy as np
import pytest

from minicaps import Adam, SGD, ExponentialDecay

from helpers import tiny_net


@pytest.mark.parametrize("make_optimizer", [
    lambda p: Adam(p, lr=1e-3),
    lambda p: Adam(p, schedule=ExponentialDecay(2e-3, rate=0.5, steps=10)),
    lambda p: SGD(p, lr=0.5, momentum=0.9),
])
def test_a_few_optimizer_steps_lower_the_loss_on_a_fixed_batch(make_optimizer):
    net = tiny_net()
    rng = np.random.default_rng(0)
    x, y = rng.random((8, 1, 16, 16)).astype(np.float32), rng.integers(0, 4, 8)
    optimizer = make_optimizer(net.params)
    first = float(net.loss(x, y))
    for _ in range(15):
        _, grads = net.loss_and_grads(x, y)
        optimizer.step(grads)
    assert float(net.loss(x, y)) < 0.8 * first


def test_optimizer_state_round_trips():
    net = tiny_net()
    x, y = np.random.default_rng(0).random((4, 1, 16, 16)), np.array([0, 1, 2, 3])
    opt = Adam(net.params, lr=1e-3)
    opt.step(net.loss_and_grads(x, y)[1])
    clone = tiny_net()
    clone.params.update({k: v.copy() for k, v in net.params.items()})
    opt2 = Adam(clone.params, lr=1e-3)
    opt2.load_state_dict({k: np.array(v) for k, v in opt.state_dict().items()})
    grads = net.loss_and_grads(x, y)[1]
    opt.step(grads)
    opt2.step({k: g.copy() for k, g in grads.items()})
    for name in net.params:
        np.testing.assert_array_equal(net.params[name], clone.params[name])


def test_optimizer_state_of_another_shape_is_refused():
    """A moment with its parameter's size in another shape (say a conv weight's in the
    layout before) would be read element by element by the flat update: refused."""
    from minicaps import MinicapsError
    p = {"w": np.zeros((2, 3, 3, 4), np.float32)}
    state = Adam(p).state_dict()
    state["m.w"] = np.moveaxis(state["m.w"], -1, 0)
    with pytest.raises(MinicapsError, match="m.w"):
        Adam(p).load_state_dict(state)


def test_adam_matches_its_definition():
    """One parameter, three steps, against Adam written from the paper's Algorithm 1."""
    p = {"w": np.array([1.0, -2.0])}
    opt = Adam(p, lr=0.1)
    m = v = np.zeros(2)
    w = np.array([1.0, -2.0])
    for t, g in enumerate([np.array([0.5, 1.0]), np.array([-0.2, 0.3]), np.array([1.0, 0.0])], 1):
        opt.step({"w": g})
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
        w = w - 0.1 * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
    np.testing.assert_allclose(p["w"], w, rtol=1e-9)


@pytest.mark.parametrize("make_optimizer", [
    lambda p, avg: Adam(p, lr=0.1, average_steps=avg),
    lambda p, avg: SGD(p, lr=0.1, momentum=0.9, average_steps=avg),
])
def test_weight_average_matches_its_definition_and_leaves_training_alone(make_optimizer):
    """The mean of the weights after steps 0..t while t < 3, then w_avg += (w - w_avg) / 3;
    the same run without an average takes bit-for-bit the same steps."""
    grads = np.random.default_rng(0).standard_normal((6, 2))
    p, plain = {"w": np.array([1.0, -2.0])}, {"w": np.array([1.0, -2.0])}
    opt, plain_opt = make_optimizer(p, 3), make_optimizer(plain, None)
    seen, want = [p["w"].copy()], p["w"].copy()
    for t, g in enumerate(grads, 1):
        opt.step({"w": g})
        plain_opt.step({"w": g})
        seen.append(p["w"].copy())
        want = np.mean(seen, axis=0) if t < 3 else want + (p["w"] - want) / 3
        np.testing.assert_allclose(opt.average.weights["w"], want, rtol=1e-12)
        assert np.array_equal(p["w"], plain["w"])
    training = p["w"].copy()
    with opt.averaged():
        assert np.array_equal(p["w"], opt.average.weights["w"])
    assert np.array_equal(p["w"], training) and not np.array_equal(training, want)
    assert "average.w" in opt.state_dict() and "average.w" not in plain_opt.state_dict()
