"""Commands that measure and check a configuration without training it: bench, plan,
gradcheck. Registered on the `minicaps` group by cli.py."""
import dataclasses
import json
from pathlib import Path

import click

from ..tools.bench import benchmark, step_rates
from .options import declared_options, network_config, network_options, with_options
from ..gradcheck import check_network, network_under_check
from ..errors import MinicapsError
from ..nets.kinds import KIND_NAMES, KINDS, build, kind_of
from ..option import declared
from ..tools.plan import available_bytes, plan
from ..training.config import CAPSULES_ONLY, TrainConfig, refuse_other_kinds_options

GIB, MIB = 2 ** 30, 2 ** 20


def _device(gpu):
    return "gpu" if gpu else "cpu"


# bench, plan and gradcheck take every network kind as training does: its --model, and the
# --cnn-* and --em-* options, as TrainConfig declares them (gradcheck also the
# none-of-the-above capsule, which plan's memory model does not count).
_OTHER_KINDS = [f for f in declared(TrainConfig)
                if f.metadata.get("kinds", CAPSULES_ONLY) != CAPSULES_ONLY
                and "network_field" in f.metadata and f.name != "contrast_window"]
_TRAIN_OPTIONS = declared_options(TrainConfig)
_model_options = with_options([_TRAIN_OPTIONS["model"]]
                              + [_TRAIN_OPTIONS[f.name] for f in _OTHER_KINDS])
_none_capsule_option = with_options([_TRAIN_OPTIONS["none_capsule"]])
_SHARED = ("in_shape", "n_classes", "contrast_window")  # options of every kind


def _kind_config(ctx, options):
    """The network config of the options of network_options and _model_options (removed
    from them): a CapsNet's, or with --model cnn or em that kind's (its --cnn-* or --em-*
    options and the shared ones), refusing an option given for another kind (it would be
    ignored)."""
    model = options.pop("model")
    others = {f.name: options.pop(f.name) for f in _OTHER_KINDS}
    none_capsule = options.pop("none_capsule", False)
    values = {**options, **others, "none_capsule": none_capsule}
    refuse_other_kinds_options(model, {
        name: value for name, value in values.items()
        if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE})
    if model == "capsnet":
        return dataclasses.replace(network_config(options), none_capsule=none_capsule)
    network = {f.metadata["network_field"]: others[f.name] for f in _OTHER_KINDS
               if model in f.metadata["kinds"]}
    return KINDS[model][0](**{name: options[name] for name in _SHARED}, **network)


