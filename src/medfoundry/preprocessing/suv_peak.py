"""PERCIST's SUVpeak sphere: the highest mean SUV in a 1 mL sphere (radius 6.20 mm), as a kernel and as a map over a
whole volume (the SUVpeak of any region is the map's maximum over it). :mod:`medfoundry.evaluation.pet_quant`
measures lesions with it; the anatomy features and the unlabelled-foci rule use the map.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

SPHERE_1ML_RADIUS_MM = float((3.0 * 1000.0 / (4.0 * np.pi)) ** (1.0 / 3.0))  # 6.2035 mm


def sphere_kernel(spacing_zyx: tuple[float, ...], radius_mm: float = SPHERE_1ML_RADIUS_MM) -> np.ndarray:
    """Boolean kernel of the voxels whose centres lie within ``radius_mm`` of the central voxel's centre."""
    half = [int(np.floor(radius_mm / s)) for s in spacing_zyx]
    grids = np.meshgrid(*[np.arange(-h, h + 1) * s for h, s in zip(half, spacing_zyx, strict=False)], indexing="ij")
    return sum(g**2 for g in grids) <= radius_mm**2 + 1e-9


def suv_peak_map(suv: np.ndarray, spacing_zyx: tuple[float, ...]) -> np.ndarray:
    """The 1 mL sphere mean centred at every voxel (voxels outside the image do not count): the SUVpeak of any
    region is the maximum of this map over its voxels (the same numbers as
    :func:`medfoundry.evaluation.pet_quant.suv_peak`, for every region of a volume at once)."""
    kernel = sphere_kernel(spacing_zyx).astype(np.float32)
    data = np.asarray(suv, dtype=np.float32)
    total = ndimage.correlate(data, kernel, mode="constant", cval=0.0)
    count = ndimage.correlate(np.ones(data.shape, np.float32), kernel, mode="constant", cval=0.0)
    return total / np.maximum(count, 1.0)
