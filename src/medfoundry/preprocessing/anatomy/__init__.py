"""Anatomy from PET alone, without training data: body outline, mid-sagittal plane, a body-normalised
cranio-caudal coordinate and the organs of physiological FDG uptake.

One entry point, :func:`find_anatomy` (SUV volume, spacing, direction) -> :class:`Anatomy`. Each organ has its
own module (``body``, ``brain``, ``salivary``, ``heart``, ``liver``, ``kidneys`` with the ureters, ``bladder``,
``bowel``) whose docstring gives its rule and why it generalises; ``position`` gives a lesion candidate's place
relative to them (cranio-caudal coordinate, overlap with and distance to each organ, mirror position). The rules
work on a copy of the scan turned to one orientation and coarsened to ~4 mm (``grid``), and the masks come back
on the input grid. Every organ reports ``found``, ``not in field of view`` (its place in the body is not in the
scan: a torso scan has no brain, a crop has no organ) or ``not found`` (its place is in view, but nothing there
matches), with a short reason. See docs/lesions.md, "Anatomy".
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from medfoundry.errors import InputError
from medfoundry.preprocessing.anatomy.bladder import BLADDER_FRACTIONS, find_bladder
from medfoundry.preprocessing.anatomy.body import Body, Stature, find_body, fit_stature
from medfoundry.preprocessing.anatomy.bowel import find_bowel
from medfoundry.preprocessing.anatomy.brain import find_brain
from medfoundry.preprocessing.anatomy.grid import WorkGrid, work_grid
from medfoundry.preprocessing.anatomy.heart import HEART_FRACTIONS, find_heart
from medfoundry.preprocessing.anatomy.kidneys import KIDNEY_FRACTIONS, find_kidneys, find_ureters
from medfoundry.preprocessing.anatomy.liver import find_liver, liver_level
from medfoundry.preprocessing.anatomy.organ import FOUND, NOT_FOUND, NOT_IN_FOV, Organ, not_found, not_in_fov
from medfoundry.preprocessing.anatomy.salivary import find_salivary
from medfoundry.preprocessing.anatomy.zones import outside_fov

ORGANS = ("brain", "salivary", "heart", "liver", "kidney_right", "kidney_left", "ureters", "bladder", "bowel")
LIVER_FRACTIONS = (0.27, 0.45)  # dome (T9-T10) to the tip of the right lobe (L2-L3), fraction of stature
BRAIN_FRACTIONS = (0.0, 0.12)  # vertex to the skull base (eye height 0.064, chin 0.13 of stature)
SALIVARY_FRACTIONS = (0.09, 0.15)  # parotids at the ear lobe to the submandibular glands above the hyoid
BOWEL_FRACTIONS = (0.30, 0.52)  # stomach under the left diaphragm to the rectum behind the bladder
URETER_FRACTIONS = (0.38, 0.50)  # renal pelvis (L1-L2) to the bladder
EXPECTED_FRACTIONS = {  # where each organ lies, to tell "not in field of view" from "not found"
    "brain": BRAIN_FRACTIONS,
    "salivary": SALIVARY_FRACTIONS,
    "heart": HEART_FRACTIONS,
    "liver": LIVER_FRACTIONS,
    "kidney_right": KIDNEY_FRACTIONS,
    "kidney_left": KIDNEY_FRACTIONS,
    "ureters": URETER_FRACTIONS,
    "bladder": BLADDER_FRACTIONS,
    "bowel": BOWEL_FRACTIONS,
}

__all__ = ["FOUND", "NOT_FOUND", "NOT_IN_FOV", "ORGANS", "Anatomy", "Organ", "find_anatomy"]


@dataclass
class Anatomy:
    """What :func:`find_anatomy` found, on the input (native) grid.

    ``organs[name]`` is an :class:`Organ` (status, reason, boolean ``mask`` on the native grid or None); ``body``
    the body mask (None when no body was outlined); ``cc_fraction`` the cranio-caudal coordinate of each index
    along the native array axis ``cc_axis`` (fraction of stature below the vertex, NaN without landmarks);
    ``midline`` the mid-sagittal plane (a point in native voxel indices and a unit normal in native (z, y, x)
    millimetres, pointing to the patient's left)."""

    organs: dict[str, Organ]
    body: np.ndarray | None
    spacing_zyx: tuple[float, float, float]
    cc_axis: int
    cc_fraction: np.ndarray
    midline: dict | None
    field_of_view: dict
    orientation: dict
    seconds: float
    grid: WorkGrid = field(repr=False)
    work_body: Body = field(repr=False)
    work_organs: dict[str, Organ] = field(repr=False)
    stature: Stature | None = field(default=None, repr=False)
    _distances: dict = field(default_factory=dict, repr=False)

    def mask(self, name: str) -> np.ndarray | None:
        """The boolean native mask of organ ``name`` (None unless found)."""
        return self.organs[name].mask

    def status(self, name: str) -> str:
        return self.organs[name].status

    def volume_ml(self, name: str) -> float | None:
        mask = self.mask(name)
        return None if mask is None else float(mask.sum()) * float(np.prod(self.spacing_zyx)) / 1000.0

    def missing(self) -> dict[str, str]:
        """Organ -> status for every organ that was not found (in view or not)."""
        return {name: o.status for name, o in self.organs.items() if o.status != FOUND}

    def summary_line(self) -> str:
        """One line naming what could not be found (empty when every organ was)."""
        missing = self.missing()
        if not missing:
            return ""
        groups = {s: [n for n, t in missing.items() if t == s] for s in (NOT_IN_FOV, NOT_FOUND)}
        parts = [f"{s}: {', '.join(names)}" for s, names in groups.items() if names]
        return "anatomy: " + "; ".join(parts)

    def as_dict(self) -> dict:
        """JSON-ready summary for ``lesions.json``: per organ status, volume (mL) and reason, and the frame."""
        organs = {}
        for name, organ in self.organs.items():
            volume = self.volume_ml(name)
            organs[name] = {
                "status": organ.status,
                "volume_ml": None if volume is None else round(volume, 1),
                "reason": organ.reason,
            }
        stature = self.stature
        return {
            "organs": organs,
            "body_found": self.body is not None,
            "field_of_view": self.field_of_view,
            "orientation": self.orientation,
            "mid_sagittal_plane": self.midline,
            "cranio_caudal": {
                "axis": self.cc_axis,
                "unit": "fraction of stature below the vertex",
                "first_last_slice": None
                if stature is None
                else [round(float(self.cc_fraction[0]), 3), round(float(self.cc_fraction[-1]), 3)],
                "landmarks": None
                if stature is None
                else {k: round(float(stature.fraction(v)), 3) for k, v in stature.landmarks.items()},
                "height_mm": None if stature is None else round(stature.height_mm),
                "height_from_landmarks": None if stature is None else stature.scaled,
            },
            "seconds": round(self.seconds, 3),
        }


def _landmarks(grid: WorkGrid, body: Body, organs: dict[str, Organ]) -> dict[str, float]:
    """Cranio-caudal positions (working mm) of the landmarks that were seen whole."""
    top = grid.shape[0] - 1
    out = {}
    if body.neck_base is not None:
        out["neck_base"] = body.neck_base * grid.spacing[0]

    def centre(mask):
        counts = mask.sum(axis=(1, 2))
        zs = np.nonzero(counts)[0]
        whole = zs.min() > 0 and zs.max() < top
        return float((counts * np.arange(len(counts))).sum() / counts.sum() * grid.spacing[0]) if whole else None

    for name in ("brain", "heart", "bladder"):
        organ = organs.get(name)
        if organ is not None and organ.found and (c := centre(organ.mask)) is not None:
            out[name] = c
    liver = organs.get("liver")
    if liver is not None and liver.found and liver.info["dome_slice"] < top:
        out["liver_dome"] = liver.info["dome_slice"] * grid.spacing[0]
    kidneys = [organs.get(k) for k in ("kidney_right", "kidney_left")]
    if all(k is not None and k.found for k in kidneys):
        centres = [centre(k.mask) for k in kidneys]  # type: ignore[union-attr]
        if all(c is not None for c in centres):
            out["kidneys"] = float(np.mean(centres))
    return out


def _detect(grid: WorkGrid) -> tuple[Body, dict[str, Organ], Stature | None]:
    body = find_body(grid)
    if not body.found:
        return body, {name: not_found(name, body.problem or "no body") for name in ORGANS}, None
    if body.crop:
        return body, {name: not_in_fov(name, "the field of view is a crop of the body") for name in ORGANS}, None
    organs: dict[str, Organ] = {}
    organs["liver"] = liver = find_liver(grid, body)
    level = liver_level(liver)
    organs["brain"] = find_brain(grid, body, level)
    stature = fit_stature(_landmarks(grid, body, organs))
    organs["heart"] = heart = find_heart(grid, body, liver, level, stature)
    stature = fit_stature(_landmarks(grid, body, organs))
    organs["kidney_right"], organs["kidney_left"] = kidneys = find_kidneys(grid, body, liver, heart, level, stature)
    stature = fit_stature(_landmarks(grid, body, organs))
    organs["bladder"] = bladder = find_bladder(grid, body, kidneys, liver, heart, level, stature)
    organs["ureters"] = find_ureters(grid, body, kidneys, bladder, level)
    organs["salivary"] = find_salivary(grid, body, organs["brain"], level)
    organs["bowel"] = find_bowel(grid, body, dict(organs), level)
    stature = fit_stature(_landmarks(grid, body, organs))
    for name, organ in organs.items():  # an organ whose place is outside the scan is "not in field of view"
        if organ.status == NOT_FOUND and (away := outside_fov(stature, grid, EXPECTED_FRACTIONS[name])):
            organs[name] = not_in_fov(name, away)
    return body, {name: organs[name] for name in ORGANS}, stature


def find_anatomy(suv: np.ndarray, spacing_zyx, direction=None) -> Anatomy:
    """Body, mid-sagittal plane, cranio-caudal coordinate and organs of a PET volume in SUV (see the package).

    ``suv`` is (z, y, x) with ``spacing_zyx`` in mm; ``direction`` the 9 ITK/DICOM direction cosines
    (``MedicalImage.direction``; identity when None). The head end is taken from ``direction``; when the brain is
    found whole only at the other end, the anatomy wins (a header that lies about the orientation)."""
    start = time.perf_counter()
    suv = np.asarray(suv)
    if suv.ndim != 3:
        raise InputError(None, f"anatomy needs a 3D volume, got shape {suv.shape}")
    grid = work_grid(suv, spacing_zyx, direction)
    body, organs, stature = _detect(grid)
    source = "direction"
    if body.found and not body.crop and organs["brain"].status != FOUND:
        flipped = work_grid(suv, spacing_zyx, direction, flip_cranio_caudal=True)
        other_body = find_body(flipped)
        brain = find_brain(flipped, other_body, liver_level(organs["liver"])) if other_body.found else None
        if brain is not None and brain.found and not brain.info.get("cut_by_fov"):
            grid, source = flipped, "anatomy (whole brain at the end the direction matrix calls caudal)"
            body, organs, stature = _detect(grid)
    return _to_native(grid, body, organs, stature, suv.shape, spacing_zyx, source, time.perf_counter() - start)


def _to_native(grid, body, organs, stature, shape, spacing_zyx, source, seconds) -> Anatomy:
    native = {}
    for name, organ in organs.items():
        mask = grid.to_native(organ.mask) if organ.found else None
        native[name] = Organ(name, organ.status, organ.reason, mask, dict(organ.info))
    cc_axis = grid.axes[0]
    n = shape[cc_axis]
    if stature is None:
        cc_fraction = np.full(n, np.nan)
    else:
        native_idx = np.zeros((n, 3))
        native_idx[:, cc_axis] = np.arange(n)
        work = grid.to_work_index(native_idx)[:, 0]
        cc_fraction = np.asarray(stature.fraction(work * grid.spacing[0]), dtype=np.float64)
    midline = None
    if body.found and body.midline is not None:
        centre = np.array(grid.shape, dtype=np.float64) / 2 - 0.5
        centre_mm = centre * np.asarray(grid.spacing)
        centre_mm[2] = body.midline.lr_mm + body.midline.slope * centre_mm[0]
        point = grid.to_native_index(centre_mm / np.asarray(grid.spacing))[0]
        tip = grid.to_native_index((centre_mm + body.midline.normal()) / np.asarray(grid.spacing))[0]
        normal = (tip - point) * np.asarray(spacing_zyx)
        midline = {
            "point_zyx": [round(float(v), 2) for v in point],
            "normal_zyx": [round(float(v), 4) for v in normal / np.linalg.norm(normal)],
            "tilt_deg": round(float(np.degrees(np.arctan(body.midline.slope))), 2),
        }
    fov = {"crop": bool(body.crop), "no_body": body.problem, "neck_base_in_view": body.neck_base is not None}
    head_high = grid.signs[0] > 0
    orientation = {
        "cranio_caudal_axis": int(cc_axis),
        "head_at": "last index" if head_high else "first index",
        "from": source,
    }
    return Anatomy(
        native,
        None if not body.found else grid.to_native(body.mask),
        tuple(float(s) for s in spacing_zyx),
        int(cc_axis),
        cc_fraction,
        midline,
        fov,
        orientation,
        seconds,
        grid,
        body,
        organs,
        stature,
    )
