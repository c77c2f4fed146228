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

from medfoundry.preprocessing.anatomy.liver import (  # noqa: F401 - the reference region lives with the liver
    LIVER_SUV_RANGE,
    MAX_LOCAL_CV,
    MIN_REFERENCE_ML,
    REFERENCE_CUBE_MM,
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
    suv: np.ndarray, spacing_zyx: tuple[float, ...], threshold: float | None = None
) -> ThresholdInfo:
    """The candidate threshold: ``threshold`` if given, else PERCIST 1.5 x SUVmean + 2 SD of the reference
    region (never below ``MIN_THRESHOLD_SUV``), else ``FALLBACK_SUV``."""
    if threshold is not None:
        return ThresholdInfo(float(threshold), "user")
    ref = find_reference_region(suv, spacing_zyx)
    if ref is None:
        return ThresholdInfo(FALLBACK_SUV, "fallback")
    mean, sd, centre = ref
    return ThresholdInfo(max(MIN_THRESHOLD_SUV, 1.5 * mean + 2.0 * sd), "percist-liver", mean, sd, centre)
