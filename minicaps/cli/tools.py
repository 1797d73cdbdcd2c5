"""Commands that measure and check a configuration without training it: bench, plan,
gradcheck. Registered on the `minicaps` group by cli.py."""
import json
from pathlib import Path

import click
import numpy as np

from ..tools.bench import benchmark, step_rates
from .options import network_config, network_options
from ..gradcheck import check_model, directional_check, scale_to_operating_point
from ..errors import MinicapsError
from ..nets.capsnet import CapsNet
from ..nets.kinds import kind_of
from ..tools.plan import available_bytes, plan

GIB, MIB = 2 ** 30, 2 ** 20


def _device(gpu):
    return "gpu" if gpu else "cpu"


@click.command("bench")
@network_options
@click.option("--gpu", is_flag=True, help="Benchmark on the GPU with CuPy.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, help="Images per step.")
@click.option("--steps", type=click.IntRange(min=1), default=10,
              help="Timed steps (the median is reported).")
@click.option("--warmup", type=click.IntRange(min=0), default=2, help="Untimed steps first.")
@click.option("--json", "as_json", is_flag=True,
              help="End with one JSON object of all the numbers.")
def bench_command(gpu, batch_size, steps, warmup, as_json, **options):
    """Training and inference speed, peak memory and achieved GFLOP/s of a configuration.

    A training step is forward, backward and an Adam update; random inputs."""
    config = network_config(options)
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
@click.option("--batch-size", type=click.IntRange(min=1), default=32, help="Images per step.")
@click.option("--gpu", is_flag=True, help="Compare with the GPU's free memory and speed.")
@click.option("--json", "as_json", is_flag=True, help="End with one JSON object.")
def plan_command(batch_size, gpu, as_json, **options):
    """Parameters, memory, FLOPs and a predicted step time, without building the network."""
    config = network_config(options)
    device = _device(gpu)
    p = plan(config, batch_size, device)
    rate, copy, update = step_rates(config, batch_size, device)
    step_s = p.step_seconds(rate, copy, update)
    free = available_bytes(device)
    click.echo(f"parameters: {p.n_params:,} ({config.n_primary:,} primary capsules)")
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


@click.command("gradcheck")
@network_options
@click.option("--batch-size", type=click.IntRange(min=1), default=2, help="Examples.")
@click.option("--entries", type=click.IntRange(min=1), default=6,
              help="Sampled entries of each parameter.")
@click.option("--tolerance", type=click.FloatRange(min=0, min_open=True), default=1e-6,
              help="Largest relative error that passes.")
@click.option("--seed", type=int, default=0, help="Seed of weights, inputs and samples.")
def gradcheck_command(batch_size, entries, tolerance, seed, **options):
    """Check this configuration's hand-written gradients against finite differences (float64).

    Prints each parameter's relative error on sampled entries and along a direction, then
    all parameters together; exits 1 when any is above the tolerance. The capsule
    transforms are scaled up until class capsules are ~0.5 long, where every path carries
    gradient well above the rounding of finite differences."""
    config = network_config(options, dtype="float64")
    net = CapsNet.from_config(config, seed=seed)
    rng = np.random.default_rng(seed)
    x = rng.random((batch_size, *config.in_shape))
    scale_to_operating_point(net, x)
    y = rng.integers(0, config.n_classes, batch_size)
    sampled = check_model(net, x, y, max_entries=entries, seed=seed)
    directional = directional_check(net, x, y, seed=seed)
    width = max(map(len, directional))
    click.echo(f"{'parameter':<{width}}  {'entries':>9}  {'direction':>9}")
    for name, err in directional.items():
        entry = f"{sampled[name]:9.1e}" if name in sampled else " " * 9
        click.echo(f"{name:<{width}}  {entry}  {err:9.1e}")
    worst = max(max(sampled.values()), max(directional.values()))
    verdict = "pass" if worst <= tolerance else "FAIL"
    click.echo(f"largest relative error {worst:.1e}: {verdict} (tolerance {tolerance:g})")
    if worst > tolerance:
        raise SystemExit(1)


def _checkpoint_and_examples(path, data):
    """The network of a checkpoint and the test images of its data (or of `data`)."""
    from ..training import checkpoint
    from ..training.evaluate import checkpoint_data
    ckpt = checkpoint.load(path)
    if kind_of(ckpt.model_config) != "capsnet":
        raise MinicapsError(f"{path} holds a CNN: these pictures are of capsules")
    net = CapsNet.from_config(ckpt.model_config, ckpt.scored_params)
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
    from ..tools.show import perturbation_grid
    net, x = _checkpoint_and_examples(checkpoint_path, data)
    _save(perturbation_grid(net, x[min(index, len(x) - 1)]), out)


@show_group.command("couplings")
@CHECKPOINT
@DATA
@_index_option
@click.option("--iteration", type=int, default=-1, help="Routing iteration (-1: the last).")
@click.option("--out", type=click.Path(dir_okay=False), default="couplings.png",
              help="PNG to write.")
def show_couplings(checkpoint_path, data, index, iteration, out):
    """Coupling coefficients of one test image: a row per class, a tile per primary type."""
    from ..tools.show import coupling_map
    net, x = _checkpoint_and_examples(checkpoint_path, data)
    _save(coupling_map(net, x[min(index, len(x) - 1)], iteration), out)


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
