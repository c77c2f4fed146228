"""The urinary bladder: the hot midline organ in the pelvis.

Why it generalises: FDG is excreted in the urine, so the bladder is one of the hottest structures of every FDG
scan (often 5-100+ SUV, >= 2 x the liver unless the patient has just voided or has a catheter); it lies on the
midline (a full bladder may lean a few cm to one side) in the true pelvis, well below the kidneys and the liver.
The detector takes the hot parts (>= :data:`BLADDER_FRACTION` x the liver level) in the pelvic slab (more than
:data:`BELOW_KIDNEYS_MM` below the kidneys, or :data:`BELOW_DOME_MM` below the liver dome, or at the bladder's
stature fraction), keeps those centred within :data:`MAX_OFF_MIDLINE_MM` of the midline, compact (not a ureter:
:data:`MIN_THICKNESS_MM` thick) and of bladder size, and takes the largest, its holes filled.
"""

from __future__ import annotations

import numpy as np

from medfoundry.preprocessing.anatomy.body import Body, Stature
from medfoundry.preprocessing.anatomy.grid import WorkGrid
from medfoundry.preprocessing.anatomy.morphology import fill_slices
from medfoundry.preprocessing.anatomy.organ import Organ, found, not_found, not_in_fov
from medfoundry.preprocessing.anatomy.zones import expected_slices, outside_fov, parts, thickness_mm

BLADDER_FRACTIONS = (0.43, 0.54)  # dome (full) to the bladder neck behind the pubic symphysis
BELOW_KIDNEYS_MM = 100.0  # the bladder's top lies > 10 cm below the renal hila (L1-L2 vs the pelvis)
BELOW_DOME_MM = 250.0  # ... and > 25 cm below the liver dome
BLADDER_FRACTION = 2.0  # urine >= 2 x the liver on FDG (less only after voiding or with a catheter)
MAX_OFF_MIDLINE_MM = 40.0  # a midline organ; a full bladder may lean a few cm to one side
MIN_THICKNESS_MM = 20.0  # the bladder is round, >= 2 cm thick even nearly empty (with PET blur); a ureter is not
BLADDER_ML = (5.0, 1500.0)


def bladder_top_slice(grid: WorkGrid, kidneys: tuple[Organ, Organ], liver: Organ, stature: Stature | None) -> float:
    """The highest working slice where the bladder may lie."""
    kidney_z = [k.info["centre_mm"][0] for k in kidneys if k.found]
    if kidney_z:
        return (min(kidney_z) - BELOW_KIDNEYS_MM) / grid.spacing[0]
    if liver.found:
        return liver.info["dome_slice"] - BELOW_DOME_MM / grid.spacing[0]
    return expected_slices(stature, grid, BLADDER_FRACTIONS)[1] + 0.03 * 1700.0 / grid.spacing[0]


def find_bladder(
    grid: WorkGrid,
    body: Body,
    kidneys: tuple[Organ, Organ],
    liver: Organ,
    heart: Organ,
    liver_suv: float,
    stature: Stature | None,
) -> Organ:
    """The bladder on the working grid (see the module docstring); the heart, when found, is never the bladder."""
    name = "bladder"
    away = outside_fov(stature, grid, BLADDER_FRACTIONS)
    if away:
        return not_in_fov(name, away)
    top = bladder_top_slice(grid, kidneys, liver, stature)
    if top < 0:
        return not_in_fov(name, "the scan ends above the pelvis")
    zone = np.zeros(grid.shape, dtype=bool)
    zone[: int(np.ceil(top)) + 1] = True
    if body.neck_base is not None:
        zone[body.neck_base :] = False
    hot = zone & body.mask & (grid.smooth >= BLADDER_FRACTION * liver_suv)
    if heart.found:  # a scan placed by nothing else (no liver, kidneys or neck) is searched whole
        hot &= ~heart.mask
    reasons = []
    for part in parts(hot, grid, body, min_ml=BLADDER_ML[0])[:6]:
        if abs(part.lr_offset_mm) > MAX_OFF_MIDLINE_MM:
            reasons.append(f"hot part {part.lr_offset_mm:+.0f} mm off the midline")
            continue
        if part.volume_ml > BLADDER_ML[1]:
            reasons.append(f"hot part of {part.volume_ml:.0f} mL")
            continue
        if thickness_mm(part.local, grid.spacing) < MIN_THICKNESS_MM:
            reasons.append("thin hot part (a ureter?)")
            continue
        return found(name, fill_slices(part.mask), "hot midline organ in the pelvis", suv_max=part.suv_max)
    return not_found(name, "; ".join(reasons) or "no hot midline organ in the pelvis")
