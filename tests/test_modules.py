"""The rps package's shape: no import cycle between modules, lazy imports included, and
subpackages used in one direction only (docs/development.md draws them)."""

import ast

from conftest import REPO

PACKAGE = REPO / "rps"


def module_name(path) -> str:
    """``rps/train/job.py`` -> ``train.job``; ``rps/cache.py`` -> ``cache``."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path) -> set[str]:
    """The rps modules a file imports anywhere but under ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text())
    typing_only = {
        id(node)
        for stmt in ast.walk(tree)
        if isinstance(stmt, ast.If) and getattr(stmt.test, "id", None) == "TYPE_CHECKING"
        for node in ast.walk(stmt)
    }
    known = set(graph_nodes())
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name.removeprefix("rps.") for a in node.names if a.name.startswith("rps.")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rps"):
            base = node.module.removeprefix("rps").removeprefix(".")
            for alias in node.names:
                name = f"{base}.{alias.name}" if base else alias.name
                found.add(name if name in known else base)
    return found - {""}


def graph_nodes() -> list[str]:
    return [module_name(p) for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"]


def graph() -> dict[str, set[str]]:
    return {
        module_name(path): imports(path)
        for path in PACKAGE.rglob("*.py")
        if path.name != "__init__.py"
    }


def packages(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    """The same graph between subpackages (a top-level module is a package of its own)."""
    top: dict[str, set[str]] = {}
    for module, targets in edges.items():
        here = module.split(".")[0]
        top.setdefault(here, set()).update(t.split(".")[0] for t in targets)
        top[here].discard(here)
    return top


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
    assert {"train.job", "tracking.sweep", "config.context", "train.outputs"} <= set(edges)
    assert {"tracking.mlflow_runs", "config.compose"} <= edges["train.job"]
    assert cycle(edges) == [], " -> ".join(cycle(edges))


def test_subpackages_use_each_other_in_one_direction():
    top = packages(graph())
    assert {"config", "data", "model", "train", "serve", "apps"} <= set(top)
    assert "train" in top["apps"] or "serve" in top["apps"]
    assert cycle(top) == [], " -> ".join(cycle(top))


def test_the_cycle_finder_finds_a_lazy_import_cycle():
    assert cycle({"job": {"sweep"}, "sweep": {"job"}}) == ["job", "sweep", "job"]
    assert cycle({"a": {"b"}, "b": {"c"}, "c": set()}) == []
