"""Click pieces shared by the commands: the user-error type, option parsers, and the options
that build a CapsNet from the command line."""
import click

from ..nets.capsnet import CapsNetConfig

DEFAULTS = CapsNetConfig()
CONTRAST_HELP = ("Also feed the network each channel's local contrast over windows of this "
                 "odd size: x minus its local mean, over the local size of that difference "
                 "(minicaps/contrast.py). It shows faint logos on any photograph (0: off).")


class UserError(click.ClickException):
    """A user's mistake: one line `minicaps: error: ...` on stderr, exit status 1."""

    def show(self, file=None):
        click.echo(f"minicaps: error: {self.message}", err=True)


def _positive_ints(value):
    """'32,64,64' -> (32, 64, 64); () unless every entry is a positive integer."""
    try:
        numbers = tuple(int(n) for n in value.split(","))
    except ValueError:
        return ()
    return numbers if numbers and min(numbers) >= 1 else ()


def parse_widths(ctx, param, value):
    """'32,64,64' -> (32, 64, 64) of positive ints; None stays None (the default)."""
    if value is None:
        return None
    widths = _positive_ints(value)
    if not widths:
        raise click.BadParameter(f"expected positive integers such as 32,64,64, not {value!r}")
    return widths


def parse_shape(ctx, param, value):
    """'C,H,W' -> (C, H, W) of positive ints."""
    shape = _positive_ints(value)
    if len(shape) != 3:
        raise click.BadParameter(f"expected C,H,W such as 1,28,28, not {value!r}")
    return shape


def network_options(f):
    """The CapsNet's shape: every knob of CapsNetConfig, defaults the paper's MNIST net."""
    options = [
        click.option("--in-shape", default="1,28,28", callback=parse_shape,
                     help="Input channels, height, width."),
        click.option("--n-classes", type=click.IntRange(min=1), default=DEFAULTS.n_classes,
                     help="Classes (class capsules)."),
        click.option("--conv-channels", type=click.IntRange(min=1),
                     default=DEFAULTS.conv_channels, help="Channels of the first convolution."),
        click.option("--kernel-size", type=click.IntRange(min=1), default=DEFAULTS.kernel_size,
                     help="Kernel size of both convolutions."),
        click.option("--conv-stride", type=click.IntRange(min=1), default=DEFAULTS.conv_stride,
                     help="Stride of the first convolution."),
        click.option("--primary-types", type=click.IntRange(min=1),
                     default=DEFAULTS.primary_types, help="Primary capsule types."),
        click.option("--primary-dim", type=click.IntRange(min=1), default=DEFAULTS.primary_dim,
                     help="Dimension of a primary capsule."),
        click.option("--primary-stride", type=click.IntRange(min=1),
                     default=DEFAULTS.primary_stride,
                     help="Stride of the primary capsules' convolution."),
        click.option("--class-dim", type=click.IntRange(min=1), default=DEFAULTS.class_dim,
                     help="Dimension of a class capsule."),
        click.option("--routing-iters", type=click.IntRange(min=1),
                     default=DEFAULTS.routing_iters, help="Routing iterations."),
        click.option("--routing-grad", type=click.Choice(["full", "last"]),
                     default=DEFAULTS.routing_grad,
                     help="Backpropagate through every routing iteration, or the last only."),
        click.option("--share-transforms", is_flag=True,
                     help="One transform per primary capsule type, shared by its positions."),
        click.option("--no-reconstruction", is_flag=True, help="Without the decoder."),
        click.option("--contrast-window", type=click.IntRange(min=0), default=0,
                     help=CONTRAST_HELP),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def network_config(options, dtype="float32"):
    """The CapsNetConfig of the options collected by network_options (removed from them)."""
    fields = ("in_shape", "n_classes", "conv_channels", "kernel_size", "conv_stride",
              "primary_types", "primary_dim", "primary_stride", "class_dim", "routing_iters",
              "routing_grad", "share_transforms", "contrast_window")
    arch = {name: options.pop(name) for name in fields}
    return CapsNetConfig(reconstruction=not options.pop("no_reconstruction"), dtype=dtype, **arch)
