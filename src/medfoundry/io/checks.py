"""Checks shared by the readers and writers: usable arrays, integer labels and matching grids."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medfoundry.errors import InputError
from medfoundry.io.image import MedicalImage

LABEL_DTYPES = (np.uint8, np.uint16, np.uint32)


def check_image_array(array: np.ndarray, path: str | Path | None, rgb: bool = False) -> np.ndarray:
    """Refuse empty, 4D and non-finite arrays; cast floats to float32 and bools to uint8."""
    array = np.asarray(array)
    if array.size == 0:
        raise InputError(path, f"the image is empty (shape {array.shape})")
    spatial = array.ndim - 1 if rgb else array.ndim
    if spatial > 3:
        raise InputError(path, f"4D image with shape {array.shape}, give one 3D volume")
    if spatial < 2:
        raise InputError(path, f"image with shape {array.shape} has fewer than 2 axes")
    if array.dtype == bool:
        array = array.astype(np.uint8)
    elif np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32, copy=False)
        bad = int(np.count_nonzero(~np.isfinite(array)))
        if bad:
            raise InputError(path, f"{bad} voxels are NaN or infinite (of {array.size})")
    elif np.issubdtype(array.dtype, np.complexfloating) or not np.issubdtype(array.dtype, np.integer):
        raise InputError(path, f"unsupported voxel type {array.dtype}")
    return array


def label_dtype(max_label: int, path: str | Path | None = None) -> type:
    """The smallest unsigned integer dtype (uint8/uint16/uint32) holding ``max_label``."""
    for dtype in LABEL_DTYPES:
        if max_label <= np.iinfo(dtype).max:
            return dtype
    raise InputError(path, f"label {max_label} does not fit in uint32")


def to_labels(array: np.ndarray, path: str | Path | None, what: str = "mask") -> np.ndarray:
    """Integer labels >= 0 in the smallest unsigned dtype; non-integer or negative values are refused.

    The one label-map check (readers, writers, npz files and the metrics); ``what`` names the array in messages.
    """
    array = np.asarray(array)
    if array.size == 0:
        raise InputError(path, f"the {what} is empty (shape {array.shape})")
    if array.dtype == bool:
        return array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(array)))
        if bad:
            raise InputError(path, f"{bad} {what} voxels are NaN or infinite")
        frac = array != np.round(array)
        if frac.any():
            example = float(array[frac].flat[0])
            raise InputError(
                path,
                f"the {what} has {int(frac.sum())} non-integer values (e.g. {example:g}); "
                f"a {what} holds integer labels (is this an image?)",
            )
    elif not np.issubdtype(array.dtype, np.integer):
        raise InputError(path, f"unsupported {what} voxel type {array.dtype}")
    lo, hi = array.min(), array.max()
    if lo < 0:
        raise InputError(path, f"the {what} has negative labels (min {lo:g}); labels must be >= 0")
    return array.astype(label_dtype(int(hi), path), copy=False)


def grid_differences(image: MedicalImage, reference: MedicalImage, atol: float = 1e-3) -> list[str]:
    """What differs between the grids of ``image`` and ``reference`` (empty when they match)."""
    diffs = []
    if image.spatial_shape != reference.spatial_shape:
        return [f"shape {image.spatial_shape} vs reference {reference.spatial_shape}"]
    for name in ("spacing", "origin", "direction"):
        a, b = getattr(image, name), getattr(reference, name)
        if not np.allclose(a, b, atol=atol, rtol=0):
            fmt = lambda v: "(" + ", ".join(f"{x:.4g}" for x in v) + ")"  # noqa: E731
            diffs.append(f"{name} {fmt(a)} vs reference {fmt(b)}")
    return diffs


def check_same_grid(image: MedicalImage, reference: MedicalImage, path: str | Path | None, atol: float = 1e-3) -> None:
    """Raise an InputError naming ``path`` and what differs when ``image`` is not on ``reference``'s grid."""
    diffs = grid_differences(image, reference, atol)
    if diffs:
        ref = f" ({reference.path})" if reference.path else ""
        raise InputError(path, f"not on the reference image grid{ref}: " + "; ".join(diffs))
