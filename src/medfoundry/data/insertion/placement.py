"""Where a lesion may go in a whole-body PET: inside the body, away from hot organs and existing lesions.

Rules (no CT, no organ labels; the same liver-based threshold as the lesion finder):

* **body**: SUV (lightly smoothed) above ``body_suv``, the largest 3D component, holes filled slice by slice
  (so the lungs, whose uptake is low, count as inside), then eroded by ``body_margin_mm``;
* **hot organs** (brain, heart, bladder, kidneys, and any other focal uptake): voxels above the scan's
  PERCIST liver threshold (:func:`medfoundry.preprocessing.pet_reference.adaptive_threshold`), holes filled
  slice by slice (the brain's cooler white matter sits inside its hot cortex), grown by ``organ_margin_mm``;
* the scan's own lesions (its label) grown by the same margin;
* optionally only some slices (``z_allowed``, e.g. one body region of a region split).

A lesion is placed only where **every** voxel of it lies in the allowed region.
"""

from __future__ import annotations

from dataclasses import dataclass

import cc3d
import numpy as np
from scipy import ndimage

from medfoundry.preprocessing.pet_reference import adaptive_threshold

BODY_SUV = 0.2  # air and the scanner bed are ~0 SUV; fat and muscle 0.3-1
BODY_MARGIN_MM = 5.0
ORGAN_MARGIN_MM = 15.0


@dataclass
class PlacementMap:
    """Boolean (z, y, x) maps of one background and the hot-organ threshold used."""

    body: np.ndarray
    excluded: np.ndarray
    allowed: np.ndarray
    hot_threshold: float
    threshold_method: str


def _fill_slices(mask: np.ndarray) -> np.ndarray:
    return np.stack([ndimage.binary_fill_holes(s) for s in mask]) if mask.size else mask


def grow_mask(mask: np.ndarray, spacing_zyx: tuple[float, ...], mm: float) -> np.ndarray:
    """``mask`` grown by ``mm`` (Euclidean distance in physical units)."""
    if mm <= 0 or not mask.any():
        return mask.copy()
    return ndimage.distance_transform_edt(~mask, sampling=spacing_zyx) <= mm


def body_mask(suv: np.ndarray, spacing_zyx: tuple[float, ...], body_suv: float = BODY_SUV) -> np.ndarray:
    """The patient's body: smoothed SUV above ``body_suv``, largest component, holes filled per axial slice."""
    smooth = ndimage.gaussian_filter(np.asarray(suv, np.float32), 1.0)
    above = smooth > body_suv
    if not above.any():
        return above
    components = cc3d.connected_components(above, connectivity=6)
    counts = np.bincount(components.ravel())
    counts[0] = 0
    return _fill_slices(components == int(counts.argmax()))


def placement_map(
    suv: np.ndarray,
    spacing_zyx: tuple[float, ...],
    own_lesions: np.ndarray | None = None,
    z_allowed: np.ndarray | None = None,
    body_suv: float = BODY_SUV,
    body_margin_mm: float = BODY_MARGIN_MM,
    organ_margin_mm: float = ORGAN_MARGIN_MM,
    hot_threshold: float | None = None,
) -> PlacementMap:
    """Body, excluded and allowed voxels of a background (see the module docstring for the rules)."""
    suv = np.asarray(suv, np.float32)
    body = body_mask(suv, spacing_zyx, body_suv)
    inner = ~grow_mask(~body, spacing_zyx, body_margin_mm) if body.any() else body
    info = adaptive_threshold(suv, spacing_zyx, hot_threshold)
    hot = _fill_slices(suv > info.threshold)
    if own_lesions is not None:
        hot |= np.asarray(own_lesions) > 0
    excluded = grow_mask(hot, spacing_zyx, organ_margin_mm)
    allowed = inner & ~excluded
    if z_allowed is not None:
        allowed &= np.asarray(z_allowed, bool)[:, None, None]
    return PlacementMap(body, excluded, allowed, float(info.threshold), info.method)


def restrict(pmap: PlacementMap, z_allowed: np.ndarray) -> PlacementMap:
    """``pmap`` with only the slices flagged in ``z_allowed`` allowed (e.g. one body region)."""
    allowed = pmap.allowed & np.asarray(z_allowed, bool)[:, None, None]
    return PlacementMap(pmap.body, pmap.excluded, allowed, pmap.hot_threshold, pmap.threshold_method)


def fits(allowed: np.ndarray, mask: np.ndarray, corner: tuple[int, int, int]) -> bool:
    """True when ``mask`` placed with its first voxel at ``corner`` lies inside the volume and in ``allowed``."""
    if any(c < 0 or c + n > s for c, n, s in zip(corner, mask.shape, allowed.shape, strict=True)):
        return False
    box = tuple(slice(c, c + n) for c, n in zip(corner, mask.shape, strict=True))
    return bool(allowed[box][mask].all())


def choose_corner(
    allowed: np.ndarray, mask: np.ndarray, rng: np.random.Generator, tries: int = 200
) -> tuple[int, int, int] | None:
    """A random box corner that puts the lesion's centre on an allowed voxel and the whole lesion in ``allowed``."""
    candidates = np.flatnonzero(allowed)
    if candidates.size == 0:
        return None
    half = np.array(mask.shape) // 2
    for _ in range(tries):
        centre = np.unravel_index(int(candidates[rng.integers(candidates.size)]), allowed.shape)
        corner = tuple(int(c - h) for c, h in zip(centre, half, strict=True))
        if fits(allowed, mask, corner):
            return corner
    return None
