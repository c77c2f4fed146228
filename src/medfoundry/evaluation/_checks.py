"""Argument checks shared by the metric functions: binary masks of one shape, spacing in array axis order."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from medfoundry.errors import InputError


def as_binary(mask: np.ndarray, name: str) -> np.ndarray:
    """``mask`` as a bool array; refuses values other than 0/1 (label maps go to ``evaluate_case``)."""
    arr = np.asarray(mask)
    if arr.dtype == bool:
        return arr
    if arr.dtype.kind not in "biuf":
        raise InputError(None, f"{name} mask has dtype {arr.dtype}; expected a binary (0/1 or bool) array")
    out = arr != 0
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise InputError(None, f"{name} mask contains NaN or inf values")
    if np.count_nonzero(arr[out] != 1):
        raise InputError(
            None,
            f"{name} mask has values other than 0 and 1 (max {arr.max()}); threshold it, or pass label maps "
            "to evaluate_case",
        )
    return out


def check_pair(
    pred: np.ndarray,
    gt: np.ndarray,
    convert: Callable[[np.ndarray, str], np.ndarray] | None = None,
    kind: str = "masks",
) -> tuple[np.ndarray, np.ndarray]:
    """Both arrays converted by ``convert`` (default: to bool masks), checked to share one 2D or 3D shape."""
    convert = convert or as_binary
    p, g = convert(pred, "prediction"), convert(gt, "ground-truth")
    if p.shape != g.shape:
        raise InputError(None, f"prediction shape {p.shape} differs from ground-truth shape {g.shape}")
    if p.ndim not in (2, 3):
        raise InputError(None, f"{kind} must be 2D or 3D, got {p.ndim} dimensions (shape {p.shape})")
    return p, g


def check_spacing(spacing: Sequence[float] | float | None, ndim: int) -> tuple[float, ...]:
    """Spacing (mm) in array axis order, one positive finite value per axis; ``None`` means 1 mm."""
    if spacing is None:
        return (1.0,) * ndim
    if np.isscalar(spacing):
        spacing = (float(spacing),) * ndim  # type: ignore[arg-type]
    sp = tuple(float(s) for s in spacing)  # type: ignore[union-attr]
    if len(sp) != ndim:
        raise InputError(None, f"spacing {sp} has {len(sp)} values but the masks have {ndim} axes")
    if any(not np.isfinite(s) or s <= 0 for s in sp):
        raise InputError(None, f"spacing must be positive and finite, got {sp}")
    return sp
