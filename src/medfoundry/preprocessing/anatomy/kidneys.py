"""The kidneys (with their renal pelvis) and the ureters.

Why it generalises: FDG is filtered by the kidneys and not reabsorbed, so on every FDG scan the renal cortex takes
up tracer (about 1-2 x the liver) and the urine in the calyces and renal pelvis is hot (often 5-50 SUV); the
kidneys lie in the retroperitoneum, one on each side of the spine (hila 4-8 cm from the midline), behind the
body's front-back centre, their upper poles at the level of the lower liver and their lower poles 10-15 cm lower.
The detector takes the hot parts (>= :data:`KIDNEY_FRACTION` x the liver level, outside the liver) in the slab
from :data:`BELOW_DOME_MM` below the liver dome to the dome (or at the kidneys' stature fraction without a liver),
keeps those that are posterior (:data:`MIN_POSTERIOR_MM`) and paramedian (:data:`LR_RANGE_MM`), and on each side
gathers the parts within :data:`GATHER_MM` of the largest (a kidney's cortex and its calyces are often several
hot parts). Each side is reported on its own (one kidney may be missing); two kidneys found are checked to be a
pair (similar height, within :data:`MAX_PAIR_HEIGHT_MM`).

The **ureters** carry the hot urine from each renal pelvis down to the bladder: thin hot tubes, often seen only
in pieces. They are hot parts (>= :data:`URETER_FRACTION` x the liver level) between the kidneys and the bladder
(or the end of the scan), within :data:`URETER_LR_MM` of the midline, longer cranio-caudally than across
(:data:`MIN_URETER_ELONGATION`) and thin (:data:`MAX_URETER_THICKNESS_MM`), as a ureter is.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from medfoundry.preprocessing.anatomy.body import Body, Stature
from medfoundry.preprocessing.anatomy.grid import WorkGrid
from medfoundry.preprocessing.anatomy.morphology import dilate_mm
from medfoundry.preprocessing.anatomy.organ import NOT_FOUND, Organ, found, not_found, not_in_fov
from medfoundry.preprocessing.anatomy.zones import expected_slices, outside_fov, parts, principal_axis, thickness_mm

KIDNEY_FRACTIONS = (0.31, 0.44)  # upper pole (T12) to lower pole (L3), fraction of stature below the vertex
BELOW_DOME_MM = 280.0  # lower poles lie 20-25 cm below the top of the liver (T9-T10 to L3)
UNDER_DOME_MM = 20.0  # upper poles lie a few cm below the dome (T11-T12); above it is the heart
KIDNEY_FRACTION = 1.3  # renal cortex 1-2 x liver, urine much more; the liver's own noise stays below
LR_RANGE_MM = (25.0, 140.0)  # kidney centres 4-8 cm from the midline; not on it, not at the flank
MIN_POSTERIOR_MM = 0.0  # retroperitoneal: centre behind the body's front-back centre (bowel lies in front)
GATHER_MM = 20.0  # hot parts of one kidney (cortex, calyces) lie within 2 cm of each other
KIDNEY_ML = (15.0, 700.0)  # one kidney is 120-200 mL; at this level a cold cortex may show only its pelvis
MIN_PART_ML = 1.0
MAX_PAIR_HEIGHT_MM = 80.0  # the right kidney lies 1-3 cm lower than the left

URETER_FRACTION = 1.5  # urine is >= 2 x liver; a thin tube loses part of it to PET blur
URETER_SMOOTH_MM = 2.0  # a ureter is < 1 cm across: looked for on a lightly smoothed image, not the organ-scale one
URETER_LR_MM = 90.0  # the ureters run along the psoas, 2-8 cm from the midline
MIN_URETER_ELONGATION = 2.0  # length along the principal axis / thickness: a tube, not a node
MIN_URETER_COS = 0.7  # the principal axis within 45 degrees of cranio-caudal
MAX_URETER_THICKNESS_MM = 20.0  # a ureter (< 1 cm, blurred to < 2 cm); a lymph node or bowel loop is thicker
MIN_URETER_ML = 0.2
BLADDER_MARGIN_MM = 10.0  # the blurred rim of the bladder is not a ureter


def kidney_slab(grid: WorkGrid, liver: Organ, stature: Stature | None) -> tuple[float, float]:
    if liver.found:
        dome = liver.info["dome_slice"]
        return dome - BELOW_DOME_MM / grid.spacing[0], dome - UNDER_DOME_MM / grid.spacing[0]
    return expected_slices(stature, grid, KIDNEY_FRACTIONS)


def find_kidneys(
    grid: WorkGrid, body: Body, liver: Organ, heart: Organ, liver_suv: float, stature: Stature | None
) -> tuple[Organ, Organ]:
    """(right kidney, left kidney) on the working grid (see the module docstring)."""
    names = ("kidney_right", "kidney_left")
    away = outside_fov(stature, grid, KIDNEY_FRACTIONS)
    if away:
        return tuple(not_in_fov(n, away) for n in names)  # type: ignore[return-value]
    lo, hi = kidney_slab(grid, liver, stature)
    zlo, zhi = max(0, int(np.floor(lo))), int(np.ceil(hi))
    if zhi < 0 or zlo > grid.shape[0] - 1:
        return tuple(not_in_fov(n, "the scan ends above the kidneys") for n in names)  # type: ignore
    hot = np.zeros(grid.shape, dtype=bool)
    hot[zlo : zhi + 1] = grid.smooth[zlo : zhi + 1] >= KIDNEY_FRACTION * liver_suv
    hot &= body.mask
    for organ in (liver, heart):
        if organ.found:
            hot &= ~organ.mask
    if body.neck_base is not None:
        hot[body.neck_base :] = False
    candidates = [
        p
        for p in parts(hot, grid, body, min_ml=MIN_PART_ML)
        if p.ap_offset_mm >= MIN_POSTERIOR_MM and LR_RANGE_MM[0] <= abs(p.lr_offset_mm) <= LR_RANGE_MM[1]
    ]
    out = []
    for name, sign in zip(names, (-1, 1), strict=True):
        side = [p for p in candidates if np.sign(p.lr_offset_mm) == sign]
        if not side:
            out.append(not_found(name, "no hot posterior paramedian part below the liver on this side"))
            continue
        seed = max(side, key=lambda p: p.volume_ml * p.suv_mean)
        near = dilate_mm(seed.mask, grid.spacing, GATHER_MM)
        mask = np.any([p.mask for p in side if (near[p.box] & p.local).any()], axis=0)
        volume = float(mask.sum() * grid.voxel_ml)
        if not KIDNEY_ML[0] <= volume <= KIDNEY_ML[1]:
            out.append(not_found(name, f"the hot part on this side holds {volume:.0f} mL, not a kidney"))
            continue
        centre = np.argwhere(mask).mean(axis=0) * np.asarray(grid.spacing)
        out.append(
            found(
                name,
                mask,
                "hot posterior paramedian organ below the liver dome",
                volume_ml=volume,
                centre_mm=centre.tolist(),
                suv_max=float(grid.smooth[mask].max()),
            )
        )
    right, left = out
    if right.found and left.found:
        dz = abs(right.info["centre_mm"][0] - left.info["centre_mm"][0])
        if dz > MAX_PAIR_HEIGHT_MM:  # not a pair: keep the one with more uptake
            worse = min((right, left), key=lambda o: o.info["volume_ml"] * o.info["suv_max"])
            worse.status, worse.mask = NOT_FOUND, None
            worse.reason = f"its hot part lies {dz:.0f} mm above / below the other kidney: not a pair"
    return right, left


def find_ureters(grid: WorkGrid, body: Body, kidneys: tuple[Organ, Organ], bladder: Organ, liver_suv: float) -> Organ:
    """The ureters' visible pieces between the kidneys and the bladder (see the module docstring)."""
    name = "ureters"
    found_kidneys = [k for k in kidneys if k.found]
    if not found_kidneys:
        return not_found(name, "no kidney found to start from")
    top = min(int(np.argwhere(k.mask)[:, 0].min()) for k in found_kidneys)  # below the upper pole
    bottom = int(np.argwhere(bladder.mask)[:, 0].min()) if bladder.found else 0
    if top <= bottom:
        return not_in_fov(name, "the scan ends at the kidneys") if bottom == 0 else not_found(name, "no room")
    hot = np.zeros(grid.shape, dtype=bool)
    light = ndimage.gaussian_filter(grid.suv[bottom : top + 1], [URETER_SMOOTH_MM / s for s in grid.spacing])
    hot[bottom : top + 1] = light >= URETER_FRACTION * liver_suv
    hot &= body.mask
    for k in found_kidneys:
        hot &= ~k.mask
    if bladder.found:
        hot &= ~dilate_mm(bladder.mask, grid.spacing, BLADDER_MARGIN_MM)
    pieces = []
    for p in parts(hot, grid, body, min_ml=MIN_URETER_ML):
        if abs(p.lr_offset_mm) > URETER_LR_MM:
            continue
        thick = thickness_mm(p.local, grid.spacing)
        length, axis = principal_axis(p.local, grid.spacing)
        if (
            thick <= MAX_URETER_THICKNESS_MM
            and length >= MIN_URETER_ELONGATION * thick
            and abs(axis[0]) >= MIN_URETER_COS
        ):
            pieces.append(p)
    if not pieces:
        return not_found(name, "no thin cranio-caudal hot piece between the kidneys and the bladder")
    mask = np.any([p.mask for p in pieces], axis=0)
    return found(name, mask, f"{len(pieces)} thin hot cranio-caudal piece(s) between kidneys and bladder")
