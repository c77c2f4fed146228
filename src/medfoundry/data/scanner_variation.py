"""Copies of a PET volume as other scanners would show it: another voxel size, a coarser resolution, more noise, a
different global SUV scale. Used to test that rules and models built on a few scans hold on other scanners
(voxel size 2-5 mm, resolution 5-9 mm FWHM, SUV calibration within about 0.8-1.25 between sites).

Each function takes and returns a (z, y, x) SUV array; :func:`resample_to` also returns the new spacing.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from medfoundry.preprocessing.resample import resample_volume

FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))  # 2.3548


def resample_to(
    suv: np.ndarray, spacing_zyx: tuple[float, ...], voxel_mm: float | tuple[float, ...]
) -> tuple[np.ndarray, tuple[float, float, float]]:
    """``suv`` on voxels of about ``voxel_mm`` over the same field of view (trilinear; Gaussian anti-aliasing
    first where the new voxels are larger, as a coarser reconstruction averages). Returns (array, spacing_zyx)."""
    spacing = np.asarray(spacing_zyx, dtype=np.float64)
    target = np.broadcast_to(np.asarray(voxel_mm, dtype=np.float64), (3,))
    shape = np.maximum(1, np.round(np.asarray(suv.shape) * spacing / target)).astype(int)
    factor = np.asarray(suv.shape) / shape  # old voxels per new voxel
    sigma = np.maximum(0.0, (factor - 1.0) / 2.0)
    source = ndimage.gaussian_filter(np.asarray(suv, np.float32), sigma) if sigma.any() else suv
    out = resample_volume(source, tuple(int(n) for n in shape))
    return out, tuple(float(s) for s in spacing * factor)  # type: ignore[return-value]


def blur_fwhm(suv: np.ndarray, spacing_zyx: tuple[float, ...], fwhm_mm: float) -> np.ndarray:
    """``suv`` convolved with an isotropic Gaussian of ``fwhm_mm`` (added to the scan's own resolution)."""
    sigma = [fwhm_mm / FWHM_PER_SIGMA / s for s in spacing_zyx]
    return ndimage.gaussian_filter(np.asarray(suv, np.float32), sigma)


def add_noise(
    suv: np.ndarray,
    spacing_zyx: tuple[float, ...],
    cv: float,
    seed: int = 0,
    reference_suv: float = 2.0,
    correlation_mm: float = 4.0,
) -> np.ndarray:
    """``suv`` plus noise whose variance grows with the uptake (as counts do): SD = ``cv`` x sqrt(SUV x
    ``reference_suv``), i.e. a coefficient of variation ``cv`` at SUV ``reference_suv`` (about the liver), and
    spatially correlated over ``correlation_mm`` (Gaussian sigma), as reconstruction correlates noise.
    Negative values are clipped to 0."""
    rng = np.random.default_rng(seed)
    field = rng.standard_normal(suv.shape).astype(np.float32)
    if correlation_mm > 0:
        field = ndimage.gaussian_filter(field, [correlation_mm / s for s in spacing_zyx])
        field /= max(float(field.std()), 1e-12)
    suv = np.asarray(suv, np.float32)
    sd = cv * np.sqrt(np.clip(suv, 0, None) * reference_suv)
    return np.clip(suv + sd * field, 0, None).astype(np.float32)


def scale_suv(suv: np.ndarray, factor: float) -> np.ndarray:
    """``suv`` x ``factor``: another site's calibration / body-weight convention."""
    return (np.asarray(suv, np.float32) * float(factor)).astype(np.float32)
