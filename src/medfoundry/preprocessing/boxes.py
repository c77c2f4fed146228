"""Bounding boxes of masks and label maps: one implementation (``scipy.ndimage.find_objects``) for every caller.

Two forms: array slices (``tuple[slice, ...]``, for cropping) and prompt boxes ``[x0, y0, (z0,) x1, y1, (z1)]``
of inclusive pixel indices, last axis first (the order MedSAM's boxes use).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage


def _as_labels(arr: np.ndarray) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.dtype == bool:
        return arr.view(np.uint8)
    if not np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.int64)
    return arr


def label_slices(arr: np.ndarray, labels: Sequence[int]) -> dict[int, tuple[slice, ...] | None]:
    """Array slices of the bounding box of each wanted label > 0 (None where absent), in one pass."""
    wanted = [int(lab) for lab in labels if lab > 0]
    if not wanted:
        return {}
    arr = _as_labels(arr)
    max_label = min(int(arr.max()) if arr.size else 0, max(wanted))
    boxes = ndimage.find_objects(arr, max_label=max_label) if max_label > 0 else []
    return {lab: (boxes[lab - 1] if lab <= len(boxes) else None) for lab in wanted}


def mask_slices(mask: np.ndarray) -> tuple[slice, ...] | None:
    """Array slices of the bounding box of the non-zero part of ``mask``; None when it is empty."""
    return label_slices(np.asarray(mask) != 0, [1])[1]


def _to_box(slices: tuple[slice, ...]) -> list[int]:
    return [s.start for s in slices][::-1] + [s.stop - 1 for s in slices][::-1]


def grow_box(box: np.ndarray, margin: float, size: tuple[int, int]) -> np.ndarray:
    """A box ``[x0, y0, x1, y1]`` grown by ``margin`` pixels on every side and clipped to an (H, W) image."""
    h, w = size
    grown = np.asarray(box, dtype=np.float32) + np.array([-margin, -margin, margin, margin], dtype=np.float32)
    return np.clip(grown, 0.0, np.array([w - 1.0, h - 1.0, w - 1.0, h - 1.0], dtype=np.float32))


def mask_box(mask: np.ndarray, margin: float = 0.0) -> np.ndarray | None:
    """``[x0, y0, (z0,) x1, y1, (z1)]`` (inclusive, float32) of the non-zero part of ``mask``; None when empty.

    ``margin`` > 0 (2D masks): the box grown by that many pixels on every side, clipped to the mask's (H, W)
    (:func:`grow_box`; the prompt that 3D propagation gives the next slice).
    """
    slices = mask_slices(mask)
    if slices is None:
        return None
    box = np.asarray(_to_box(slices), dtype=np.float32)
    return grow_box(box, margin, np.shape(mask)) if margin else box


def label_boxes(labels: np.ndarray) -> np.ndarray:
    """One box per label value > 0 of a label map, in label order: (N, 4) ``[x0, y0, x1, y1]`` in 2D, (N, 6)
    ``[x0, y0, z0, x1, y1, z1]`` in 3D (inclusive pixel indices)."""
    labels = np.asarray(labels)
    values = [int(v) for v in np.unique(labels) if v > 0]
    found = label_slices(labels, values)
    boxes = [_to_box(found[v]) for v in values if found[v] is not None]
    return np.asarray(boxes, dtype=np.float32).reshape(-1, 2 * labels.ndim)


def loosen_box(
    box: np.ndarray, rng: np.random.Generator, shape: Sequence[int], fraction: float = 0.1, z_slices: int = 1
) -> np.ndarray:
    """A looser version of a prompt box, as a hand-drawn one would be: each in-plane side moved out by a random
    0..``fraction`` of the box's size along that axis plus 0..1 pixel, and (3D boxes ``[x0, y0, z0, x1, y1, z1]``)
    each z side by 0..``z_slices`` slices; clipped to an image of ``shape`` ((H, W) or (Z, H, W))."""
    box = np.asarray(box, dtype=np.float32)
    dims = box.size // 2
    lo, hi = box[:dims].copy(), box[dims:].copy()
    size = hi - lo + 1.0
    limit = np.asarray(shape[::-1][:dims], dtype=np.float32) - 1.0  # x, y(, z) upper bounds
    for axis in range(min(dims, 2)):
        lo[axis] -= rng.uniform(0.0, fraction * size[axis] + 1.0)
        hi[axis] += rng.uniform(0.0, fraction * size[axis] + 1.0)
    if dims == 3:
        lo[2] -= rng.integers(0, z_slices + 1)
        hi[2] += rng.integers(0, z_slices + 1)
    return np.concatenate([np.clip(lo, 0.0, limit), np.clip(hi, 0.0, limit)]).astype(np.float32)
