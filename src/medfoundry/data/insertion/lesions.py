"""Lesion templates: 3D lesions cut out of labelled PET (SUV) volumes, local background subtracted.

A template holds the lesion's *excess* uptake over its surroundings: inside the mask, SUV minus the median
SUV of a shell around it (clipped at 0); outside the mask, nothing. Adding a template to another scan therefore
adds the lesion's contrast to that scan's own tissue (the additive model of lesion insertion).
"""

from __future__ import annotations

from dataclasses import dataclass

import cc3d
import numpy as np
from scipy import ndimage

from medfoundry.data.scanner_variation import FWHM_PER_SIGMA
from medfoundry.errors import InputError
from medfoundry.io import MedicalImage
from medfoundry.preprocessing.pet_background import shell_background
from medfoundry.preprocessing.resample import resample_volume

SHELL_MM = 10.0  # the local background is the median SUV in a shell of this thickness around the lesion
MIN_TEMPLATE_VOXELS = 8  # smaller components (mask specks) are not lesions worth inserting


@dataclass
class LesionTemplate:
    """One lesion: ``activity`` (excess SUV, zero outside ``mask``) on a tight box, spacing in (z, y, x) mm."""

    activity: np.ndarray  # float32 (z, y, x)
    mask: np.ndarray  # bool (z, y, x)
    spacing_zyx: tuple[float, float, float]
    source: str  # case id (or file) the lesion came from
    background_suv: float  # the local background that was subtracted
    patient_id: str = ""

    @property
    def volume_ml(self) -> float:
        """Lesion volume in mL."""
        return float(self.mask.sum()) * float(np.prod(self.spacing_zyx)) / 1000.0

    @property
    def peak(self) -> float:
        """Largest excess SUV over the local background."""
        return float(self.activity.max()) if self.activity.size else 0.0


def extract_lesions(
    suv: MedicalImage, mask: MedicalImage, source: str = "", patient_id: str = "", shell_mm: float = SHELL_MM
) -> list[LesionTemplate]:
    """One :class:`LesionTemplate` per 26-connected lesion component of ``mask`` (>= ``MIN_TEMPLATE_VOXELS``)."""
    if suv.spatial_ndim != 3 or suv.array.shape != mask.array.shape:
        raise InputError(mask.path, f"lesion mask {mask.array.shape} does not match the PET volume {suv.array.shape}")
    data = np.asarray(suv.array, dtype=np.float32)
    lesion = np.asarray(mask.array) > 0
    spacing = tuple(float(s) for s in suv.spacing_zyx)
    components = cc3d.connected_components(lesion, connectivity=26)
    pad = [int(np.ceil(shell_mm / s)) + 1 for s in spacing]
    out = []
    for label, box in enumerate(ndimage.find_objects(components), start=1):
        if box is None:
            continue
        comp_tight = components[box] == label
        if comp_tight.sum() < MIN_TEMPLATE_VOXELS:
            continue
        wide = tuple(
            slice(max(0, b.start - p), min(n, b.stop + p)) for b, p, n in zip(box, pad, data.shape, strict=True)
        )
        comp = components[wide] == label
        background = shell_background(data[wide], comp, spacing, shell_mm, exclude=lesion[wide])
        activity = np.where(comp_tight, np.clip(data[box] - background, 0.0, None), 0.0).astype(np.float32)
        out.append(LesionTemplate(activity, comp_tight, spacing, source or str(suv.path), background, patient_id))
    return out


def resample_template(
    template: LesionTemplate, spacing_zyx: tuple[float, ...], scale: float = 1.0, flip_x: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """``(activity, mask)`` of ``template`` on voxels of ``spacing_zyx``, its size multiplied by ``scale``.

    The mask is resampled linearly and cut at 0.5 (so a smaller lesion stays compact), the activity linearly
    and then zeroed outside the new mask: the inserted uptake never leaves the inserted label.
    """
    if scale <= 0:
        raise InputError(None, f"lesion scale must be > 0, got {scale}")
    act = np.pad(template.activity, 1)
    msk = np.pad(template.mask.astype(np.float32), 1)
    shape = tuple(
        max(1, int(round(n * s * scale / t)))
        for n, s, t in zip(act.shape, template.spacing_zyx, spacing_zyx, strict=True)
    )
    new_mask = resample_volume(msk, shape) >= 0.5
    new_act = np.where(new_mask, np.clip(resample_volume(act, shape), 0.0, None), 0.0).astype(np.float32)
    if flip_x:
        new_mask, new_act = new_mask[:, :, ::-1], new_act[:, :, ::-1]
    keep = ndimage.find_objects(new_mask.astype(np.uint8))
    if not keep or keep[0] is None:
        return np.zeros((0, 0, 0), np.float32), np.zeros((0, 0, 0), bool)
    box = keep[0]
    return np.ascontiguousarray(new_act[box]), np.ascontiguousarray(new_mask[box])


BLUR_TRUNCATE = 3.0  # the Gaussian is cut at 3 sigma (99.7 % of the activity)


def added_blur_mm(target_fwhm_mm: float, source_fwhm_mm: float, scale: float) -> float:
    """Gaussian sigma (mm) that turns a lesion imaged at ``source_fwhm_mm`` and shrunk by ``scale`` (its blur
    shrinks with it) into one imaged at ``target_fwhm_mm``: sqrt(target^2 - (scale x source)^2) / 2.355, 0 when
    the lesion is already at least that blurred."""
    extra = target_fwhm_mm**2 - (scale * source_fwhm_mm) ** 2
    return float(np.sqrt(extra) / FWHM_PER_SIGMA) if extra > 0 else 0.0


def blur_activity(activity: np.ndarray, spacing_zyx: tuple[float, ...], sigma_mm: float) -> tuple[np.ndarray, int]:
    """``activity`` padded by the Gaussian's reach and convolved with it (total activity kept): ``(blurred,
    pad)`` with ``pad`` the voxels added on every side along each axis (the same count per axis: the largest)."""
    if sigma_mm <= 0 or activity.size == 0:
        return activity, 0
    sigma = [sigma_mm / s for s in spacing_zyx]
    pad = int(np.ceil(BLUR_TRUNCATE * max(sigma)))
    padded = np.pad(activity.astype(np.float32), pad)
    return ndimage.gaussian_filter(padded, sigma, mode="constant", truncate=BLUR_TRUNCATE), pad
