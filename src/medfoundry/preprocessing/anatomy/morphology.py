"""Physical-unit morphology on the working grid: grow, shrink and close by millimetres (Euclidean distance on the
mask's bounding box only, so that small organs cost little), and fill holes slice by slice."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def _box(mask: np.ndarray, margin: tuple[int, ...]) -> tuple[slice, ...] | None:
    idx = [np.nonzero(mask.any(axis=tuple(b for b in range(mask.ndim) if b != a)))[0] for a in range(mask.ndim)]
    if any(i.size == 0 for i in idx):
        return None
    return tuple(
        slice(max(0, int(i[0]) - m), min(n, int(i[-1]) + m + 1))
        for i, m, n in zip(idx, margin, mask.shape, strict=True)
    )


def dilate_mm(mask: np.ndarray, spacing, mm: float) -> np.ndarray:
    """Voxels within ``mm`` (Euclidean, physical) of ``mask``; computed on its bounding box only."""
    margin = tuple(int(np.ceil(mm / s)) + 1 for s in spacing)
    box = _box(mask, margin)
    out = np.zeros(mask.shape, dtype=bool)
    if box is not None:
        out[box] = ndimage.distance_transform_edt(~mask[box], sampling=spacing) <= mm
    return out


def erode_mm(mask: np.ndarray, spacing, mm: float) -> np.ndarray:
    """Voxels of ``mask`` more than ``mm`` from its outside (the image edge counts as outside)."""
    box = _box(mask, (1, 1, 1))
    out = np.zeros(mask.shape, dtype=bool)
    if box is not None:
        padded = np.pad(mask[box], 1)
        out[box] = (ndimage.distance_transform_edt(padded, sampling=spacing) > mm)[1:-1, 1:-1, 1:-1]
    return out


def close_mm(mask: np.ndarray, spacing, mm: float) -> np.ndarray:
    """Morphological closing by a ball of ``mm``: gaps and notches narrower than about 2 x ``mm`` filled."""
    return erode_mm(dilate_mm(mask, spacing, mm), spacing, mm) | mask


def fill_slices(mask: np.ndarray) -> np.ndarray:
    """Holes filled on each axial (axis 0) slice: background not connected to the slice's edge within the slice.
    One labelling of the whole stack (no connectivity across slices), not one call per slice."""
    mask = np.asarray(mask, dtype=bool)
    box = _box(mask, (0, 1, 1))
    if box is None:
        return mask.copy()
    background = np.pad(~mask[box], ((0, 0), (1, 1), (1, 1)), constant_values=True)
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = ndimage.generate_binary_structure(2, 1)
    labels, _ = ndimage.label(background, structure)
    edge = np.unique(
        np.concatenate([labels[:, 0].ravel(), labels[:, -1].ravel(), labels[:, :, 0].ravel(), labels[:, :, -1].ravel()])
    )
    holes = (labels > 0) & ~np.isin(labels, edge)
    out = mask.copy()
    out[box] |= holes[:, 1:-1, 1:-1]
    return out
