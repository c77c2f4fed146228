"""Copies of a PET volume as other scanners would show it: another voxel size, a coarser resolution, more noise, a
different global SUV scale. Used to test that rules and models built on a few scans hold on other scanners
(voxel size 2-5 mm, resolution 5-9 mm FWHM, SUV calibration within about 0.8-1.25 between sites).

Each function takes and returns a (z, y, x) SUV array; :func:`resample_to` also returns the new spacing.
:func:`scanner_copy` draws all four at random for a whole :class:`~medfoundry.io.MedicalImage` and its masks (the
training augmentation of ``medfoundry lesions train``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage

from medfoundry.io import MedicalImage
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


VOXEL_MM = (2.0, 5.0)  # reconstruction voxel sizes of current and older whole-body PET
FWHM_MM = (5.0, 9.0)  # reconstructed resolution: OSEM with or without point-spread modelling, post-filter
NOISE_CV = (0.0, 0.2)  # extra noise at liver uptake (shorter frames, lighter dose, another reconstruction)
SUV_SCALE = (0.8, 1.25)  # between-site calibration / weight conventions
SOURCE_FWHM_MM = 7.0  # the resolution assumed for the scan being copied (whole-body FDG PET as reconstructed)


@dataclass
class ScannerCopy:
    """A copy of a scan as another scanner would show it, its masks on the copy's grid, and what was drawn."""

    image: MedicalImage
    masks: list[np.ndarray]
    voxel_mm: tuple[float, float, float]
    fwhm_mm: float
    noise_cv: float
    suv_scale: float

    def describe(self) -> str:
        v = "x".join(f"{s:.1f}" for s in self.voxel_mm)
        return f"{v} mm voxels, {self.fwhm_mm:.1f} mm FWHM, noise {self.noise_cv:.2f}, SUV x{self.suv_scale:.2f}"


def regrid(image: MedicalImage, array: np.ndarray, spacing_zyx: tuple[float, ...]) -> MedicalImage:
    """``image`` with ``array`` on ``spacing_zyx`` voxels over the same field of view (origin moved to the centre
    of the new first voxel)."""
    old_xyz = np.asarray(image.spacing, float)
    new_xyz = np.asarray(spacing_zyx, float)[::-1]
    direction = np.asarray(image.direction if image.direction is not None else np.eye(3).ravel(), float).reshape(3, 3)
    origin = np.asarray(image.origin, float) + direction @ ((new_xyz - old_xyz) / 2)
    return replace(image, array=array, spacing=tuple(float(s) for s in new_xyz), origin=tuple(float(o) for o in origin))


def scanner_copy(
    image: MedicalImage, masks: list[np.ndarray], seed: int, source_fwhm_mm: float = SOURCE_FWHM_MM
) -> ScannerCopy:
    """``image`` (SUV) as a scanner drawn at random (``seed``) would show it: voxels of :data:`VOXEL_MM` (in-plane
    and slice drawn apart), resolution :data:`FWHM_MM` (the Gaussian that brings ``source_fwhm_mm`` there is added;
    a sharper target keeps the source's), noise :data:`NOISE_CV`, SUV scale :data:`SUV_SCALE`. ``masks`` (boolean,
    on the image grid) come back on the copy's grid."""
    rng = np.random.default_rng(seed)
    inplane, slice_mm = rng.uniform(*VOXEL_MM, size=2)
    fwhm = float(rng.uniform(*FWHM_MM))
    cv = float(rng.uniform(*NOISE_CV))
    scale = float(np.exp(rng.uniform(*np.log(SUV_SCALE))))
    suv, spacing = np.asarray(image.array, np.float32), image.spacing_zyx
    added = float(np.sqrt(max(0.0, fwhm**2 - source_fwhm_mm**2)))
    if added > 0:
        suv = blur_fwhm(suv, spacing, added)
    suv, new_spacing = resample_to(suv, spacing, (slice_mm, inplane, inplane))
    if cv > 0:
        suv = add_noise(suv, new_spacing, cv, seed=seed)
    suv = scale_suv(suv, scale)
    out_masks = [resample_volume(np.asarray(m, np.float32), suv.shape) >= 0.5 for m in masks]
    return ScannerCopy(regrid(image, suv, new_spacing), out_masks, new_spacing, max(fwhm, source_fwhm_mm), cv, scale)
