"""EMCapsNet as a whole: its hand-written gradients against finite differences (entry by
entry and along directions), its interface (the Network base's, as CapsNet's), the registry
and checkpoints, and a few optimizer steps on a fixed batch."""
import dataclasses

import numpy as np
import pytest

from minicaps import Adam
from minicaps.errors import MinicapsError
from minicaps.gradcheck import check_model, directional_check
from minicaps.nets.emcapsnet import EMCapsNet, EMCapsNetConfig
from minicaps.nets.kinds import build, config_from_dict, kind_of
from minicaps.ops.em_routing import VARIANCE_FLOOR
from minicaps.option import declared

from helpers import TOLERANCE, assert_network_gradients, batch


def small_em_net(*, seed=1, **fields):
    """A float64 EMCapsNet small enough for finite differences (conv1 3x3 to 4 channels,
    2 primary types, one convolutional capsule layer of 3 types, 3 classes) in the regime
    where finite differences resolve every gradient: the initial transforms spread the
    votes by about 1 (variances far above the floor, where the likelihood's curvature
    grows as 1 / variance), and lambda 0.01 keeps the class activations off the logistic's
    flat tails (there a gradient sinks below the loss's rounding)."""
    config = dict(in_shape=(1, 14, 12), n_classes=3, conv_channels=4, kernel_size=3,
                  conv_stride=1, primary_types=2, caps_types=(3,), caps_strides=(2,),
                  routing_iters=3, lambda_first=0.01, lambda_last=0.01, dtype="float64")
    return EMCapsNet(seed=seed, **{**config, **fields})


def smallest_variance(net, x):
    """The smallest variance any M-step of the network computes on x."""
    _, (*_, caps_caches, class_cache) = net._capsules(net._as_input(x))
    routing_caches = [cache[3] for cache in caps_caches] + [class_cache[1]]
    return min(step.variance.min() for cache in routing_caches for step in cache.m_steps)


# grad="last" is not the loss's gradient (the assignments depend on the parameters): its
# exactness is proven on the op (test_em_ops.py) and, whole, against PyTorch with the last
# assignments detached (test_em_torch_oracle.py).
EM_CASES = {
    "one capsule layer": {},
    "no coordinate addition": dict(coordinate_addition=False),
    "own class transforms": dict(share_class_transforms=False),
    # With three iterations this net's first layer routes some parent's whole weight to one
    # child (the variance falls to the floor); two keep it well above.
    "two capsule layers, stride 1 then 2": dict(in_shape=(1, 12, 12), caps_types=(3, 2),
                                                caps_strides=(1, 2), routing_iters=2),
    "3 channels, non-square, one iteration": dict(in_shape=(3, 11, 13), routing_iters=1),
    "two iterations, lambda annealed": dict(routing_iters=2, lambda_first=0.005,
                                            lambda_last=0.02),
    "kernel 2, two iterations, margin 0.9": dict(caps_kernel=2, routing_iters=2,
                                                 margin_start=0.9),
}


@pytest.mark.parametrize("case", sorted(EM_CASES))
def test_em_network_gradients(case):
    """Sampled single entries of every parameter, then each parameter along a direction
    and all together. The checker skips steps that cross a ReLU or spread-loss kink."""
    net = small_em_net(**EM_CASES[case])
    x, y = batch(net)
    # Away from the variance floor (see test_em_ops.assume_above_variance_floor). On nets
    # this small, four iterations, or three with the fields of kernel 2, route some parent
    # to a single child; the op table covers those (with hypothesis-drawn iterations up to
    # 4) and the PyTorch oracle the whole net.
    assert smallest_variance(net, x) > 10 * VARIANCE_FLOOR
    assert_network_gradients(net, x, y)


def test_the_checker_catches_a_wrong_em_gradient(monkeypatch):
    """The whole-network check must be able to fail: break the E-step's backward a little."""
    import minicaps.ops.em_routing as em
    net = small_em_net()
    x, y = batch(net)
    real = em.e_step_backward

    def off(dassignments, cache):
        dvotes, dmean, dvariance, dlog_a = real(dassignments, cache)
        return dvotes, dmean, 1.1 * dvariance, dlog_a

    monkeypatch.setattr(em, "e_step_backward", off)
    errors = check_model(net, x, y, max_entries=6)
    assert errors["convcaps1.w"] > 1e-4
    assert errors["conv1.w"] > 1e-4


def test_default_network_is_the_papers_small_one():
    """A=64, B=8, C=D=16 on 28 x 28 MNIST: about 68K parameters (the paper's count)."""
    config = EMCapsNetConfig()
    assert config.grids == [(12, 12), (5, 5), (3, 3)]
    assert 68_000 <= config.n_params() < 69_000
    options = {f.name for f in declared(EMCapsNetConfig)}
    internal = {"input_mean", "input_std", "dtype"}  # set by training, not options
    assert options == {f.name for f in dataclasses.fields(EMCapsNetConfig)} - internal


