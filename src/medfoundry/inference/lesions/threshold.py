"""The candidate threshold of the lesion finder; it lives in :mod:`medfoundry.preprocessing.pet_reference`
(lesion insertion in ``data/`` uses the same liver-based threshold to keep away from hot organs)."""

from medfoundry.preprocessing.pet_reference import (
    FALLBACK_SUV,
    LIVER_SUV_RANGE,
    MAX_LOCAL_CV,
    MIN_REFERENCE_ML,
    MIN_THRESHOLD_SUV,
    REFERENCE_CUBE_MM,
    ThresholdInfo,
    adaptive_threshold,
    find_reference_region,
)

__all__ = [
    "FALLBACK_SUV",
    "LIVER_SUV_RANGE",
    "MAX_LOCAL_CV",
    "MIN_REFERENCE_ML",
    "MIN_THRESHOLD_SUV",
    "REFERENCE_CUBE_MM",
    "ThresholdInfo",
    "adaptive_threshold",
    "find_reference_region",
]
