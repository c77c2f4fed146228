"""Old import paths kept for one release: a module ``__getattr__`` that warns and forwards to the new home."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Iterable, Mapping


def moved(old: str, new: str, names: Iterable[str] | Mapping[str, str] | None = None) -> Callable[[str], object]:
    """A module-level ``__getattr__`` for module ``old`` that forwards to module ``new``.

    ``names``: the moved names (every name when None), or a mapping old name -> new name for renamed ones.
    Each access warns with a :class:`DeprecationWarning` naming the new path.
    """
    if names is None:
        renames = None
    elif isinstance(names, Mapping):
        renames = dict(names)
    else:
        renames = {n: n for n in names}

    def __getattr__(name: str) -> object:
        if name.startswith("__") or (renames is not None and name not in renames):
            raise AttributeError(f"module {old!r} has no attribute {name!r}")
        target = importlib.import_module(new)
        new_name = name if renames is None else renames[name]
        if not hasattr(target, new_name):
            raise AttributeError(f"module {old!r} has no attribute {name!r}")
        warnings.warn(
            f"{old}.{name} moved to {new}.{new_name}; the old path will be removed in the next release",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(target, new_name)

    return __getattr__
