"""PET in body-weight SUV: the check shared by the lesion finder and lesion insertion."""

from __future__ import annotations

import numpy as np

from medfoundry.errors import InputError
from medfoundry.io import MedicalImage
from medfoundry.io.numbers import check_number
from medfoundry.preprocessing.intensity import PET_MAX_PLAUSIBLE_SUV

MIN_PLAUSIBLE_PET = -50.0  # PET (SUV or Bq/mL) is never this negative; CT air is -1000 HU
# Median SUV of the tissue in view (voxels above 10% of the 99th percentile: the body, not the air around it).
# SUVbw averages to about 1 over the body by construction (the dose divided by the weight); FDG fat, muscle and
# blood sit at 0.3-2 (whole-body STS_001 0.62, torso ACRIN-042 0.64) and even a crop around a tumour stays below
# ~10 (the 30 IBSI crops: 0.40-7.1). The band is a decade wider on each side; the errors it catches are factors of
# 1 000 and more (a weight in g, activity in kBq or MBq, a day of decay, a wrong --suv-factor).
PLAUSIBLE_TISSUE_SUV = (0.03, 30.0)
TISSUE_FRACTION_OF_P99 = 0.1


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
            raise InputError(path, "`suv_factor` given but the DICOM series was already converted to SUV")
        suv_factor = check_number(suv_factor, "`suv_factor`", lo=0.0, lo_open=True)
        with np.errstate(over="ignore", under="ignore"):  # an overflow is refused just below, in one line
            array = (array.astype(np.float64) * suv_factor).astype(np.float32)
    elif not already_suv and float(array.max()) > PET_MAX_PLAUSIBLE_SUV:
        raise InputError(
            path,
            f"values reach {float(array.max()):.4g}: this looks like Bq/mL, not SUV; pass `suv_factor` "
            "(SUV per Bq/mL = weight_g / decay-corrected dose_Bq) or give the DICOM series",
        )
    if already_suv:
        scale = f"the DICOM headers' SUV factor {image.meta.get('suv', {}).get('factor', float('nan')):.4g}"
    else:
        scale = "the file's values" if suv_factor is None else f"`suv_factor` {suv_factor:g}"
    check_plausible_suv(array, path, scale)
    return image.with_array(array, modality="PET")


def tissue_median_suv(suv: np.ndarray) -> float:
    """The median SUV of the tissue in view: voxels above ``TISSUE_FRACTION_OF_P99`` of the 99th percentile (the
    body without the air around it; the same voxels whatever the scale, so the median scales with the SUV)."""
    finite = suv[np.isfinite(suv)]
    if finite.size == 0:
        return float("nan")
    floor = TISSUE_FRACTION_OF_P99 * float(np.percentile(finite, 99))
    tissue = finite[finite > floor]
    return float(np.median(tissue)) if tissue.size else float("nan")


def check_plausible_suv(suv: np.ndarray, path, scale: str) -> float:
    """Refuse a volume whose tissue median SUV (:func:`tissue_median_suv`) lies outside ``PLAUSIBLE_TISSUE_SUV``
    (or that holds non-finite values after scaling): its SUV would be quantified wrong by orders of magnitude.
    ``scale`` says where the SUV scale came from, for the message. Returns the median."""
    if not np.isfinite(suv).all():
        raise InputError(path, f"with {scale} the values overflow float32: this is not SUV")
    median = tissue_median_suv(suv)
    lo, hi = PLAUSIBLE_TISSUE_SUV
    if not lo <= median <= hi:
        raise InputError(
            path,
            f"the median SUV of the tissue in view is {median:.3g} with {scale}; FDG tissue is about 0.3-3 "
            f"(accepted {lo:g}-{hi:g}), so the SUV scale is wrong: check the weight, dose and times or the factor",
        )
    return median
