"""Salivary glands and tonsils: paired hot spots in the head and neck, below the brain and above the lower neck.

Why it generalises: the parotid and submandibular glands and the palatine tonsils (Waldeyer's ring) take up FDG
in most patients (about 1.5-3 x the liver), always as left-right pairs at mirror positions across the
mid-sagittal plane, between the skull base and the hyoid. The detector takes the hot parts (>=
:data:`SALIVARY_FRACTION` x the liver level) in the slab from the brain's lower edge (or the top of the scan)
down to :data:`ABOVE_NECK_BASE_MM` above the neck base (leaving out the thyroid and the lower neck, where a
one-sided hot node is disease), and keeps those that have a mirror partner (:data:`MIRROR_TOLERANCE_MM` in height,
depth and distance to the midline, both at least :data:`MIN_OFF_MIDLINE_MM` off it). A hot spot without a
partner is not called physiological here.
"""

from __future__ import annotations

import numpy as np

from medfoundry.preprocessing.anatomy.body import Body
from medfoundry.preprocessing.anatomy.brain import head_slices
from medfoundry.preprocessing.anatomy.grid import WorkGrid
from medfoundry.preprocessing.anatomy.morphology import dilate_mm
from medfoundry.preprocessing.anatomy.organ import Organ, found, not_found, not_in_fov
from medfoundry.preprocessing.anatomy.zones import parts

SALIVARY_FRACTION = 1.3  # glands and tonsils 1.5-3 x liver; neck muscle and fat < 1 x
ABOVE_NECK_BASE_MM = 40.0  # the thyroid and the lower neck (C5-T1) lie in the last 4 cm above the shoulders
BRAIN_MARGIN_MM = 10.0
MIN_OFF_MIDLINE_MM = 5.0  # tonsils lie 1-2 cm, parotids 5-7 cm off the midline
MIRROR_TOLERANCE_MM = 15.0
PART_ML = (0.2, 60.0)  # a submandibular gland is ~8 mL, a parotid ~25 mL (blurred: up to 2x)


def find_salivary(grid: WorkGrid, body: Body, brain: Organ, liver_suv: float) -> Organ:
    """Salivary glands and tonsils on the working grid (see the module docstring)."""
    name = "salivary"
    head = head_slices(body, grid)
    if head is None:
        return not_in_fov(name, "the scan's cranial end is trunk-sized: no head or neck in view")
    lo, hi = head
    if body.neck_base is not None:
        lo = body.neck_base + int(round(ABOVE_NECK_BASE_MM / grid.spacing[0]))
    zone = np.zeros(grid.shape, dtype=bool)
    zone[lo : hi + 1] = True
    zone &= body.mask
    if brain.found:
        zone &= ~dilate_mm(brain.mask, grid.spacing, BRAIN_MARGIN_MM)
    hot = zone & (grid.smooth >= SALIVARY_FRACTION * liver_suv)
    spots = [p for p in parts(hot, grid, body, min_ml=PART_ML[0]) if p.volume_ml <= PART_ML[1]]
    spots = [p for p in spots if abs(p.lr_offset_mm) >= MIN_OFF_MIDLINE_MM]
    paired = set()
    for i, a in enumerate(spots):
        for j in range(i + 1, len(spots)):
            b = spots[j]
            if a.lr_offset_mm * b.lr_offset_mm >= 0:
                continue
            d = np.abs(a.centre_mm[:2] - b.centre_mm[:2])
            if max(d.max(), abs(abs(a.lr_offset_mm) - abs(b.lr_offset_mm))) <= MIRROR_TOLERANCE_MM:
                paired.update((i, j))
    if not paired:
        return not_found(name, f"{len(spots)} hot spot(s) in the head and neck, none with a mirror partner")
    mask = np.any([spots[i].mask for i in sorted(paired)], axis=0)
    return found(name, mask, f"{len(paired)} hot spots in mirror pairs between the brain and the lower neck")
