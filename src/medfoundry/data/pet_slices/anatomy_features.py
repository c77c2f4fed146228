"""Per-slice anatomy features for the whole-body slice classifier: where in the body a slice lies, which organs of
physiological FDG uptake it cuts, how hot they are there and how hot the rest of the slice is, all from the PET
alone (:mod:`medfoundry.preprocessing.anatomy`).

A frozen image embedding of a slice divided by its own maximum cannot tell a slice whose hottest spot is the
bladder from one whose hottest spot is a node: both are "one bright blob". These numbers say what that level of
the body normally shows, so a head next to the embedding can judge a slice against it:

* ``cc_fraction``: the body-normalised cranio-caudal position (fraction of stature below the vertex), with
  ``cc_known`` 0 and the position 0 where no landmark was found (a crop);
* ``in_<organ>``: the fraction of the slice's body area inside each organ (brain, salivary glands / tonsils,
  heart, liver, kidneys, ureters, bladder, bowel): which organs the slice cuts;
* uptake as ``log(1 + SUV / liver SUV)`` (the liver's own level, so a global SUV scale between sites cancels):
  ``uptake_slice`` (the slice's SUVmax), ``uptake_organs`` (SUVmax inside the organs, each grown by
  :data:`~medfoundry.preprocessing.anatomy.physiological.MARGIN_MM`: what the organs explain) and ``uptake_outside`` /
  ``peak_outside`` (SUVmax and PERCIST SUVpeak of the rest of the body on that slice: what nothing
  physiological explains);
* ``percist_ratio``: ``log(SUVpeak outside the organs / the scan's PERCIST threshold)`` (1.5 x liver SUVmean + 2 SD,
  :func:`~medfoundry.preprocessing.pet_reference.adaptive_threshold`): >= 0 where the slice holds uptake a reader
  would measure that no organ explains. The input of the built-in rule model
  (:mod:`medfoundry.inference.slice_rule`), not of the trained heads.

:data:`HEAD_FEATURES` (all but the position and the PERCIST ratio) are what the slice heads use. The organs'
expected uptake is measured on the scan itself (in-organ SUVmax on the slice) rather than taken from a table: fed
or fasting heart, a full or voided bladder and the tracer's clearance differ between patients.
"""

from __future__ import annotations

import numpy as np

from medfoundry.preprocessing.anatomy.physiological import MARGIN_MM, physiological_mask
from medfoundry.preprocessing.pet_reference import adaptive_threshold
from medfoundry.preprocessing.suv_peak import suv_peak_map

ORGAN_GROUPS = {
    "brain": ("brain",),
    "salivary": ("salivary",),
    "heart": ("heart",),
    "liver": ("liver",),
    "kidneys": ("kidney_right", "kidney_left"),
    "ureters": ("ureters",),
    "bladder": ("bladder",),
    "bowel": ("bowel",),
}
UPTAKE = ("uptake_slice", "uptake_organs", "uptake_outside", "peak_outside")
ANATOMY_FEATURES = ("cc_fraction", "cc_known", *(f"in_{g}" for g in ORGAN_GROUPS), *UPTAKE, "percist_ratio")
# what a head gets: the organs a slice cuts and the uptake they do and do not explain. The position itself enters
# through the organs it implies (the anatomy places them by it); as a linear term of its own it would learn where
# the training patients' tumours happened to lie (one patient: one place), not what is normal at that level.
# The PERCIST ratio is a fixed rule's input (the heads have the uptake it is made of).
HEAD_FEATURES = tuple(n for n in ANATOMY_FEATURES if n not in ("cc_fraction", "cc_known", "percist_ratio"))
ANATOMY_VERSION = 1  # bump when a feature's definition changes (stored with the dataset and the model)
PEAK_FLOOR_SUV = 1e-3  # a slice with no body outside the organs: its ratio is log(floor / threshold), not -inf


def _slice_max(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per axial slice, the largest of ``values`` inside ``mask`` (0 where the slice has no mask voxel)."""
    return np.where(mask, values, 0.0).reshape(values.shape[0], -1).max(axis=1)


def anatomy_slice_features(suv: np.ndarray, spacing_zyx, direction=None, anatomy=None) -> dict[str, np.ndarray]:
    """The module's features for every axial slice (array axis 0) of an SUV volume; ``anatomy`` is a
    :func:`~medfoundry.preprocessing.anatomy.find_anatomy` result (computed when None)."""
    from medfoundry.preprocessing.anatomy import find_anatomy
    from medfoundry.preprocessing.anatomy.liver import liver_level

    suv = np.asarray(suv, dtype=np.float32)
    spacing = tuple(float(s) for s in spacing_zyx)
    if anatomy is None:
        anatomy = find_anatomy(suv, spacing, direction)
    nz = suv.shape[0]
    out: dict[str, np.ndarray] = {}
    cc = anatomy.cc_fraction if anatomy.cc_axis == 0 else np.full(nz, np.nan)
    known = np.isfinite(cc)
    out["cc_fraction"] = np.where(known, cc, 0.0)
    out["cc_known"] = known.astype(np.float64)
    body = anatomy.body if anatomy.body is not None else suv > 0
    area = np.maximum(body.reshape(nz, -1).sum(axis=1), 1)
    for group, names in ORGAN_GROUPS.items():
        inside = np.zeros(suv.shape, bool)
        for name in names:
            if (mask := anatomy.mask(name)) is not None:
                inside |= mask
        out[f"in_{group}"] = (inside & body).reshape(nz, -1).sum(axis=1) / area
    unit = liver_level(anatomy.organs["liver"])
    organs = physiological_mask(anatomy, suv.shape, spacing, MARGIN_MM)
    rest = body & ~organs
    out["uptake_slice"] = np.log1p(suv.reshape(nz, -1).max(axis=1).clip(0) / unit)
    out["uptake_organs"] = np.log1p(_slice_max(suv, organs).clip(0) / unit)
    out["uptake_outside"] = np.log1p(_slice_max(suv, rest).clip(0) / unit)
    peak = _slice_max(suv_peak_map(suv, spacing), rest).clip(0)
    out["peak_outside"] = np.log1p(peak / unit)
    percist = adaptive_threshold(suv, spacing, liver=anatomy.mask("liver")).threshold
    out["percist_ratio"] = np.log(np.maximum(peak, PEAK_FLOOR_SUV) / percist)
    return {k: np.asarray(out[k], dtype=np.float32) for k in ANATOMY_FEATURES}
