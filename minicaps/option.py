"""Options declared once: a config field's default, its help and the values it accepts.

    conv_channels: int = option(256, "Channels of the first convolution.", minimum=1)

The declaration sits in the field's metadata. The configs (nets/, training/config.py)
declare their options; cli/ builds its click options from the declarations; `check`
holds a config to the same ranges the command line does. Nothing here imports click.

What a declaration may say besides its default and help:
    minimum, maximum    the range of a number (of each entry of a tuple)
    min_open, max_open  the range excludes that end
    choices             the values allowed (of each entry of a tuple)
    length              the number of entries of a tuple
    flag                the command line's spelling where it is not --name (a bool's:
                        --name/--no-name): a switch "--on/--off", or a single "--flip"
                        that sets the opposite of the default
    path                a path on the command line: "existing" or "folder"
    metavar             how --help writes the value ("C,H,W")
    kinds               the network kinds (nets/kinds.py) the option is for; absent: all
"""
import dataclasses
import numbers

from .errors import MinicapsError

DECLARATION_KEYS = {"minimum", "maximum", "min_open", "max_open", "choices", "length", "flag",
                    "path", "metavar", "kinds"}


def declaration(default, help, **cli):
    """The metadata of a declared option (see the module's docstring)."""
    unknown = set(cli) - DECLARATION_KEYS
    if unknown:
        raise TypeError(f"not part of an option's declaration: {sorted(unknown)}")
    return {"default": default, "help": help, **cli}


def option(default, help, **cli):
    """A dataclass field declared as an option, with `default` as its default."""
    return dataclasses.field(default=default, metadata=declaration(default, help, **cli))


def declared(config_class):
    """The fields of `config_class` that are declared options, in their order."""
    return [f for f in dataclasses.fields(config_class) if "help" in f.metadata]


def flag_of(f):
    """The command line's spelling of declared field `f`: "--kernel-size", a switch
    "--reconstruction/--no-reconstruction" (every bool unless declared otherwise)."""
    name = f.name.replace("_", "-")
    return f.metadata.get("flag") or (f"--{name}/--no-{name}" if f.type is bool else f"--{name}")


def unknown_names(config_class, names):
    """The names among `names` that are no field of `config_class`, sorted: what a config
    stored by another version of minicaps may hold."""
    return sorted(set(names) - {f.name for f in dataclasses.fields(config_class)})


def option_name(config_class, name, value=True):
    """How the command line and messages call option `name` of `config_class`:
    "--init-length", "--em-share-class-transforms"; a switch whose `value` is False by its
    off spelling, "--em-own-class-transforms"."""
    spellings = flag_of(next(f for f in declared(config_class) if f.name == name)).split("/")
    return spellings[-1] if value is False else spellings[0]


def default_of(config_class, name):
    """The declared default of option `name` of `config_class`."""
    return next(f for f in declared(config_class) if f.name == name).metadata["default"]


def check(config):
    """One clear MinicapsError unless every declared option of `config` is in its range and
    among its choices (each entry of a tuple)."""
    for f in declared(config):
        value, meta = getattr(config, f.name), f.metadata
        if value is None and meta["default"] is None:  # None is this option's "unset"
            continue
        entries = value if isinstance(value, tuple) else (value,)
        if "length" in meta and len(entries) != meta["length"]:
            raise MinicapsError(f"{f.name} needs {meta['length']} entries, not {value!r}")
        if "choices" in meta and not set(entries) <= set(meta["choices"]):
            raise MinicapsError(f"{f.name} must be one of {tuple(meta['choices'])}, "
                                f"not {value!r}")
        if "minimum" in meta or "maximum" in meta:
            if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in entries):
                raise MinicapsError(f"{f.name} must be a number, not {value!r}")
            if not all(in_range(meta, v) for v in entries):
                raise MinicapsError(f"{f.name} must be {range_text(meta)}, not {value!r}")


def in_range(meta, value):
    """Whether number `value` is inside the range that `meta` declares."""
    low, high = meta.get("minimum"), meta.get("maximum")
    return (low is None or value > low or (value == low and not meta.get("min_open"))) and \
        (high is None or value < high or (value == high and not meta.get("max_open")))


def range_text(meta):
    """The range that `meta` declares, in words: "at least 1", "above 0 and at most 4"."""
    ends = []
    if meta.get("minimum") is not None:
        ends.append(f"{'above' if meta.get('min_open') else 'at least'} {meta['minimum']}")
    if meta.get("maximum") is not None:
        ends.append(f"{'below' if meta.get('max_open') else 'at most'} {meta['maximum']}")
    return " and ".join(ends)
