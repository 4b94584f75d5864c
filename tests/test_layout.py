"""The library's layout: no module imports another that imports it back (directly or
through others), and the file formats import no stage."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

SRC = REPO / "src" / "latentebsd"


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """latentebsd modules ``path`` imports, anywhere in the file."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names if a.name.startswith("latentebsd")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("latentebsd"):
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}  # from pkg import module
    return names


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in SRC.rglob("*.py")}
    return {name: {m for m in imports_of(path) if m in modules and m != name}
            for name, path in modules.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_checker_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_in_the_library():
    edges = graph()
    assert len(edges) > 30 and "latentebsd.io.cube" in edges["latentebsd.encode"]
    assert find_cycle(edges) is None, " -> ".join(find_cycle(edges))


def test_file_formats_import_no_stage():
    allowed = {"latentebsd", "latentebsd.geometry", "latentebsd.shards", "latentebsd.models",
               "latentebsd.variants", "latentebsd.numba_cache", "latentebsd.phases"}
    for name, deps in graph().items():
        if name.startswith("latentebsd.io"):
            stages = {d for d in deps if not d.startswith("latentebsd.io") and d not in allowed}
            assert not stages, f"{name} imports {sorted(stages)}"
