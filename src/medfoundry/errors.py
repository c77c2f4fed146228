"""Errors that the CLI turns into one clear line (no traceback) and a non-zero exit code.

A message names a parameter by its Python name in backquotes (`` `min_volume_ml` must be >= 0 mL``); the error's
:attr:`MedfoundryError.parameters` lists them, and the command line prints each as its option
(``--min-volume``): the layers below ``cli`` do not know how their parameters are spelled there.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

_NAMED = re.compile(r"`([A-Za-z_][A-Za-z0-9_]*(?:=[A-Za-z0-9_]+)?)`")


def named_parameters(message: str) -> tuple[str, ...]:
    """The parameters ``message`` names (each in backquotes: `` `name` `` or `` `name=value` ``), in order."""
    return tuple(dict.fromkeys(_NAMED.findall(message)))


class MedfoundryError(Exception):
    """Base class: a problem the user can fix, with a message that says what and where."""

    _parameters: tuple[str, ...] | None = None

    @property
    def parameters(self) -> tuple[str, ...]:
        """The parameters the message names (each written `` `name` `` in it), in the order they appear."""
        if self._parameters is not None:
            return self._parameters
        return named_parameters(str(self))

    @property
    def parameter(self) -> str | None:
        """The first parameter the message names (``None``: none)."""
        return next(iter(self.parameters), None)


class InputError(MedfoundryError, ValueError):
    """A file, array or argument that cannot be used; the message names the file (or parameter) and the problem.
    ``parameter`` (one name or several) says which parameters the message names, where not each in backquotes."""

    def __init__(self, path: str | Path | None, problem: str, parameter: str | Sequence[str] | None = None):
        self.path = None if path is None else str(path)
        self.problem = problem
        if parameter is not None:
            self._parameters = (parameter,) if isinstance(parameter, str) else tuple(parameter)
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


class OutputExistsError(MedfoundryError, FileExistsError):
    """An output path exists and ``overwrite`` was not asked for."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        super().__init__(f"{self.path}: output exists; pass `overwrite` (overwrite=True) to replace it")


class WeightsError(MedfoundryError, FileNotFoundError):
    """A weights file is missing or is not the expected one."""


class MedfoundryWarning(UserWarning):
    """Something the user should know about an input that is still used (e.g. an image without contrast)."""


class BatchFailures(MedfoundryError):
    """Some items of a batch failed (the others were written); ``done`` and ``failed`` list them."""

    def __init__(self, where: str | Path, done: list, failed: list[tuple[str, str]]):
        self.done, self.failed = list(done), list(failed)
        shown = "; ".join(f"{name}: {why}" for name, why in self.failed[:3])
        more = f"; and {len(self.failed) - 3} more" if len(self.failed) > 3 else ""
        total = len(self.done) + len(self.failed)
        super().__init__(f"{where}: {len(self.failed)} of {total} files failed ({shown}{more})")
