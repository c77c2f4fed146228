"""Old import paths kept for one release: a module ``__getattr__`` that warns and forwards to the new home."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Iterable


def moved(old: str, new: str, names: Iterable[str] | None = None) -> Callable[[str], object]:
    """A module-level ``__getattr__`` for ``old`` that forwards ``names`` (every name when None) to module ``new``.

    Each access warns with a :class:`DeprecationWarning` naming the new path.
    """
    wanted = None if names is None else frozenset(names)

    def __getattr__(name: str) -> object:
        if name.startswith("__") or (wanted is not None and name not in wanted):
            raise AttributeError(f"module {old!r} has no attribute {name!r}")
        target = importlib.import_module(new)
        if not hasattr(target, name):
            raise AttributeError(f"module {old!r} has no attribute {name!r}")
        warnings.warn(
            f"{old}.{name} moved to {new}.{name}; the old path will be removed in the next release",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(target, name)

    return __getattr__
