"""The candidate threshold: PERCIST's liver-based 1.5 x SUVmean + 2 SD, with a robustly found reference region.

No CT and no organ labels are needed. The liver is found as the largest homogeneous region of moderate uptake:
every voxel gets the mean and standard deviation of SUV in a cube of about 3 cm (the size of PERCIST's liver
sphere); voxels whose local mean lies in ``LIVER_SUV_RANGE`` and whose local coefficient of variation is below
``MAX_LOCAL_CV`` are kept; the largest 3D component of those is the reference region, and the reference SUVmean
and SD are measured in the 3 cm cube at its most interior voxel. Muscle (SUV < 1.2), brain, bladder and
kidneys (SUV > 4 or heterogeneous) and tumours (heterogeneous) are left out by the two rules. When no such
region of at least ``MIN_REFERENCE_ML`` exists (a crop, a non-FDG tracer), the fixed ``FALLBACK_SUV`` is used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from medfoundry.preprocessing.anatomy.liver import (  # noqa: F401 - the reference region lives with the liver
    LIVER_SUV_RANGE,
    MAX_LOCAL_CV,
    MIN_REFERENCE_ML,
    REFERENCE_CUBE_MM,
    _cube_size,
    find_reference_region,
)

FALLBACK_SUV = 3.0  # fixed threshold when no reference region is found (a common whole-body FDG screening value)
MIN_THRESHOLD_SUV = 2.0  # an adaptive threshold is never lower than this (too noisy below)


@dataclass
class ThresholdInfo:
    """The threshold used and where it came from (``method`` is ``"percist-liver"``, ``"fallback"`` or
    ``"user"``); ``reference_centre_zyx`` is the voxel at the centre of the reference cube."""

    threshold: float
    method: str
    reference_mean: float | None = None
    reference_sd: float | None = None
    reference_centre_zyx: tuple[int, int, int] | None = None

    def as_dict(self) -> dict:
        return {
            "threshold_suv": round(float(self.threshold), 4),
            "method": self.method,
            "reference_suv_mean": None if self.reference_mean is None else round(float(self.reference_mean), 4),
            "reference_suv_sd": None if self.reference_sd is None else round(float(self.reference_sd), 4),
            "reference_centre_zyx": None if self.reference_centre_zyx is None else list(self.reference_centre_zyx),
        }


def adaptive_threshold(
    suv: np.ndarray, spacing_zyx: tuple[float, ...], threshold: float | None = None, liver: np.ndarray | None = None
) -> ThresholdInfo:
    """The candidate threshold: ``threshold`` if given, else PERCIST 1.5 x SUVmean + 2 SD of the reference
    region (never below ``MIN_THRESHOLD_SUV``), else, when a ``liver`` mask is given (the anatomy's, which allows
    for the scan's noise), the same in the 3 cm cube at the mask's most interior voxel (PERCIST's own ROI: 3 cm
    inside the right lobe), else ``FALLBACK_SUV``."""
    if threshold is not None:
        return ThresholdInfo(float(threshold), "user")
    ref = find_reference_region(suv, spacing_zyx)
    method = "percist-liver"
    if ref is None and liver is not None and np.any(liver):
        ref, method = liver_reference(suv, spacing_zyx, np.asarray(liver, bool)), "percist-anatomy-liver"
    if ref is None:
        return ThresholdInfo(FALLBACK_SUV, "fallback")
    mean, sd, centre = ref
    return ThresholdInfo(max(MIN_THRESHOLD_SUV, 1.5 * mean + 2.0 * sd), method, mean, sd, centre)


def liver_reference(suv: np.ndarray, spacing_zyx: tuple[float, ...], liver: np.ndarray) -> tuple[float, float, tuple]:
    """(SUVmean, SUV SD, centre voxel) of the 3 cm cube at the most interior voxel of the ``liver`` mask."""
    box = ndimage.find_objects(liver.astype(np.uint8))[0]  # the distance map on the liver's box only (fast)
    depth = ndimage.distance_transform_edt(np.pad(liver[box], 1), sampling=spacing_zyx)[1:-1, 1:-1, 1:-1]
    local = np.unravel_index(int(depth.argmax()), depth.shape)
    centre = tuple(int(b.start + i) for b, i in zip(box, local, strict=True))
    half = [s // 2 for s in _cube_size(spacing_zyx)]
    box = tuple(slice(max(0, c - h), c + h + 1) for c, h in zip(centre, half, strict=True))
    cube = np.asarray(suv[box], dtype=np.float64)
    return float(cube.mean()), float(cube.std()), centre
