"""One rule for every training loop that finds an earlier run in its output folder."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from medfoundry.errors import InputError


def resume_or_refuse(
    where: str | Path,
    found: Sequence[str | Path],
    *,
    resume: bool,
    overwrite: bool = False,
    what: str = "an earlier run",
) -> bool:
    """True when the loop should continue the run whose files ``found`` are in ``where``.

    Nothing found: start (False). ``resume``: continue (True). ``overwrite``: start over (False). Otherwise the
    earlier run is refused with one message naming its files; asking for both ``resume`` and ``overwrite`` is
    refused too.
    """
    if resume and overwrite:
        raise InputError(where, "choose `resume` (continue) or `overwrite` (start again), not both")
    if not found:
        return False
    if resume:
        return True
    if overwrite:
        return False
    names = ", ".join(Path(p).name for p in found)
    raise InputError(where, f"holds {what} ({names}); pass `resume` to continue it or `overwrite` to start over")
