"""The rps package's modules import each other without a cycle, lazy imports included."""

import ast

from conftest import REPO

PACKAGE = REPO / "rps"


def imports(path) -> set[str]:
    """The rps modules a file imports anywhere but under ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text())
    typing_only = {
        id(node)
        for stmt in ast.walk(tree)
        if isinstance(stmt, ast.If) and getattr(stmt.test, "id", None) == "TYPE_CHECKING"
        for node in ast.walk(stmt)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("rps.")}
        elif isinstance(node, ast.ImportFrom) and node.module == "rps":
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rps."):
            found.add(node.module.split(".")[1])
    return found


def graph() -> dict[str, set[str]]:
    return {path.stem: imports(path) for path in PACKAGE.glob("*.py") if path.stem != "__init__"}


def cycle(edges: dict[str, set[str]]) -> list[str]:
    """One import cycle as a path of module names, or [] when there is none."""
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> list[str]:
        state[module] = "open"
        for target in sorted(edges.get(module, ())):
            if state.get(target) == "open":
                return [*path[path.index(target) :], target] if target in path else [target]
            if target not in state and (found := visit(target, [*path, target])):
                return found
        state[module] = "done"
        return []

    for module in sorted(edges):
        if module not in state and (found := visit(module, [module])):
            return found
    return []


def test_the_package_has_no_import_cycle():
    edges = graph()
    assert {"job", "sweep", "context", "outputs"} <= set(edges)
    assert cycle(edges) == [], " -> ".join(cycle(edges))


def test_the_cycle_finder_finds_a_lazy_import_cycle():
    assert cycle({"job": {"sweep"}, "sweep": {"job"}}) == ["job", "sweep", "job"]
    assert cycle({"a": {"b"}, "b": {"c"}, "c": set()}) == []