def test_own_class_transforms_that_are_all_equal_are_the_shared_ones():
    """Each capsule of the last grid with its own class transform, every position given its
    type's shared one: the same activations; changing one position's changes them."""
    shared = small_em_net()
    own = small_em_net(share_class_transforms=False)
    (gh, gw), T = shared.config.grids[-1], shared.config.types[-1]
    assert own.params["class.w"].shape == (gh * gw * T, *shared.params["class.w"].shape[1:])
    tiled = np.tile(shared.params["class.w"], (gh * gw, 1, 1, 1))
    own.params.update({**shared.params, "class.w": tiled})
    x, _ = batch(shared)
    np.testing.assert_allclose(own.predict(x), shared.predict(x), rtol=1e-12)
    for capsule in (0, len(tiled) - 1):  # the first and last positions'
        own.params["class.w"] = tiled.copy()
        own.params["class.w"][capsule] += 0.5
        assert np.abs(own.predict(x) - shared.predict(x)).max() > 1e-6


def test_grads_have_the_params_keys_shapes_and_dtype():
    net = EMCapsNet(in_shape=(1, 20, 20), n_classes=4, conv_channels=8, primary_types=4,
                    caps_types=(4, 4))
    x, y = np.random.default_rng(0).random((3, 1, 20, 20)), np.array([0, 1, 3])
    loss, grads = net.loss_and_grads(x, y)
    assert loss.dtype == np.float32
    assert list(grads) == list(net.params)
    for name, g in grads.items():
        assert g.shape == net.params[name].shape and g.dtype == np.float32, name
    a = net.predict(x)
    assert a.shape == (3, 4) and ((a > 0) & (a < 1)).all()


def test_a_few_adam_steps_lower_the_loss_on_a_fixed_batch():
    net = small_em_net()
    rng = np.random.default_rng(0)
    x, y = rng.random((8, *net.config.in_shape)), np.arange(8) % 3
    net.set_training_progress(0.5)
    opt = Adam(net.params, lr=1e-2)
    first = float(net.loss(x, y))
    for _ in range(10):
        _, grads = net.loss_and_grads(x, y)
        opt.step(grads)
    assert float(net.loss(x, y)) < 0.8 * first


def test_the_margin_follows_training_progress():
    net = small_em_net()
    x, y = batch(net)
    assert net.margin == 0.2
    losses = []
    for progress in (0.0, 0.5, 1.0):
        net.set_training_progress(progress)
        losses.append(float(net.loss(x, y)))
    assert net.margin == 0.9
    assert losses[0] <= losses[1] <= losses[2] and losses[0] < losses[2]


def test_kind_registry_and_config_round_trip():
    config = small_em_net().config
    assert kind_of(config) == "em"
    fields = {k: list(v) if isinstance(v, tuple) else v
              for k, v in dataclasses.asdict(config).items()}  # as JSON gives them back
    assert config_from_dict("em", fields) == config
    net = build(config, seed=3)
    assert isinstance(net, EMCapsNet)
    again = build(config, {n: p.copy() for n, p in net.params.items()})
    x, y = batch(net)
    assert float(again.loss(x, y)) == float(net.loss(x, y))


@pytest.mark.parametrize("fields, message", [
    (dict(routing_grad="some"), "routing_grad"),
    (dict(caps_types=(4, 4), caps_strides=(2,)), "caps_types"),
    (dict(in_shape=(1, 10, 10)), "too small"),
    (dict(lambda_first=0), "inverse temperatures"),
    (dict(margin_end=1.5), "margins"),
])
def test_bad_configurations_are_refused_in_one_line(fields, message):
    with pytest.raises(MinicapsError, match=message):
        EMCapsNetConfig(**fields)


def test_checkpoint_round_trip(tmp_path):
    """A checkpoint of an EMCapsNet stores its kind and config and rebuilds the same net."""
    from minicaps.training import checkpoint
    net = small_em_net()
    opt = Adam(net.params)
    ckpt = checkpoint.Checkpoint(params=net.params, optimizer=opt.state_dict(), epoch=1,
                                 rng_state={}, model_config=net.config, train_config={},
                                 classes=["a", "b", "c"])
    checkpoint.save(tmp_path / "em.npz", ckpt)
    loaded = checkpoint.load(tmp_path / "em.npz")
    assert loaded.model_config == net.config
    again = build(loaded.model_config, loaded.params)
    x, y = batch(net)
    np.testing.assert_array_equal(again.predict(x), net.predict(x))


