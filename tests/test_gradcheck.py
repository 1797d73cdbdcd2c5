"""`minicaps gradcheck` on the configurations its options describe: it passes on every one
(the engine is correct), fails where one backward is off by a few percent, and says so when
nothing can be measured. The paper's full-width networks are marked `heavy`."""
import importlib
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minicaps.cli.main import main
from minicaps.cli.tools import FAIL, PASS, UNCHECKED

README = Path(__file__).resolve().parents[1] / "README.md"
TINY = ["--in-shape", "1,12,12", "--n-classes", "3", "--conv-channels", "4",
        "--kernel-size", "3", "--primary-types", "2", "--primary-dim", "4", "--class-dim", "5"]
# Backward functions that carry the whole loss's gradient to some parameter, as
# "module:name" of the module the network calls them from: a few percent off in any of
# them must show.
BREAKABLE = {"capsnet": ("minicaps.fast.dispatch:routing_backward",
                         "minicaps.fast.dispatch:predictions_backward",
                         "minicaps.nets.capsnet:length_backward"),
             "cnn": ("minicaps.nets.cnn:softmax_cross_entropy_backward",
                     "minicaps.nets.cnn:linear_backward")}


def run(*args):
    result = CliRunner().invoke(main, ["gradcheck", *map(str, args)])
    assert "Traceback" not in result.output, result.output
    return result


def option(name, value):
    return [f"--{name}", ",".join(map(str, value)) if isinstance(value, tuple) else str(value)]


@st.composite
def capsnet_options(draw, full_width=False):
    """Options of a capsule network the CLI accepts: at the paper's widths (256 channels,
    32 types of 8 dimensions, 16-dimensional class capsules), or small ones."""
    k = draw(st.integers(1, 5 if not full_width else 9), label="kernel")
    stride, primary_stride = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    least = (k - 1) * stride + k  # conv1's output must hold one primary capsule kernel
    size = st.integers(least, least + 4)
    widths = (dict(conv_channels=256, primary_types=32, primary_dim=8, class_dim=16)
              if full_width else
              dict(conv_channels=draw(st.integers(1, 6)), primary_types=draw(st.integers(1, 3)),
                   primary_dim=draw(st.integers(1, 4)), class_dim=draw(st.integers(1, 5))))
    values = dict(in_shape=(draw(st.integers(1, 3)), draw(size), draw(size)),
                  n_classes=draw(st.integers(1, 4)), kernel_size=k, conv_stride=stride,
                  primary_stride=primary_stride, routing_iters=draw(st.integers(1, 5)),
                  routing_grad=draw(st.sampled_from(["full", "last"])),
                  contrast_window=draw(st.sampled_from([0, 3, 5])), **widths)
    args = [a for name, value in values.items() for a in option(name.replace("_", "-"), value)]
    flags = ["--share-transforms", "--no-reconstruction", "--none-capsule"]
    return args + [flag for flag in flags if draw(st.booleans(), label=flag)]


@st.composite
def cnn_options(draw, full_width=False):
    """Options of the baseline CNN the CLI accepts, at the paper's widths or small ones."""
    channels = (256, 256, 128) if full_width else tuple(
        draw(st.lists(st.integers(1, 4), min_size=1, max_size=3), label="channels"))
    hidden = (328, 192) if full_width else tuple(
        draw(st.lists(st.integers(1, 6), min_size=1, max_size=2), label="hidden"))
    side = st.integers(4, 28 if full_width else 12)
    values = dict(model="cnn", in_shape=(draw(st.integers(1, 3)), draw(side), draw(side)),
                  n_classes=draw(st.integers(2, 4)), cnn_channels=channels,
                  cnn_kernel_size=draw(st.sampled_from([1, 3, 5])), cnn_hidden=hidden,
                  contrast_window=draw(st.sampled_from([0, 3])))
    return [a for name, value in values.items() for a in option(name.replace("_", "-"), value)]


def off_by_a_few_percent(real, changed):
    """`real` with every gradient it returns 3 % too large; changed[0] records whether
    that changed anything (a gradient that is 0 stays 0, and nothing can show it)."""
    def broken(*args, **kwargs):
        out = real(*args, **kwargs)
        grads = out if isinstance(out, tuple) else (out,)
        changed[0] = changed[0] or any(g is not None and bool(g.any()) for g in grads)
        grads = tuple(None if g is None else 1.03 * g for g in grads)
        return grads if isinstance(out, tuple) else grads[0]
    return broken


def check_verdict(args, kind, broken, entries=3):
    """Run gradcheck, with `broken` (a name of BREAKABLE[kind]) off by 3 % if given, and
    assert the verdict: FAIL where the broken backward changed a gradient, pass for the
    engine as it is."""
    changed = [False]
    with pytest.MonkeyPatch.context() as patch:
        if broken:
            module_name, name = broken.split(":")
            module = importlib.import_module(module_name)
            patch.setattr(module, name, off_by_a_few_percent(getattr(module, name), changed))
        result = run(*args, "--entries", entries)
    if changed[0]:
        assert result.exit_code == FAIL and "FAIL" in result.output, (" ".join(args), broken,
                                                                      result.output)
    else:
        assert result.exit_code == PASS and "pass" in result.output, (" ".join(args), broken,
                                                                      result.output)
    return result


