"""Numbers given by a user, checked in one place: CLI options (``medfoundry.cli.common``'s argparse types), the
viewer's JSON (``medfoundry.viewer.app``) and Python API arguments (``medfoundry.api``) all call these.

A number must be a real number (not a bool or a string), finite, usable as a float32 (the type images, SUV
factors and coordinates are computed in: ``|value| <= 3.4e38``, and a non-zero value must not be so small that
float32 turns it into 0), and inside the range the caller gives. Integers must fit in 32 bits unless the caller
gives its own bounds. A value that would overflow is refused here, before any work, never by a crash or a NumPy
warning later. No NumPy here: the CLI's option parser calls this before anything heavy is imported.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from medfoundry.errors import InputError

FLOAT32_MAX = 3.4028234663852886e38  # numpy.finfo(numpy.float32).max
FLOAT32_TINY = 1.1754943508222875e-38  # numpy.finfo(numpy.float32).tiny: smallest normal float32
INT32_MAX = 2**31 - 1
MAX_COORDINATE = 1e6  # voxel indices beyond this are typos (no image is a million voxels wide)


def _interval(lo, hi, lo_open: bool, hi_open: bool) -> str:
    left = "(-inf" if lo is None else ("(" if lo_open else "[") + f"{lo:g}"
    right = "inf)" if hi is None else f"{hi:g}" + (")" if hi_open else "]")
    return f"{left}, {right}"


def _shown(value) -> str:
    """A value for a message: long integers shortened (``10**400`` is not printed in full)."""
    text = str(value)
    return text if len(text) <= 24 else f"{text[:12]}...({len(text)} digits)"


def check_number(
    value,
    name: str | None,
    *,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
    integer: bool = False,
) -> float | int:
    """``value`` as a float (or an int with ``integer``), or an :class:`InputError` naming ``name`` (an option,
    a JSON field, an argument) and the problem. Strings are parsed (``"1e-3"``, ``"12"``), so the CLI passes
    its text as it is."""
    kind = "an integer" if integer else "a number"
    if isinstance(value, str):
        text = value.strip()
        try:
            value = int(text) if integer else float(text)
        except ValueError:
            raise InputError(name, f"expected {kind}, got {text!r}") from None
    if isinstance(value, bool) or value is None:
        raise InputError(name, f"expected {kind}, got {value!r}")
    if integer:
        return _check_integer(value, name, lo, hi, lo_open, hi_open)
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise InputError(name, f"expected {kind}, got {_shown(value)}") from None
    if not math.isfinite(number):
        raise InputError(name, f"expected a finite number, got {value}")
    if abs(number) > FLOAT32_MAX:
        raise InputError(name, f"{number:g} is out of range: values are computed in float32 (at most 3.4e+38)")
    if number != 0 and abs(number) < FLOAT32_TINY:
        raise InputError(name, f"{number:g} is too small: it would be 0 in float32 (smallest magnitude 1.2e-38)")
    bad = (lo is not None and (number < lo or (lo_open and number == lo))) or (
        hi is not None and (number > hi or (hi_open and number == hi))
    )
    if bad:
        raise InputError(name, f"expected a number in {_interval(lo, hi, lo_open, hi_open)}, got {number:g}")
    return number


def _check_integer(value, name, lo, hi, lo_open: bool, hi_open: bool) -> int:
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InputError(name, f"expected a finite number, got {value}")
        if not value.is_integer():
            raise InputError(name, f"expected an integer, got {value:g}")
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        raise InputError(name, f"expected an integer, got {_shown(value)}") from None
    low = -INT32_MAX - 1 if lo is None else lo
    high = INT32_MAX if hi is None else hi
    if number < low or number > high or (lo_open and number == lo) or (hi_open and number == hi):
        bound = f">= {low}" if hi is None and number < low else f"in {low}..{high}"
        raise InputError(name, f"expected an integer {bound}, got {_shown(number)}")
    return number


def check_coordinates(values: Iterable, name: str | None, count: int | tuple[int, ...] | None = None) -> list[float]:
    """Voxel coordinates (a box, a point): each a finite number within ``MAX_COORDINATE`` of 0; ``count``: how
    many there must be (one number or the allowed ones)."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise InputError(name, f"expected a list of numbers, got {values!r}")
    values = list(values)
    allowed = (count,) if isinstance(count, int) else count
    if allowed is not None and len(values) not in allowed:
        want = " or ".join(map(str, allowed))
        raise InputError(name, f"takes {want} numbers, got {len(values)}: {values}")
    out = []
    for value in values:
        number = check_number(value, name)
        if abs(number) > MAX_COORDINATE:
            raise InputError(name, f"coordinates are voxel indices; {number:g} is far too large")
        out.append(number)
    return out
