"""Layers import downward only: a module never imports (at module level or lazily) a higher layer."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "medfoundry"

# Each layer may import only itself and the layers before it.
LAYERS = (
    "errors",
    "io",
    "preprocessing",
    "evaluation",
    "modeling",
    "data",
    "inference",
    "training",
    "api",
    "demo",
    "cli",
)
RANK = {name: i for i, name in enumerate(LAYERS)}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> str | None:
    """The layer of a dotted ``medfoundry.*`` name, or None for the package root / non-medfoundry names."""
    parts = module.split(".")
    if parts[0] != "medfoundry" or len(parts) < 2:
        return None
    return parts[1] if parts[1] in RANK else None


def _imported(tree: ast.AST, module: str, is_package: bool) -> list[tuple[int, str]]:
    """Every ``medfoundry`` module named by an import anywhere in ``tree`` (functions included)."""
    package = module if is_package else module.rpartition(".")[0]
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
            # ``from medfoundry import demo`` names a layer through the alias
            if target == "medfoundry":
                found += [(node.lineno, f"medfoundry.{a.name}") for a in node.names]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
            "import_module",
        ):
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                found.append((node.lineno, node.args[0].value))
    return found


def upward_imports() -> list[str]:
    problems = []
    for path in sorted(SRC.rglob("*.py")):
        module = _module_name(path)
        own = layer_of(module)
        if own is None:  # medfoundry/__init__.py
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        for lineno, target in _imported(tree, module, path.name == "__init__.py"):
            other = layer_of(target)
            if other is not None and RANK[other] > RANK[own]:
                problems.append(f"{path.relative_to(SRC.parent)}:{lineno} ({own}) imports {target} ({other})")
    return problems


def test_layer_of_maps_modules_to_layers():
    assert layer_of("medfoundry.io.readers") == "io"
    assert layer_of("medfoundry.api") == "api"
    assert layer_of("medfoundry") is None
    assert layer_of("numpy") is None


def test_the_check_sees_lazy_and_relative_imports():
    code = "def f():\n    from ..training import heads\n    import medfoundry.cli.main\n"
    tree = ast.parse(code)
    targets = [t for _, t in _imported(tree, "medfoundry.inference.x", is_package=False)]
    assert "medfoundry.training" in targets
    assert "medfoundry.cli.main" in targets


def test_no_module_imports_a_higher_layer():
    problems = upward_imports()
    assert not problems, "upward imports:\n" + "\n".join(problems)


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