@click.command("bench")
@network_options
@_model_options
@click.option("--gpu", is_flag=True, help="Benchmark on the GPU with CuPy.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, help="Images per step.")
@click.option("--steps", type=click.IntRange(min=1), default=10,
              help="Timed steps (the median is reported).")
@click.option("--warmup", type=click.IntRange(min=0), default=2, help="Untimed steps first.")
@click.option("--json", "as_json", is_flag=True,
              help="End with one JSON object of all the numbers.")
@click.pass_context
def bench_command(ctx, gpu, batch_size, steps, warmup, as_json, **options):
    """Training and inference speed, peak memory and achieved GFLOP/s of a configuration.

    A training step is forward, backward and an Adam update; random inputs."""
    config = _kind_config(ctx, options)
    r = benchmark(config, batch_size=batch_size, steps=steps, warmup=warmup,
                  device=_device(gpu))
    click.echo(f"{r['n_params']:,} parameters, {r['flops_per_image'] / 1e9:.2f} GFLOP per "
               f"training image, batch {batch_size} on the {r['device']}")
    click.echo(f"train: {r['images_per_s']:.1f} images/s (median step "
               f"{r['step_s_median'] * 1e3:.1f} ms of {steps}), {r['gflops']:.1f} GFLOP/s")
    click.echo(f"infer: {r['infer_images_per_s']:.1f} images/s")
    click.echo(f"peak memory of a step: {r['peak_mem_bytes'] / MIB:.0f} MiB (planned "
               f"{r['predicted_mem_bytes'] / MIB:.0f} MiB)")
    if as_json:
        click.echo(json.dumps(r))


@click.command("plan")
@network_options
@_model_options
@click.option("--batch-size", type=click.IntRange(min=1), default=32, help="Images per step.")
@click.option("--gpu", is_flag=True, help="Compare with the GPU's free memory and speed.")
@click.option("--json", "as_json", is_flag=True, help="End with one JSON object.")
@click.pass_context
def plan_command(ctx, batch_size, gpu, as_json, **options):
    """Parameters, memory, FLOPs and a predicted step time, without building the network."""
    config = _kind_config(ctx, options)
    device = _device(gpu)
    p = plan(config, batch_size, device)
    rate, copy, update = step_rates(config, batch_size, device)
    step_s = p.step_seconds(rate, copy, update)
    free = available_bytes(device)
    primary = (f" ({config.n_primary:,} primary capsules)" if kind_of(config) == "capsnet"
               else "")
    click.echo(f"parameters: {p.n_params:,}{primary}")
    click.echo(f"memory of a training step at batch {batch_size}: "
               f"{p.total_bytes / GIB:.2f} GiB = weights and Adam's moments "
               f"{p.param_bytes / GIB:.2f} GiB + the step's activations and gradients "
               f"{p.step_bytes / GIB:.2f} GiB "
               f"({free / GIB:.1f} GiB available on the {device})")
    click.echo(f"FLOPs per image: {p.flops_forward / 1e9:.3f} G forward, "
               f"{p.flops_train / 1e9:.3f} G training")
    click.echo(f"predicted step: {step_s * 1e3:.0f} ms ({batch_size / step_s:.0f} images/s), "
               f"from this machine's {rate:.0f} GFLOP/s in this network's convolution "
               f"products, {copy:.1f} GB/s building its columns (the rate charged for all "
               f"copies and passes over activations) and {update:.0f} GB/s in the "
               f"optimizer's update")
    if as_json:
        click.echo(json.dumps({"n_params": p.n_params, "param_bytes": p.param_bytes,
                               "step_bytes": p.step_bytes,
                               "total_bytes": p.total_bytes, "flops_forward": p.flops_forward,
                               "flops_train": p.flops_train, "step_s": step_s,
                               "images_per_s": batch_size / step_s, "gemm_gflops": rate,
                               "copy_gbs": copy, "update_gbs": update,
                               "batch_size": batch_size}))
    if p.total_bytes > free:
        raise click.ClickException(f"does not fit: {p.total_bytes / GIB:.1f} GiB needed")


# Exit statuses of gradcheck: every parameter within the tolerance (0), one above it (1),
# none above it but some parameter with nothing that could be measured (3): the check did
# not happen, which is neither a pass nor a failure of the backward pass.
PASS, FAIL, UNCHECKED = 0, 1, 3


def _cell(measurement, count_width):
    """'error  count' of a measurement, '-' where nothing was measured."""
    if measurement is None:
        return " " * (11 + count_width)
    if measurement.error is None:
        return f"{'-':>9}  {'':>{count_width}}"
    return f"{measurement.error:9.1e}  {measurement.covered:>{count_width},}"


def _report(rows, tolerance):
    """Print the table of a network's ParameterChecks, a line on stderr for each parameter
    not wholly measured (and why), and the verdict; return the exit status."""
    width = max(len(row.name) for row in rows)
    count = max(len("checked"), *(len(f"{row.size:,}") for row in rows))
    click.echo(f"{'parameter':<{width}}  {'size':>{count}}  {'entries':>9}  "
               f"{'checked':>{count}}  {'direction':>9}  {'moved':>{count}}")
    for row in rows:
        click.echo(f"{row.name:<{width}}  {row.size:>{count},}  {_cell(row.entries, count)}  "
                   f"{_cell(row.direction, count)}")
    for row in rows:
        missed = [f"{what}: {m.why}" for what, m in (("entries", row.entries),
                                                    ("direction", row.direction))
                  if m is not None and m.error is None]
        if missed:
            whole = "nothing could be checked" if row.unmeasured else "not all checked"
            click.echo(f"minicaps: {row.name}: {whole}; {'; '.join(missed)}", err=True)
    errors = [e for row in rows for e in row.errors]
    worst = max(errors, default=0.0)
    unmeasured = [row.name for row in rows if row.unmeasured]
    status = FAIL if worst > tolerance else UNCHECKED if unmeasured else PASS
    measured = f"largest relative error {worst:.1e}" if errors else "nothing measured"
    verdict = {PASS: "pass", FAIL: "FAIL",
               UNCHECKED: f"UNCHECKED (nothing could be measured for {', '.join(unmeasured)})"}
    click.echo(f"{measured}: {verdict[status]} (tolerance {tolerance:g})")
    return status


@click.command("gradcheck")
@network_options
@_model_options
@_none_capsule_option
@click.option("--batch-size", type=click.IntRange(min=1), default=2, help="Examples.")
@click.option("--entries", type=click.IntRange(min=1), default=6,
              help="Sampled entries of each parameter.")
@click.option("--tolerance", type=click.FloatRange(min=0, min_open=True), default=1e-6,
              help="Largest relative error that passes.")
@click.option("--seed", type=int, default=0, help="Seed of weights, inputs and samples.")
@click.pass_context
def gradcheck_command(ctx, batch_size, entries, tolerance, seed, **options):
    """Check this configuration's hand-written gradients against finite differences (float64).

    Prints each parameter's relative error on sampled entries (and how many) and along a
    direction (and how many entries it moved), then all parameters together. Exit status
    0 when every error is within the tolerance, 1 when one is above it, 3 when none is but
    for some parameter nothing could be measured (every step crossed a kink, or its
    derivative is too small for finite differences; a line says which). The capsule
    transforms are scaled up until class capsules are ~0.5 long, where every path carries
    gradient well above the rounding of finite differences."""
    config = _kind_config(ctx, options)
    net, x, y = network_under_check(config, batch_size=batch_size, seed=seed)
    rows = check_network(net, x, y, entries=entries, resolution=tolerance / 10, seed=seed)
    ctx.exit(_report(rows, tolerance))


def _checkpoint_and_examples(path, data, kinds=("capsnet",)):
    """The network of a checkpoint and the test images of its data (or of `data`),
    refusing a network of a kind the picture is not drawn for."""
    from ..training import checkpoint
    from ..training.evaluate import checkpoint_data
    ckpt = checkpoint.load(path)
    kind = kind_of(ckpt.model_config)
    if kind not in kinds:
        raise MinicapsError(f"{path} holds a {KIND_NAMES[kind]}: this picture is drawn for "
                            f"a {' or a '.join(KIND_NAMES[k] for k in kinds)}")
    net = build(ckpt.model_config, ckpt.scored_params)
    return net, checkpoint_data(ckpt, path, data).test_x


def _save(image, out):
    image.save(out)
    click.echo(f"wrote {out} ({image.width}x{image.height})")


CHECKPOINT = click.argument("checkpoint_path", metavar="CHECKPOINT",
                            type=click.Path(exists=True, dir_okay=False))
DATA = click.option("--data", type=click.Path(exists=True), default=None,
                    help="Take the images from this dataset's test split.",
                    show_default="the checkpoint's own data")


def _index_option(f):
    return click.option("--index", type=click.IntRange(min=0), default=0,
                        help="Which test image.")(f)


@click.group("show")
def show_group():
    """Pictures (PNG) of a trained network: reconstructions, capsule dimensions,
    coupling coefficients, training curves."""


@show_group.command("reconstructions")
@CHECKPOINT
@DATA
@click.option("--n", type=click.IntRange(1, 256), default=16, help="Test images.")
@click.option("--out", type=click.Path(dir_okay=False), default="reconstructions.png",
              help="PNG to write.")
def show_reconstructions(checkpoint_path, data, n, out):
    """Test images beside their reconstructions from the predicted class's capsule."""
    from ..tools.show import reconstruction_grid
    net, x = _checkpoint_and_examples(checkpoint_path, data)
    _save(reconstruction_grid(net, x[:n]), out)


@show_group.command("perturbations")
@CHECKPOINT
@DATA
@_index_option
@click.option("--out", type=click.Path(dir_okay=False), default="perturbations.png",
              help="PNG to write.")
def show_perturbations(checkpoint_path, data, index, out):
    """Each dimension of the predicted capsule moved by -0.25..0.25 in steps of 0.05
    (a row per dimension), as in the paper's Figure 4."""
    from ..tools.show import perturbation_grid, test_image
    net, x = _checkpoint_and_examples(checkpoint_path, data)
    _save(perturbation_grid(net, test_image(x, index)), out)


@show_group.command("couplings")
@CHECKPOINT
@DATA
@_index_option
@click.option("--iteration", type=int, default=-1, help="Routing iteration (-1: the last).")
@click.option("--out", type=click.Path(dir_okay=False), default="couplings.png",
              help="PNG to write.")
def show_couplings(checkpoint_path, data, index, iteration, out):
    """Coupling coefficients of one test image: a row per class, a tile per primary type
    (an EM network: the class capsules' assignments, a tile per type of the last grid)."""
    from ..tools.show import assignment_map, coupling_map, test_image
    net, x = _checkpoint_and_examples(checkpoint_path, data, kinds=("capsnet", "em"))
    draw = assignment_map if kind_of(net.config) == "em" else coupling_map
    _save(draw(net, test_image(x, index), iteration), out)


@show_group.command("curves")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--out", type=click.Path(dir_okay=False), default="curves.png",
              help="PNG to write.")
def show_curves(run_dir, out):
    """Training loss and accuracies per epoch from a run folder's metrics.jsonl."""
    from ..tools.show import training_curves
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise MinicapsError(f"{run_dir}: no metrics.jsonl (not a minicaps run folder)")
    _save(training_curves(path), out)


COMMANDS = (bench_command, plan_command, gradcheck_command, show_group)