SETTINGS = dict(deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@settings(max_examples=40, **SETTINGS)
@given(data=st.data())
def test_gradcheck_passes_on_every_small_configuration_and_fails_a_broken_backward(data):
    kind = data.draw(st.sampled_from(["capsnet", "cnn"]), label="kind")
    args = data.draw(capsnet_options() if kind == "capsnet" else cnn_options(), label="args")
    broken = data.draw(st.sampled_from([None, *BREAKABLE[kind]]), label="broken")
    check_verdict(args, kind, broken)


@pytest.mark.heavy
@pytest.mark.parametrize("kind", ["capsnet", "cnn"])
@settings(max_examples=3, **SETTINGS)
@given(data=st.data())
def test_gradcheck_on_the_papers_widths(kind, data):
    args = data.draw((capsnet_options if kind == "capsnet" else cnn_options)(full_width=True),
                     label="args")
    broken = data.draw(st.sampled_from([None, BREAKABLE[kind][0]]), label="broken")
    check_verdict([*args, "--batch-size", 1], kind, broken, entries=2)


@pytest.mark.heavy
def test_gradcheck_with_no_option_passes_on_the_papers_network():
    result = run()
    assert result.exit_code == PASS, result.output
    assert "8,215,568" in result.output and "pass" in result.output


def test_the_readmes_gradcheck_example_passes():
    lines = [line for line in README.read_text().splitlines()
             if line.startswith("minicaps gradcheck")]
    assert lines, "the README shows no gradcheck command"
    for line in lines:
        args = shlex.split(line.split("#")[0])[2:]
        result = run(*args)
        assert result.exit_code == PASS, (line, result.output)


def test_a_broken_backward_fails_on_the_small_network(monkeypatch):
    import minicaps.nets.capsnet as capsnet
    changed = [False]
    monkeypatch.setattr(capsnet, "relu_backward",
                        off_by_a_few_percent(capsnet.relu_backward, changed))
    result = run(*TINY, "--entries", 3)
    assert changed[0] and result.exit_code == FAIL
    assert "FAIL" in result.output


def test_routing_grad_last_is_checked_against_the_function_it_is_the_gradient_of(
        monkeypatch):
    """With --routing-grad last the backward is the exact gradient of the loss with the last
    iteration's couplings held fixed: the check passes it there, and fails the same backward
    on a network that routes with full gradients."""
    from minicaps.fast import dispatch
    args = [*TINY, "--routing-iters", 3, "--entries", 3]
    assert run(*args, "--routing-grad", "last").exit_code == PASS
    real = dispatch.routing_forward
    monkeypatch.setattr(dispatch, "routing_forward",
                        lambda u_hat, *, iters, grad: real(u_hat, iters=iters, grad="last"))
    result = run(*args, "--routing-grad", "full")
    assert result.exit_code == FAIL and "FAIL" in result.output


def test_nothing_measurable_is_said_in_one_line_and_its_own_exit_status(monkeypatch):
    """A network whose kinks all flip at every step (a stand-in for one with a kink on
    every path) leaves nothing to measure: neither a pass nor a failure."""
    from minicaps.nets.capsnet import CapsNet
    real = CapsNet._kinks
    flips = iter(range(10 ** 9))

    def flipping(self, caches):
        kinks = real(self, caches)
        kinks["conv1 ReLU"] = kinks["conv1 ReLU"] ^ bool(next(flips) % 2)
        return kinks

    monkeypatch.setattr(CapsNet, "_kinks", flipping)
    result = run(*TINY, "--no-reconstruction", "--entries", 2)
    assert result.exit_code == UNCHECKED, result.output
    lines = result.stderr.strip().splitlines()
    assert any(line.startswith("minicaps: conv1.w: nothing could be checked;") and
               "conv1 ReLU" in line for line in lines), result.stderr
    assert len(lines) == len(result.stdout.strip().splitlines()) - 2  # one per parameter
    assert "UNCHECKED" in result.stdout and "pass" not in result.stdout


def test_capsule_options_are_refused_for_the_cnn():
    result = run("--model", "cnn", "--routing-iters", 2)
    assert result.exit_code == 1
    assert "--routing-iters" in result.output and "--model cnn" in result.output


EM = ["--model", "em", "--in-shape", "1,20,20", "--n-classes", "4", "--entries", 3]


def test_gradcheck_checks_the_em_network_and_catches_a_broken_em_backward(monkeypatch):
    import minicaps.nets.emcapsnet as emcapsnet
    result = run(*EM)
    assert result.exit_code == PASS and "class.beta_a" in result.output, result.output
    changed = [False]
    monkeypatch.setattr(emcapsnet, "em_routing_backward",
                        off_by_a_few_percent(emcapsnet.em_routing_backward, changed))
    result = run(*EM)
    assert changed[0] and result.exit_code == FAIL and "FAIL" in result.output, result.output
    refused = run(*EM, "--conv-channels", 8)
    assert refused.exit_code != 0 and "not an option of --model em" in refused.output
