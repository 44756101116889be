"""The rooms of the code base and the doors between them (ARCHITECTURE.md), checked on the
source: no import cycles, and no room reaching into one it should not know.

Every import statement counts, at module level or inside a function: a cycle hidden inside
functions still ties the modules together.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = {
    "services": REPO / "services",
    "finetune": REPO / "finetune",
    "modelport_client": REPO / "clients" / "modelport_client",
}


def module_files() -> dict[str, Path]:
    found = {}
    for package, root in PACKAGES.items():
        for path in root.rglob("*.py"):
            parts = [package, *path.relative_to(root).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imports_of(module: str, path: Path, known: Iterable[str]) -> set[str]:
    """The project modules `module` imports, anywhere in its body."""
    known = set(known)
    is_package = path.name == "__init__.py"
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")[: len(module.split(".")) - node.level + is_package]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for name in names:
            # `import a.b.c` / `from a.b import c`: the deepest project module named.
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
    return targets


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    return {module: imports_of(module, path, files) for module, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_imports_inside_functions() -> None:
    graph = import_graph()
    # services/autocomplete/service.py imports the engine inside Autocomplete.__init__.
    assert "services.autocomplete.engine" in graph["services.autocomplete.service"]


def test_no_import_cycles() -> None:
    assert cycles(import_graph()) == []


# Which rooms a room may not import (prefix match). The CLI is where everything meets.
FORBIDDEN = {
    "services.core": ("services.plate_reader", "services.autocomplete", "finetune"),
    "services.plate_reader": ("services.autocomplete", "finetune", "services.core.cli"),
    "services.autocomplete": ("services.plate_reader", "finetune", "services.core.cli"),
    "modelport_client": ("services", "finetune"),
    "finetune": ("services.core.cli",),
}
COMPOSITION_ROOT = "services.core.cli"


@pytest.mark.parametrize("room", sorted(FORBIDDEN))
def test_rooms_keep_to_themselves(room: str) -> None:
    graph = import_graph()
    trespass = sorted(
        f"{module} -> {target}"
        for module, targets in graph.items()
        if (module == room or module.startswith(room + ".")) and module != COMPOSITION_ROOT
        for target in targets
        if any(target == f or target.startswith(f + ".") for f in FORBIDDEN[room])
    )
    assert trespass == []
