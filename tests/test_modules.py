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


# Verbs that name one interface, each module its own implementation of it (rps.data.folder
# and rps.data.tfds_data are data sources; each group module of rps.model builds its part).
INTERFACE = {"log", "build", "load", "save", "run", "main", "check", "of", "origin"}
INTERFACE |= {"test_split", "NAMED_FILES"}


def public_names(path) -> set[str]:
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {name for name in names if not name.startswith("_")}


def test_no_public_name_is_defined_in_two_modules():
    where: dict[str, list[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        for name in public_names(path) - INTERFACE:
            where.setdefault(name, []).append(module_name(path))
    assert {name: mods for name, mods in where.items() if len(mods) > 1} == {}


def test_no_import_renames_a_module_of_rps():
    """``from rps.x import y as z`` hides what a name is; each module goes by its own name."""
    files = [*REPO.glob("*.py"), *(REPO / d for d in ("rps", "tests", "benchmarks"))]
    paths = [p for f in files for p in ([f] if f.is_file() else f.rglob("*.py"))]
    renamed = [
        f"{path.name}: {node.module}.{alias.name} as {alias.asname}"
        for path in paths
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("rps")
        for alias in node.names
        if alias.asname
    ]
    assert renamed == []


def test_every_module_reads_in_one_sitting():
    """400 lines at most: past that a module holds more than one concern."""
    long = {
        module_name(p): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 400
    }
    assert long == {}
