"""The package layout's rules, checked on the source: no import cycles (lazy imports included), steps stay thin."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "pss_ops"
# Entry points run the steps; every other package is a domain package that steps call, never the reverse.
RUNNERS = ("pss_ops.cli", "pss_ops.orchestration")
MAX_TOP_LEVEL_MODULES = 8
MAX_LINES = 400
# A longer module says why at its top: its docstring carries this phrase.
LONG_MODULE_MARK = "longer than 400 lines because"


def module_name(path: Path) -> str:
    """The dotted module name of a file under the package."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name."""
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported(path: Path, name: str, known: set[str]) -> set[str]:
    """The package's modules a file imports anywhere in it (functions too), with the packages that loads first."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pss_ops.x import y` imports the module pss_ops.x.y when y is one, else a name from pss_ops.x.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            # Importing a.b.c runs a/__init__ and a/b/__init__ first.
            while target.startswith("pss_ops"):
                if target != name:
                    found.add(target)
                target = target.rpartition(".")[0]
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports."""
    found = modules()
    return {name: imported(path, name, set(found)) for name, path in found.items()}


def test_graph_sees_lazy_imports_and_submodules() -> None:
    graph = import_graph()
    # A function-level import (pss_ops.config reads YAML through storage inside load_config) is an edge too.
    assert "pss_ops.storage" in graph["pss_ops.config"]
    assert {"pss_ops.search.filters", "pss_ops.search"} <= graph["pss_ops.steps.query"]


def test_no_import_cycles() -> None:
    sorter = graphlib.TopologicalSorter(import_graph())
    try:
        sorter.prepare()
    except graphlib.CycleError as error:
        pytest.fail(f"import cycle: {' -> '.join(error.args[1])}")


def test_cycle_detection_fails_on_a_cycle() -> None:
    graph = import_graph()
    graph["pss_ops.storage"] = graph["pss_ops.storage"] | {"pss_ops.config"}
    with pytest.raises(graphlib.CycleError):
        graphlib.TopologicalSorter(graph).prepare()


def test_steps_are_imported_only_by_the_runners() -> None:
    # Covers both rules: no step imports another step, and no domain package imports a step.
    offenders = [
        f"{name} imports {target}"
        for name, targets in import_graph().items()
        for target in sorted(targets)
        if target.startswith("pss_ops.steps.") and not name.startswith(RUNNERS)
    ]
    assert offenders == []


def test_top_level_holds_at_most_eight_modules() -> None:
    top = sorted(p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top


def test_no_module_past_400_lines_without_a_stated_reason() -> None:
    long = [
        f"{name} ({len(path.read_text().splitlines())} lines)"
        for name, path in modules().items()
        if len(path.read_text().splitlines()) > MAX_LINES and LONG_MODULE_MARK not in (ast.get_docstring(ast.parse(path.read_text())) or "")
    ]
    assert long == []
