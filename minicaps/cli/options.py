"""Click pieces shared by the commands: the user-error type, and click options built from
the options the configs declare (minicaps/option.py), so that a default, a help text or a
range is written once, beside the field it is for."""
import click

from ..nets.capsnet import CapsNetConfig
from ..option import declared, flag_of, in_range, range_text


class UserError(click.ClickException):
    """A user's mistake: one line `minicaps: error: ...` on stderr, exit status 1."""

    def show(self, file=None):
        click.echo(f"minicaps: error: {self.message}", err=True)


class Commas(click.ParamType):
    """A tuple option on the command line: comma-separated entries, each checked against
    the declaration (its type, range and choices, and how many entries)."""
    name = "list"

    def __init__(self, meta):
        self.meta = meta
        self.entry = type(meta["default"][0])

    def get_metavar(self, param=None, ctx=None):
        entry = "A" if self.entry is str else "N"
        return self.meta.get("metavar", f"{entry},{entry},...")

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            entries = tuple(self.entry(e.strip()) for e in value.split(",") if e.strip())
        except ValueError:
            entries = ()
        meta = self.meta
        wrong = not entries or len(entries) != meta.get("length", len(entries))
        detail = ""
        if "choices" in meta:
            detail = f", each of {','.join(meta['choices'])}"
            wrong = wrong or not set(entries) <= set(meta["choices"])
        elif "minimum" in meta or "maximum" in meta:
            detail = f", each {range_text(meta)}"
            wrong = wrong or not all(in_range(meta, e) for e in entries)
        if wrong:
            self.fail(f"expected {self.get_metavar()}{detail}, such as "
                      f"{shown(meta['default'])}; not {value!r}", param, ctx)
        return entries


def shown(value, flag=None):
    """A value as --help shows it: 0.003, 32,64,64, unset; a switch's value by its flag."""
    if isinstance(value, bool) and flag and "/" in flag:
        return flag.split("/")[0 if value else 1].lstrip("-")
    if value is None:
        return "unset"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value)


def _click_type(f):
    meta = f.metadata
    if isinstance(meta["default"], tuple):
        return Commas(meta)
    if meta.get("path") == "existing":
        return click.Path(exists=True)
    if meta.get("path") == "folder":
        return click.Path(file_okay=False)
    if "choices" in meta:
        return click.Choice(meta["choices"])
    number = float if f.type is float else int if f.type is int else None
    if number and ("minimum" in meta or "maximum" in meta):
        ranged = click.FloatRange if number is float else click.IntRange
        return ranged(meta.get("minimum"), meta.get("maximum"),
                      min_open=meta.get("min_open", False), max_open=meta.get("max_open", False))
    return number or str


def click_option(f, presets=()):
    """The click option of a declared field `f`. `presets`: (what --help calls the data,
    {field: value}) pairs; where one changes the default, --help says so after it."""
    meta, name = f.metadata, f.name
    flag = flag_of(f)
    help = meta["help"]
    if isinstance(meta["default"], tuple):
        choices = f", of {','.join(meta['choices'])}" if "choices" in meta else ""
        help += f" Comma-separated{choices}."
    if f.type is bool and "/" not in flag:  # a single flag sets the opposite of the default
        return click.option(flag, name, is_flag=True, flag_value=not meta["default"],
                            default=meta["default"], show_default=False, help=help)
    default = meta["default"]
    differ = {}  # shown value: names of the data it is the default for
    for data_name, values in presets:
        if name in values and values[name] != default:
            differ.setdefault(shown(values[name], flag), []).append(data_name)
    extra = {}
    if differ:
        extra["show_default"] = "; ".join(
            [shown(default, flag)] + [f"{v} on {' and on '.join(names)}"
                                      for v, names in differ.items()])
    if isinstance(default, tuple):
        default = shown(default)
    if f.type is bool:
        return click.option(flag, name, default=default, help=help, **extra)
    return click.option(flag, name, type=_click_type(f), default=default, help=help, **extra)


def declared_options(config_class, presets=(), leave_out=()):
    """{field name: click option} of every option `config_class` declares, in its order,
    but those named in `leave_out`."""
    return {f.name: click_option(f, presets) for f in declared(config_class)
            if f.name not in leave_out}


def with_options(options):
    """A decorator that gives a command `options` (click options), in their order."""
    def decorate(command):
        for option in reversed(list(options)):
            command = option(command)
        return command
    return decorate


# The network options of bench, plan and gradcheck: CapsNetConfig's, but the none-of-the-
# above capsule, which plan's memory model does not count.
network_options = with_options(declared_options(CapsNetConfig,
                                                leave_out=("none_capsule",)).values())


def network_config(options, dtype="float32"):
    """The CapsNetConfig of the options collected by network_options (removed from them)."""
    fields = [f.name for f in declared(CapsNetConfig) if f.name in options]
    return CapsNetConfig(dtype=dtype, **{name: options.pop(name) for name in fields})
