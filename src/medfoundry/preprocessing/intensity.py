"""Modality-aware intensity normalisation to [0, 1], as MedSAM prepares its training data.

* CT: a window (named preset or level/width in HU), clipped and scaled. An 8-bit CT array cannot hold HU: it
  is taken as already windowed (MedSAM npz files store CT so) and divided by 255, unless a window is given.
* MR and other grey images: the 0.5 and 99.5 percentiles of the non-zero voxels, clipped and scaled.
* PET: an SUV range (default 0 to 10 SUV), clipped and scaled.
* RGB: divided by 255 (8-bit) or by the maximum, kept as is otherwise.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from medfoundry.errors import InputError
from medfoundry.io.image import MedicalImage

# (level, width) in HU; the soft-tissue preset is MedSAM's default for CT
CT_WINDOWS: dict[str, tuple[float, float]] = {
    "soft-tissue": (40.0, 400.0),
    "abdomen": (40.0, 400.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
    "liver": (60.0, 160.0),
    "mediastinum": (50.0, 350.0),
}
DEFAULT_PET_SUV_RANGE = (0.0, 10.0)
DEFAULT_PERCENTILES = (0.5, 99.5)
PET_MAX_PLAUSIBLE_SUV = 200.0  # larger PET values are activity concentrations, not SUV


@dataclass(frozen=True)
class IntensityWindow:
    """How to map an image's intensities to [0, 1]; ``None`` fields fall back to the modality default."""

    ct_window: str | None = None
    level: float | None = None
    width: float | None = None
    suv_range: tuple[float, float] | None = None
    percentiles: tuple[float, float] | None = None

    def describe(self, modality: str) -> str:
        """A short human-readable description of the window that applies to ``modality``."""
        low, high = self.bounds_for(modality, None)
        if (low, high) == (None, None):
            p = self.percentiles or DEFAULT_PERCENTILES
            return f"{modality}: percentiles {p[0]}-{p[1]}"
        return f"{modality}: [{low:g}, {high:g}]"

    def bounds_for(self, modality: str, array: np.ndarray | None) -> tuple[float | None, float | None]:
        """The (low, high) clip bounds for ``modality``; percentiles need ``array`` (else ``(None, None)``)."""
        if self.level is not None or self.width is not None:
            if self.level is None or self.width is None or self.width <= 0:
                raise InputError(None, "give both `level` and `width` (width > 0)")
            return self.level - self.width / 2, self.level + self.width / 2
        if modality == "CT" or self.ct_window is not None:
            name = self.ct_window or "soft-tissue"
            if name not in CT_WINDOWS:
                raise InputError(None, f"unknown CT window {name!r}; use one of {sorted(CT_WINDOWS)}")
            level, width = CT_WINDOWS[name]
            return level - width / 2, level + width / 2
        if modality == "PET" or self.suv_range is not None:
            if self.suv_range is None and array is not None and float(array.max()) > PET_MAX_PLAUSIBLE_SUV:
                warnings.warn(
                    f"PET values reach {float(array.max()):.4g}, which is not SUV (Bq/mL?); windowing by "
                    f"{DEFAULT_PERCENTILES} percentiles instead. Read the DICOM series for SUV or give suv_range.",
                    stacklevel=3,
                )
                return _percentile_bounds(array, DEFAULT_PERCENTILES)
            low, high = self.suv_range or DEFAULT_PET_SUV_RANGE
            if high <= low:
                raise InputError(None, f"SUV range must increase, got {low}..{high}")
            return low, high
        if array is None:
            return None, None
        return _percentile_bounds(array, self.percentiles or DEFAULT_PERCENTILES)


def _percentile_bounds(array: np.ndarray, percentiles: tuple[float, float]) -> tuple[float, float]:
    """Percentiles of the non-zero voxels (all voxels if none is non-zero)."""
    values = array[array != 0] if np.any(array != 0) else array
    low, high = np.percentile(values, percentiles)
    return float(low), float(high)


def normalize_intensity(image: MedicalImage, window: IntensityWindow | None = None) -> np.ndarray:
    """``image.array`` mapped to float32 in [0, 1] with the modality's window (RGB: scaled by 255)."""
    window = window or IntensityWindow()
    array = image.array
    if image.is_rgb:
        rgb = array[..., :3].astype(np.float32)
        scale = 255.0 if array.dtype == np.uint8 or rgb.max() > 1.0 else 1.0
        return np.clip(rgb / scale, 0.0, 1.0)
    if not np.all(np.isfinite(array)):
        raise InputError(image.path, f"{int(np.sum(~np.isfinite(array)))} voxels are NaN or infinite")
    if image.modality in ("OTHER", "CT") and array.dtype == np.uint8 and window == IntensityWindow():
        return array.astype(np.float32) / 255.0  # already 8-bit, e.g. pre-windowed MedSAM npz (no HU to window)
    low, high = window.bounds_for(image.modality, array)
    out = array.astype(np.float32)
    if high <= low:
        return np.zeros_like(out)
    np.clip(out, low, high, out=out)
    out -= low
    out /= high - low
    return out
