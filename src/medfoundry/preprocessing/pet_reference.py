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

import cc3d
import numpy as np
from scipy import ndimage

LIVER_SUV_RANGE = (1.2, 4.0)  # PERCIST-normal liver SUVmean is about 1.5-3; the margin admits other scanners
MAX_LOCAL_CV = 0.2  # local SD / local mean in the 3 cm cube: liver parenchyma is homogeneous
REFERENCE_CUBE_MM = 30.0  # PERCIST: a 3 cm ROI in the right liver lobe
MIN_REFERENCE_ML = (
    400.0  # organ-sized: the liver (1.2-1.8 L) keeps >= 0.5 L after the 3 cm-cube filter; tumour crops < 0.3 L
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


def _cube_size(spacing_zyx: tuple[float, ...]) -> tuple[int, ...]:
    return tuple(max(3, int(round(REFERENCE_CUBE_MM / s)) | 1) for s in spacing_zyx)


def find_reference_region(suv: np.ndarray, spacing_zyx: tuple[float, ...]) -> tuple[float, float, tuple] | None:
    """(SUVmean, SUV SD, centre voxel) of the liver-like reference cube, or None when there is none."""
    size = _cube_size(spacing_zyx)
    suv = suv.astype(np.float32, copy=False)
    mean = ndimage.uniform_filter(suv, size=size, mode="constant")
    sq = ndimage.uniform_filter(suv * suv, size=size, mode="constant")
    sd = np.sqrt(np.clip(sq - mean * mean, 0, None))
    lo, hi = LIVER_SUV_RANGE
    ok = (mean >= lo) & (mean <= hi) & (sd < MAX_LOCAL_CV * np.maximum(mean, 1e-6))
    if not ok.any():
        return None
    labels = cc3d.connected_components(ok, connectivity=6)
    counts = np.bincount(labels.ravel())
    counts[0] = 0
    best = int(counts.argmax())
    voxel_ml = float(np.prod(spacing_zyx)) / 1000.0
    if counts[best] * voxel_ml < MIN_REFERENCE_ML:
        return None
    region = labels == best
    depth = ndimage.distance_transform_edt(region, sampling=spacing_zyx)
    centre = tuple(int(i) for i in np.unravel_index(int(depth.argmax()), depth.shape))
    return float(mean[centre]), float(sd[centre]), centre


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