def test_the_default_network_gradients_along_directions_on_bundled_images():
    """The paper's small network itself, at its initialisation, in float64, on two images
    of the bundled MNIST sample: every parameter along a direction and all together."""
    from minicaps.data.bundled import BUNDLED
    with np.load(BUNDLED) as f:
        x, y = f["train_x"][:2] / 255.0, f["train_y"][:2]
    net = EMCapsNet(dtype="float64", seed=0)
    assert smallest_variance(net, x) > 10 * VARIANCE_FLOOR
    directional = directional_check(net, x, y)
    assert set(directional) == set(net.params) | {"*"}
    assert max(directional.values()) < TOLERANCE, directional


def test_train_model_em_trains_resumes_and_evaluates(tmp_path):
    """`minicaps train --model em` end to end on a slice of the bundled sample: the EM
    options reach the network, the spread loss's margin follows training's progress, the
    run resumes, and evaluate rebuilds the network from its checkpoint."""
    from click.testing import CliRunner

    from minicaps.cli.main import main
    from minicaps.training import checkpoint

    out = tmp_path / "em"
    run = CliRunner().invoke(main, ["train", "--model", "em", "--limit", "30", "--epochs", "1",
                                    "--batch-size", "16", "--em-caps-types", "4,4",
                                    "--em-margin-end", "0.5", "--out", str(out)])
    assert run.exit_code == 0, run.output
    ckpt = checkpoint.load(out / "last.npz")
    assert ckpt.model_config.caps_types == (4, 4) and ckpt.model_config.margin_end == 0.5
    run = CliRunner().invoke(main, ["train", "--out", str(out), "--resume", "--epochs", "2"])
    assert run.exit_code == 0 and checkpoint.load(out / "last.npz").epoch == 2, run.output
    run = CliRunner().invoke(main, ["evaluate", str(out / "last.npz")])
    assert run.exit_code == 0 and "accuracy" in run.output, run.output
    picture = tmp_path / "assignments.png"
    run = CliRunner().invoke(main, ["show", "couplings", str(out / "last.npz"), "--out",
                                    str(picture)])
    assert run.exit_code == 0 and picture.is_file(), run.output
    run = CliRunner().invoke(main, ["show", "reconstructions", str(out / "last.npz"),
                                    "--out", str(tmp_path / "r.png")])
    assert run.exit_code == 1 and "EM routing" in run.output, run.output
    refused = CliRunner().invoke(main, ["train", "--model", "em", "--conv-channels", "8",
                                        "--out", str(tmp_path / "x")])
    assert refused.exit_code != 0 and "not an option of --model em" in refused.output


def test_the_spread_margin_follows_training_progress():
    net = small_em_net()
    assert net.margin == net.config.margin_start  # before training says anything
    net.set_training_progress(0.5)
    assert net.config.margin_start < net.margin < net.config.margin_end
    net.set_training_progress(1.0)
    assert net.margin == pytest.approx(net.config.margin_end)


def test_the_assignment_map_shows_the_class_capsules_assignments():
    """A row per class, a tile per capsule type of the last grid; the first M-step's
    assignments are uniform (one flat colour), the last's are not."""
    from minicaps.tools.show import assignment_map
    net = small_em_net()
    x = np.random.default_rng(1).random(net.config.in_shape).astype(np.float32)
    gh, gw = net.config.grids[-1]
    last = np.asarray(assignment_map(net, x))
    zoom, gap = 4, 3
    assert last.shape[:2] == (net.config.n_classes * (gh * zoom + gap) - gap,
                              net.config.types[-1] * gw * zoom)
    assert len(np.unique(last.reshape(-1, 3), axis=0)) > 2
    first = np.asarray(assignment_map(net, x, iteration=0))[:gh * zoom]
    assert len(np.unique(first.reshape(-1, 3), axis=0)) == 1
    with pytest.raises(MinicapsError, match="outside the network's"):
        assignment_map(net, x, iteration=net.config.routing_iters)


def test_routing_gradient_paths_name_every_path_and_last_keeps_only_the_last_m_step():
    x = np.random.default_rng(2).random((4, 1, 20, 20)).astype(np.float32)
    y = np.array([0, 1, 2, 0])
    shape = dict(in_shape=(1, 20, 20), n_classes=3, routing_iters=3, conv_channels=8,
                 primary_types=2, caps_types=(4, 4))
    full = EMCapsNet(routing_grad="full", **shape).routing_gradient_paths(x, y)
    last = EMCapsNet(routing_grad="last", **shape).routing_gradient_paths(x, y)
    layers = ("convcaps1", "convcaps2", "class")
    assert set(full) == {(layer, kind, t) for layer in layers
                         for kind, ts in (("m-step", (1, 2, 3)), ("e-step", (1, 2)))
                         for t in ts}
    assert set(last) == {(layer, "m-step", 3) for layer in layers}
    assert all(norm > 0 for norm in full.values())
    # The class layer's last M-step gets the same upstream gradient in both modes.
    assert last["class", "m-step", 3] == pytest.approx(full["class", "m-step", 3], rel=1e-6)
