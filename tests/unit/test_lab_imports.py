"""No import cycle among the lab's modules (relay/lab), held by walking every import with ast.

Imports inside functions count too: a cycle hidden in a function still ties the modules together.
"""

from __future__ import annotations

import ast
from pathlib import Path

LAB = Path(__file__).resolve().parents[2] / "relay" / "lab"
PACKAGE = "boothop.relay.lab"


def lab_imports(path: Path) -> set[str]:
    """The lab modules (bare names, e.g. ``report``) that the file imports."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 1:
                base = f"{PACKAGE}.{node.module}" if node.module else PACKAGE
            elif node.level == 0:
                base = node.module or ""
            else:  # above the lab package: not one of its modules
                continue
            # ``from . import servers`` names a module; ``from .lab import Lab`` names its module.
            names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        for name in names:
            module = name.removeprefix(f"{PACKAGE}.").split(".")[0]
            if name.startswith(f"{PACKAGE}.") and (LAB / f"{module}.py").exists():
                found.add(module)
    return found


def lab_graph() -> dict[str, set[str]]:
    return {path.stem: lab_imports(path) - {path.stem} for path in sorted(LAB.glob("*.py"))}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path that starts and ends at the same module, or None."""
    visiting: list[str] = []
    done: set[str] = set()

    def visit(module: str) -> list[str] | None:
        if module in visiting:
            return [*visiting[visiting.index(module):], module]
        if module in done:
            return None
        visiting.append(module)
        for target in sorted(graph.get(module, ())):
            cycle = visit(target)
            if cycle:
                return cycle
        visiting.pop()
        done.add(module)
        return None

    for module in sorted(graph):
        cycle = visit(module)
        if cycle:
            return cycle
    return None


def test_the_walker_sees_the_lab_imports() -> None:
    """Guard against a vacuous pass: known relative and function-level imports are found."""
    graph = lab_graph()
    assert {"cli", "lab", "report", "results", "topology", "servers"} <= graph.keys()
    assert {"servers", "report", "results", "topology"} <= graph["lab"]
    assert "lab" in graph["cli"] and "lab" in graph["scenarios"]


def test_find_cycle_reports_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_in_the_lab() -> None:
    cycle = find_cycle(lab_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])
