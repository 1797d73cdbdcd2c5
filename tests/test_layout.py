"""The package's layout rules (docs: DESIGN.md, "Layout: roles you can see"), read from the
source with ast: every import statement of every module, lazy ones inside functions too."""
import ast
from pathlib import Path

import pytest

import minicaps

PACKAGE = Path(minicaps.__file__).parent
# The largest module when this rule was written was tools/plan.py at 386 lines. Past ~300
# lines a module usually holds two concepts (DESIGN.md); 400 leaves room to finish a
# thought and stops a module from quietly becoming two.
MAX_LINES = 400


def module_name(path):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def is_module(name):
    return name in MODULES


def imported(name):
    """The absolute names of everything the module `name` imports: for `from X import y`,
    X.y where that is a module of minicaps, else X."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if is_module(full) else base)
    return found


def in_package(prefix):
    return [name for name in MODULES if name == prefix or name.startswith(prefix + ".")]


def ours(names):
    return {n for n in names if n == "minicaps" or n.startswith("minicaps.")}


def test_the_import_reader_sees_what_it_must():
    """The rules below can fail: the reader finds relative, nested and lazy imports."""
    assert "minicaps.fast.dispatch" in imported("minicaps.nets.capsnet")
    assert "minicaps.ops.conv" in imported("minicaps.ops.capsules")  # from .conv import ...
    assert "minicaps.fast.kernels" in imported("minicaps.fast.dispatch")  # from . import x
    assert "click" in imported("minicaps.cli.main")


@pytest.mark.parametrize("name", in_package("minicaps.ops"))
def test_ops_import_only_the_backend_the_error_type_and_each_other(name):
    allowed = {"minicaps.backend", "minicaps.errors"}
    wrong = {n for n in ours(imported(name))
             if n not in allowed and not n.startswith("minicaps.ops")}
    assert not wrong, f"{name} imports {sorted(wrong)}"


@pytest.mark.parametrize("name", in_package("minicaps.nets"))
def test_the_networks_reach_the_fast_paths_only_through_the_dispatch(name):
    wrong = {n for n in imported(name) if n.startswith("minicaps.fast")
             and n != "minicaps.fast.dispatch"}
    assert not wrong, f"{name} imports {sorted(wrong)}"


@pytest.mark.parametrize("name", in_package("minicaps.training"))
def test_training_never_imports_the_command_line(name):
    assert not {n for n in imported(name) if n.startswith("minicaps.cli")}


@pytest.mark.parametrize("name", [n for n in MODULES if not n.startswith("minicaps.cli")])
def test_only_the_command_line_imports_click(name):
    assert not {n for n in imported(name) if n == "click" or n.startswith("click.")}


def test_the_fast_package_init_imports_nothing():
    """minicaps/__init__.py imports fast.idle_threads before NumPy loads: importing the
    package minicaps.fast must not load anything else."""
    assert not imported("minicaps.fast")


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_is_past_the_line_limit(name):
    lines = len(MODULES[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines"
