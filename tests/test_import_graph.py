"""The import graph of the project's modules: no cycles, and the host and the device meet only in
the contract.

Every ``import`` statement counts, at the top of a module or inside a function (a lazy import is
still a dependency). The graph is read from the source with ``ast``, so nothing is imported.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGES = ("mark1", "export", "firmware_sim")
CONTRACT = "export.contract"
KNOWN_CYCLES: list[set[str]] = []
"""Cycles that stand today (none)."""
HOST_DEVICE_JOINS = {("export.int8.cli", "firmware_sim.engine"),
                     ("export.serial.cli", "firmware_sim.engine"),
                     ("export.onnx.cli", "firmware_sim.export_c")}
"""Arrows from ``export/`` into ``firmware_sim/`` allowed, all from the CLI layer, which joins
host and device: the ``mark1 quantize`` command hands the simulated microcontroller's engine to
the quantizer for the report's device figures (``export.int8.quantize`` takes any device
model); ``mark1 infer`` prints the engine's cycle model beside the count the device reports;
``mark1 export c`` writes the model with the firmware's engine sources."""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))
            if "templates" not in p.parts}


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every module ``name`` imports: project modules by their full name, others by their
    top-level package."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:  # ``from pkg import module`` imports the module
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in modules else base)
    return {m if m in modules else _owner(m, modules) for m in found}


def _owner(name: str, modules: dict[str, Path]) -> str:
    """The project module that ``name`` lies in, or the top-level package of another import."""
    owner = name
    while owner and owner not in modules:
        owner = owner.rpartition(".")[0]
    return owner or name.partition(".")[0]


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(name, path, modules) - {name} for name, path in modules.items()}


def inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """The groups of modules that import each other in a circle (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def visit(m: str) -> None:
        index[m] = low[m] = len(index)
        stack.append(m)
        for dep in sorted(graph[m] & graph.keys()):
            if dep not in index:
                visit(dep)
                low[m] = min(low[m], low[dep])
            elif dep in stack:
                low[m] = min(low[m], index[dep])
        if low[m] == index[m]:
            group = set()
            while True:
                top = stack.pop()
                group.add(top)
                if top == m:
                    break
            if len(group) > 1:
                groups.append(group)

    for m in sorted(graph):
        if m not in index:
            visit(m)
    return groups


def test_the_project_modules_import_each_other_without_a_cycle(graph):
    cycles = [sorted(group) for group in strongly_connected(graph)]
    assert sorted(cycles) == sorted(sorted(c) for c in KNOWN_CYCLES), (
        "import cycles (a listed one that is gone: remove it from KNOWN_CYCLES)"
    )


def test_a_cycle_is_found_where_there_is_one():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}}
    assert [sorted(g) for g in strongly_connected(graph)] == [["a", "b", "c"]]


def test_the_device_imports_nothing_of_the_export_kit_but_the_contract(graph):
    arrows = [(m, d) for m, deps in graph.items() if inside(m, "firmware_sim") for d in deps
              if inside(d, "export") and not inside(d, CONTRACT)]
    assert arrows == []


def test_the_host_tools_import_nothing_of_the_device(graph):
    arrows = {(m, d) for m, deps in graph.items() if inside(m, "export") for d in deps
              if inside(d, "firmware_sim")}
    assert arrows <= HOST_DEVICE_JOINS, sorted(arrows - HOST_DEVICE_JOINS)


def test_the_contract_imports_only_numpy_the_standard_library_and_itself(graph):
    allowed = set(sys.stdlib_module_names) | {"numpy", "__future__"}
    for m, deps in graph.items():
        if inside(m, CONTRACT):
            others = {d for d in deps if not inside(d, CONTRACT) and d not in allowed}
            assert others == set(), f"{m} imports {sorted(others)}"


def test_the_machine_imports_nothing_of_export_but_the_contract_nor_of_the_device(graph):
    arrows = [(m, d) for m, deps in graph.items() if inside(m, "mark1") for d in deps
              if (inside(d, "export") and not inside(d, CONTRACT)) or inside(d, "firmware_sim")]
    assert arrows == []


def test_the_graph_sees_lazy_imports_inside_functions():
    modules = project_modules()
    deps = imports_of("export.int8.cli", modules["export.int8.cli"], modules)
    assert {"export.int8.quantize", "firmware_sim.engine", "argparse"} <= deps


def test_every_package_of_the_project_is_in_the_distribution():
    """A package missing from pyproject's list works in the editable checkout but not in an
    installed wheel."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"][
        "setuptools"]["packages"])
    on_disk = {module_name(p) for pkg in PACKAGES for p in (ROOT / pkg).rglob("__init__.py")
               if "templates" not in p.parts}
    assert on_disk == listed
