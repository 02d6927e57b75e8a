"""The benchmarks (tests/bench/, not collected, not type-checked) still fit boothop: each imports,
and every attribute one reads off a boothop module it imported (``kernel.CLANG_FLAGS``) exists.
A name that moved or went fails here, in every run, and not first in the next measurement."""

from __future__ import annotations

import ast
import contextlib
import importlib
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
NAMES = sorted(path.stem for path in BENCH.glob("*.py"))


def boothop_modules(tree: ast.Module) -> dict[str, ModuleType]:
    """The bench's local names of the boothop modules it imports, at any depth."""
    found: dict[str, ModuleType] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("boothop.") and alias.asname:
                    found[alias.asname] = importlib.import_module(alias.name)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("boothop"):
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                # A class or function is no module: the bench's import checks it.
                with contextlib.suppress(ModuleNotFoundError):
                    found[alias.asname or alias.name] = importlib.import_module(name)
    return found


@pytest.mark.parametrize("name", NAMES)
def test_the_benchmark_imports_and_reads_only_names_boothop_has(
    name: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.syspath_prepend(str(BENCH))  # they import each other, as when run from there
    monkeypatch.setattr(sys, "argv", [name])
    importlib.import_module(name)
    tree = ast.parse((BENCH / f"{name}.py").read_text())
    modules = boothop_modules(tree)
    missing = sorted(
        f"{node.value.id}.{node.attr} (line {node.lineno})"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
        and node.value.id in modules and not hasattr(modules[node.value.id], node.attr)
    )
    assert missing == []


def test_the_check_sees_the_benchmarks_and_their_modules() -> None:
    assert {"relay_dora", "server_dora", "tftp_throughput", "tftp_hotpath"} <= set(NAMES)
    tree = ast.parse("from boothop.relay import kernel\nimport boothop.relay.wire as wire\n")
    assert set(boothop_modules(tree)) == {"kernel", "wire"}
