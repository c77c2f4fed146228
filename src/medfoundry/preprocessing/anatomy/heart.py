"""The heart: left-anterior in the lower thorax, resting on the diaphragm just above the liver dome.

Why it generalises: the heart's position is fixed by anatomy (its base on the diaphragm, its apex to the left and
front, two thirds of it left of the midline), whatever the patient's size; only its FDG uptake varies, from a hot
myocardium (fed or diabetic patients: 2-10 x the liver) to a myocardium no hotter than the blood (fasting, as in
most oncology scans). So the detector looks in the slab where the heart must be (from :data:`BELOW_DOME_MM` below
to :data:`ABOVE_DOME_MM` above the liver dome, or at its stature fraction without a liver) and takes

* a **hot myocardium**: the largest part at >= :data:`HOT_FRACTION` x the liver level, centred no more than
  :data:`MAX_RIGHT_MM` right of the midline and in the front half of the body, of heart size; its outline is
  closed (:data:`CLOSE_MM`) and its cavity filled slice by slice (a myocardium is a shell around the blood);
* otherwise the **blood-filled heart**: tissue at >= :data:`BLOOD_FRACTION` x the liver level (blood holds
  0.7-1.2 x the liver's SUV at 60 min) outside the liver, opened by :data:`OPEN_MM` (the heart is > 8 cm across,
  while the aorta, the spine and the chest wall that touch it are 2-4 cm thick), in the same position and size.
"""

from __future__ import annotations

import numpy as np

from medfoundry.preprocessing.anatomy.body import Body, Stature
from medfoundry.preprocessing.anatomy.grid import WorkGrid
from medfoundry.preprocessing.anatomy.morphology import close_mm, erode_mm, fill_slices
from medfoundry.preprocessing.anatomy.organ import Organ, found, not_found, not_in_fov
from medfoundry.preprocessing.anatomy.zones import expected_slices, grow_within, outside_fov, parts

HEART_FRACTIONS = (0.22, 0.32)  # heart from its base (T5-T6) to its apex on the diaphragm, fraction of stature
BELOW_DOME_MM = 40.0  # the heart's lowest part reaches a few cm below the top of the right liver dome
ABOVE_DOME_MM = 160.0  # a heart is 12 cm long; its top lies < 16 cm above the dome
HOT_FRACTION = 1.3  # a visible myocardium is hotter than the liver (1.3 x leaves room for noise); blood 0.7-1.2 x
BLOOD_FRACTION = 0.7  # blood pool 0.7-1.2 x liver at 60 min
OPEN_MM = 15.0
MAX_RIGHT_MM = 20.0  # two thirds of the heart lie left of the midline: its centre is not > 2 cm right of it
MAX_POSTERIOR_MM = 15.0  # its centre lies in front of (or within 1.5 cm behind) the body's front-back centre
MIN_HOT_ML = 20.0  # a hot myocardium shell is at least this big at PET resolution
HEART_ML = (150.0, 1500.0)  # the whole heart (chambers with blood) of an adult, with PET blur
CLOSE_MM = 10.0  # the myocardium is a shell around 4-6 cm of blood: closing bridges its cold gaps


def heart_slab(grid: WorkGrid, liver: Organ, stature: Stature | None) -> tuple[float, float]:
    if liver.found:
        dome = liver.info["dome_slice"]
        return dome - BELOW_DOME_MM / grid.spacing[0], dome + ABOVE_DOME_MM / grid.spacing[0]
    return expected_slices(stature, grid, HEART_FRACTIONS)


def _placed(part, volume_range) -> str | None:
    if part.lr_offset_mm < -MAX_RIGHT_MM:
        return f"{-part.lr_offset_mm:.0f} mm right of the midline"
    if part.ap_offset_mm > MAX_POSTERIOR_MM:
        return f"{part.ap_offset_mm:.0f} mm behind the body's centre"
    if not volume_range[0] <= part.volume_ml <= volume_range[1]:
        return f"{part.volume_ml:.0f} mL"
    return None


def find_heart(grid: WorkGrid, body: Body, liver: Organ, liver_suv: float, stature: Stature | None) -> Organ:
    """The heart on the working grid (see the module docstring)."""
    name = "heart"
    away = outside_fov(stature, grid, HEART_FRACTIONS)
    if away:
        return not_in_fov(name, away)
    lo, hi = heart_slab(grid, liver, stature)
    zone = np.zeros(grid.shape, dtype=bool)
    zone[max(0, int(np.floor(lo))) : max(0, int(np.ceil(hi)) + 1)] = True
    zone &= body.mask
    if liver.found:
        zone &= ~liver.mask
    if body.neck_base is not None:
        zone[body.neck_base :] = False
    if not zone.any():
        return not_in_fov(name, "the slab where the heart lies is outside the scan")
    reasons: list[str] = []
    myocardium = _hot_myocardium(grid, body, zone, liver_suv, reasons)
    if myocardium is not None:
        return found(name, myocardium, "hot myocardium left-anterior above the liver", uptake="hot")
    blood = _blood_filled(grid, body, zone, liver_suv, reasons)
    if blood is not None:
        return found(name, blood, "blood-filled heart left-anterior above the liver", uptake="blood")
    return not_found(name, "; ".join(reasons) or "no heart-like region above the liver")


def _hot_myocardium(grid: WorkGrid, body: Body, zone: np.ndarray, liver_suv: float, reasons: list[str]):
    """The largest well-placed hot part, closed and filled (the myocardium around its blood), or None."""
    hot = zone & (grid.smooth >= HOT_FRACTION * liver_suv)
    for part in parts(hot, grid, body, min_ml=MIN_HOT_ML)[:4]:
        why = _placed(part, (MIN_HOT_ML, HEART_ML[1]))
        if why:
            reasons.append(f"hot part {why}")
            continue
        return fill_slices(close_mm(part.mask, grid.spacing, CLOSE_MM))
    return None


def _blood_filled(grid: WorkGrid, body: Body, zone: np.ndarray, liver_suv: float, reasons: list[str]):
    """The largest well-placed blob of blood-level tissue after the opening, or None."""
    tissue = zone & (grid.smooth >= BLOOD_FRACTION * liver_suv)
    core = erode_mm(tissue, grid.spacing, OPEN_MM)
    for part in parts(core, grid, body, min_ml=1.0)[:4]:
        mask = grow_within(part.mask, tissue, grid.spacing, OPEN_MM + max(grid.spacing))
        why = _placed(parts(mask, grid, body)[0], HEART_ML)
        if why:
            reasons.append(f"blood-pool part {why}")
            continue
        return fill_slices(mask)
    return None
