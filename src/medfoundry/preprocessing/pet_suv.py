"""PET in body-weight SUV: the check shared by the lesion finder and lesion insertion."""

from __future__ import annotations

import numpy as np

from medfoundry.errors import InputError
from medfoundry.io import MedicalImage
from medfoundry.preprocessing.intensity import PET_MAX_PLAUSIBLE_SUV

MIN_PLAUSIBLE_PET = -50.0  # PET (SUV or Bq/mL) is never this negative; CT air is -1000 HU


def to_suv(image: MedicalImage, suv_factor: float | None = None) -> MedicalImage:
    """The image in body-weight SUV (float32), or an :class:`InputError` saying why it cannot be.

    A DICOM PET series arrives in SUV already (``meta['units'] == 'SUVbw'``). Other inputs are taken as SUV
    unless ``suv_factor`` is given (SUV = value x factor); a volume whose maximum exceeds 200 without a
    factor is refused as activity concentration (Bq/mL): SUV rarely exceeds 100 even in the bladder, while
    Bq/mL values are thousands.
    """
    path = image.path
    if image.spatial_ndim != 3:
        raise InputError(path, f"expected a 3D PET volume, got shape {image.array.shape}")
    if image.modality not in ("PET", "OTHER"):
        raise InputError(path, f"not a PET image (modality {image.modality}); the lesion finder needs PET in SUV")
    array = np.asarray(image.array, dtype=np.float32)
    if array.size == 0 or not np.isfinite(array).any():
        raise InputError(path, "the image is empty")
    array = np.nan_to_num(array, nan=0.0, posinf=0.0, neginf=0.0)
    if float(array.max()) <= 0.0:
        raise InputError(path, "the image is all zero (or negative): no PET signal")
    if float(array.min()) < MIN_PLAUSIBLE_PET:
        raise InputError(path, f"values go down to {float(array.min()):.4g}: not PET (a CT in HU?)")
    already_suv = image.meta.get("units") == "SUVbw"
    if suv_factor is not None:
        if already_suv:
            raise InputError(path, "--suv-factor given but the DICOM series was already converted to SUV")
        if not np.isfinite(suv_factor) or suv_factor <= 0:
            raise InputError(None, f"--suv-factor must be a positive number, got {suv_factor}")
        array = array * np.float32(suv_factor)
    elif not already_suv and float(array.max()) > PET_MAX_PLAUSIBLE_SUV:
        raise InputError(
            path,
            f"values reach {float(array.max()):.4g}: this looks like Bq/mL, not SUV; pass --suv-factor "
            "(SUV per Bq/mL = weight_g / decay-corrected dose_Bq) or give the DICOM series",
        )
    return image.with_array(array, modality="PET")
