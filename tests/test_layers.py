"""The import graph of ``src/medfoundry``: layers import downward only, and no two modules import each other.

Every import counts, at module level or inside a function, and so does a module path held in a string that the
code imports by name: ``importlib.import_module("medfoundry...")``, ``moved(__name__, "medfoundry...")`` in the
deprecated aliases, the model registry's builder modules, the CLI's command table.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "medfoundry"

# The layers, bottom up. A module may import its own layer and every tier below it; the layers that share a tier
# are siblings and do not import each other (none does today, so no exception is listed). The package root
# (``medfoundry/__init__.py``: ``__version__``) imports nothing of medfoundry and may be imported by any layer.
TIERS: tuple[tuple[str, ...], ...] = (
    ("errors", "_deprecated"),
    ("io",),
    ("preprocessing",),
    ("evaluation", "modeling", "data"),
    ("inference",),
    ("training",),
    ("api",),
    ("demo", "viewer"),
    ("cli",),
)
RANK = {name: i for i, tier in enumerate(TIERS) for name in tier}

# Old import paths kept for one release (README, "Moved in 0.2"): the alias module stays in its old layer and
# forwards lazily, by name, to its new home, which may sit higher. Each entry goes when its alias is removed.
DEPRECATED_FORWARDS: set[tuple[str, str]] = {
    ("medfoundry.evaluation.nnunet_report", "medfoundry.training.nnunet.report"),
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {_module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def layer_of(module: str) -> str | None:
    """The layer of a dotted ``medfoundry.*`` name, or None for the package root / non-medfoundry names."""
    parts = module.split(".")
    if parts[0] != "medfoundry" or len(parts) < 2:
        return None
    return parts[1] if parts[1] in RANK else None


def _docstrings(tree: ast.AST) -> set[int]:
    bodies = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    return {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, bodies)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }


def _resource_anchors(tree: ast.AST) -> set[int]:
    """String arguments of ``importlib.resources.files(...)``: a package named to find data files, not code."""
    return {
        id(arg)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and "files" in (getattr(node.func, "attr", None), getattr(node.func, "id", None))
        for arg in node.args
    }


def _is_module_path(value: object) -> bool:
    """A dotted path of a medfoundry module (the whole string), e.g. ``"medfoundry.modeling.adapters.lora"``."""
    return isinstance(value, str) and value.startswith("medfoundry.") and value in MODULES


def _imported(tree: ast.AST, module: str, is_package: bool) -> list[tuple[int, str]]:
    """Every ``medfoundry`` module named by an import anywhere in ``tree`` (functions included), or by a string
    that is a module path (what ``import_module``, ``moved`` and the registry import by name)."""
    package = module if is_package else module.rpartition(".")[0]
    skip = _docstrings(tree) | _resource_anchors(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                if node.level > 1:
                    base = base[: -(node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            # ``from medfoundry import demo``, ``from .nnunet import nnunet_trainers``: the submodule too
            found += [(node.lineno, f"{target}.{a.name}") for a in node.names if f"{target}.{a.name}" in MODULES]
        elif isinstance(node, ast.Constant) and id(node) not in skip and _is_module_path(node.value):
            found.append((node.lineno, node.value))
    return found


def _resolve(name: str) -> str | None:
    """The medfoundry module file a dotted name lands in (its longest module prefix), or None."""
    parts = name.split(".")
    while parts and parts[0] == "medfoundry":
        candidate = ".".join(parts)
        if candidate in MODULES:
            return candidate
        parts.pop()
    return None


def import_graph() -> dict[str, dict[str, int]]:
    """module -> {imported medfoundry module: first line that imports it} (self-references left out)."""
    graph = {}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        edges: dict[str, int] = {}
        for lineno, target in _imported(tree, module, path.name == "__init__.py"):
            resolved = _resolve(target)
            if resolved is not None and resolved != module:
                edges.setdefault(resolved, lineno)
        graph[module] = edges
    return graph


def _where(module: str, lineno: int) -> str:
    path = MODULES.get(module)
    return f"{path.relative_to(SRC.parent) if path else module}:{lineno}"


def layer_problems(graph: dict[str, dict[str, int]]) -> list[str]:
    """Imports of a higher layer or of a sibling layer, except the listed deprecated forwards."""
    problems = []
    for module, edges in graph.items():
        own = layer_of(module)
        for target, lineno in edges.items():
            other = layer_of(target)
            if own is None or other is None or other == own or (module, target) in DEPRECATED_FORWARDS:
                continue
            if RANK[other] >= RANK[own]:
                kind = "a sibling" if RANK[other] == RANK[own] else "a higher"
                problems.append(f"{_where(module, lineno)} ({own}) imports {target}: {kind} layer ({other})")
    return problems


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The groups of modules that import each other, directly or through others (Tarjan's strongly connected
    components with more than one module), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_layer_of_maps_modules_to_layers():
    assert layer_of("medfoundry.io.readers") == "io"
    assert layer_of("medfoundry.api") == "api"
    assert layer_of("medfoundry.viewer.session") == "viewer"
    assert layer_of("medfoundry._deprecated") == "_deprecated"
    assert layer_of("medfoundry") is None
    assert layer_of("numpy") is None


def test_every_module_has_a_layer():
    """A new package or top-level module must be placed in TIERS (it would otherwise escape the check)."""
    missing = sorted(m for m in MODULES if m != "medfoundry" and layer_of(m) is None)
    assert not missing, f"modules in no layer (add them to TIERS): {missing}"


def test_the_package_root_imports_nothing_of_medfoundry():
    graph = import_graph()
    assert graph["medfoundry"] == {}


def test_the_check_sees_lazy_and_relative_imports():
    code = "def f():\n    from ..training import heads\n    import medfoundry.cli.main\n"
    tree = ast.parse(code)
    targets = [t for _, t in _imported(tree, "medfoundry.inference.x", is_package=False)]
    assert "medfoundry.training" in targets
    assert "medfoundry.cli.main" in targets
    assert "medfoundry.training.heads" in targets  # the submodule itself, for the cycle check


def test_the_check_reads_module_paths_held_in_strings():
    code = (
        '"""Docstrings name modules too: medfoundry.cli.main is not imported here."""\n'
        "import importlib\n"
        "from medfoundry._deprecated import moved\n"
        '__getattr__ = moved(__name__, "medfoundry.training.nnunet.report")\n'
        'BUILDERS = {"lora": "medfoundry.modeling.adapters.lora"}\n'
        "def f():\n"
        '    """medfoundry.api"""\n'
        '    importlib.resources.files("medfoundry.viewer")\n'
        '    return importlib.import_module("medfoundry.cli.main"), "medfoundry.no_such_module", "medfoundry"\n'
    )
    targets = {t for _, t in _imported(ast.parse(code), "medfoundry.evaluation.x", is_package=False)}
    assert {"medfoundry.training.nnunet.report", "medfoundry.modeling.adapters.lora", "medfoundry.cli.main"} <= targets
    assert not targets & {"medfoundry.api", "medfoundry.viewer", "medfoundry.no_such_module", "medfoundry"}


def test_the_checks_fail_on_an_upward_import_a_sibling_import_and_a_cycle():
    graph = {
        "medfoundry.io.a": {"medfoundry.training.b": 3},
        "medfoundry.training.b": {"medfoundry.io.a": 7},
        "medfoundry.data.c": {"medfoundry.modeling.d": 1},
        "medfoundry.modeling.d": {},
    }
    problems = layer_problems(graph)
    assert len(problems) == 2
    assert any("(io) imports medfoundry.training.b: a higher layer" in p for p in problems)
    assert any("(data) imports medfoundry.modeling.d: a sibling layer" in p for p in problems)
    assert cycles(graph) == [["medfoundry.io.a", "medfoundry.training.b"]]
    three = {"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}
    assert cycles(three) == [["a", "b", "c"]]


def test_no_module_imports_a_higher_or_sibling_layer():
    problems = layer_problems(import_graph())
    assert not problems, "imports against the layer order:\n" + "\n".join(problems)


def test_no_two_modules_import_each_other():
    """No circle in the import graph, not even through a function-level import or a module path in a string."""
    graph = import_graph()
    found = cycles(graph)
    lines = []
    for group in found:
        members = set(group)
        lines += [f"{_where(m, n)}: {m} -> {t}" for m in group for t, n in graph[m].items() if t in members]
    assert not found, "modules that import each other:\n" + "\n".join(lines)


def test_deprecated_forwards_are_still_real():
    """Each listed exception is a forward its alias module still makes, and that module imports nothing else."""
    graph = import_graph()
    for alias, target in DEPRECATED_FORWARDS:
        assert set(graph[alias]) == {"medfoundry._deprecated", target}, alias


# old path -> (name, new module): moved names keep working for one release, with a DeprecationWarning
MOVED = {
    "medfoundry.training.heads": ("LinearHead", "medfoundry.modeling.heads"),
    "medfoundry.training.cnn_baseline": ("SliceCNN", "medfoundry.modeling.slice_cnn"),
    "medfoundry.training.nnunet.fusion": ("FusionUNet", "medfoundry.modeling.fusion"),
    "medfoundry.evaluation.nnunet_report": ("summarize", "medfoundry.training.nnunet.report"),
}
# module -> (old name, new name): renamed classes
RENAMED = {
    "medfoundry.training.finetune.engine": ("EmbeddingCache", "MemoryEmbeddingCache"),
    "medfoundry.inference.embedding_cache": ("EmbeddingCache", "DiskEmbeddingCache"),
}


@pytest.mark.parametrize("module_name", sorted(RENAMED))
def test_renamed_classes_warn_and_forward(module_name):
    old, new = RENAMED[module_name]
    module = importlib.import_module(module_name)
    with pytest.warns(DeprecationWarning, match=new):
        assert getattr(module, old) is getattr(module, new)


@pytest.mark.parametrize("old", sorted(MOVED))
def test_old_import_paths_warn_and_forward(old):
    name, new = MOVED[old]
    module = importlib.import_module(old)
    with pytest.warns(DeprecationWarning, match=new.replace(".", r"\.")):
        obj = getattr(module, name)
    assert obj is getattr(importlib.import_module(new), name)
    with pytest.raises(AttributeError):
        module.no_such_name  # noqa: B018 - attribute access is the test
