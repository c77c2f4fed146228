"""The brain: the hot organ that fills the head, at the cranial end of the body above the neck.

Why it generalises: on FDG-PET the brain's grey matter takes up glucose at 3-5 x the liver's SUV and its white
matter at 1.5-2 x, on every scanner and in every fasting state (brain uptake is insulin-independent); it fills most
of the head's cross-section and sits on the midline at the cranial end of the body. The rules:

* the **head** is the run of neck / head-sized sections above the shoulders (:attr:`Body.neck_base`), or the whole
  body when every section is head-sized (a brain scan); a scan whose cranial end is trunk-sized has no head in view
  ("not in field of view");
* in the head, voxels at >= :data:`BRAIN_FRACTION` x the liver's level (the white matter's ratio, so that the mask
  holds white matter too) are grouped; the largest part, filled slice by slice (ventricles), is the brain when it
  lies on the midline (:data:`MAX_OFF_MIDLINE_MM`), reaches the top of the body (:data:`MAX_BELOW_TOP_MM`) and is
  brain-sized (:data:`MIN_BRAIN_ML`), or is cut by the end of the field of view while filling
  :data:`MIN_SECTION_FILL` of the head's section there (a scan that stops through the skull).
"""

from __future__ import annotations

import numpy as np

from medfoundry.preprocessing.anatomy.body import Body
from medfoundry.preprocessing.anatomy.grid import WorkGrid
from medfoundry.preprocessing.anatomy.morphology import fill_slices
from medfoundry.preprocessing.anatomy.organ import Organ, found, not_found, not_in_fov
from medfoundry.preprocessing.anatomy.zones import offset_mm, parts

BRAIN_FRACTION = 1.5  # white matter 1.5-2 x liver, grey matter 3-5 x; scalp, skull and face < 1 x
MIN_BRAIN_ML = 600.0  # adult brain 1100-1500 mL; hypometabolic or atrophic brains keep > 800 mL at this level
MAX_BRAIN_ML = 2500.0
MAX_OFF_MIDLINE_MM = 30.0  # a midline organ (its centre within 3 cm of the plane)
MAX_BELOW_TOP_MM = 40.0  # the brain's top lies under 0.5-1 cm of scalp and skull (4 cm with PET blur and margin)
MIN_SECTION_FILL = 0.15  # the brain fills 50-80 % of the head's section through the cerebrum, 20-40 % at its base
GREY_FRACTION = 3.0  # grey matter reaches 3-5 x the liver's SUV; salivary glands and tonsils 1-2.5 x
MIN_CUT_ML = 10.0  # a brain cut by the field of view shows at least a few slices of cortex
HEAD_SECTION_MM2 = 35000.0  # an adult head's axial section is < 300 cm^2 (< 350 with PET blur)


def head_slices(body: Body, grid: WorkGrid) -> tuple[int, int] | None:
    """Working slices (first, last) of the head and neck: above the neck base, or the whole body when all of it is
    head-sized; None when the cranial end of the scan is trunk."""
    if not body.found or body.cranial_end is None:
        return None
    if body.neck_base is not None:
        return body.neck_base + 1, body.cranial_end
    present = body.main_area_mm2[body.caudal_end : body.cranial_end + 1]
    if present.size and np.percentile(present, 90) < HEAD_SECTION_MM2:
        return body.caudal_end, body.cranial_end  # every section head-sized: a head (and neck) scan
    return None


def find_brain(grid: WorkGrid, body: Body, liver_suv: float) -> Organ:
    """The brain on the working grid (see the module docstring)."""
    name = "brain"
    head = head_slices(body, grid)
    if head is None:
        return not_in_fov(name, "the scan's cranial end is trunk-sized: no head in view")
    lo, hi = head
    hot = np.zeros(grid.shape, dtype=bool)
    hot[lo : hi + 1] = (grid.smooth[lo : hi + 1] >= BRAIN_FRACTION * liver_suv) & body.mask[lo : hi + 1]
    top = grid.shape[0] - 1
    pieces = parts(hot, grid, body, min_ml=1.0)
    at_top = [p for p in pieces if p.cc_range[1] >= top]
    if at_top:  # the field of view ends in the head: the brain's pieces on the last slices, taken together
        mask = fill_slices(np.any([p.mask for p in at_top], axis=0))
        fill = mask[top].sum() * grid.spacing[1] * grid.spacing[2] / max(body.main_area_mm2[top], 1.0)
        volume = mask.sum() * grid.voxel_ml
        offset = offset_mm(grid, body, mask)
        peak = max(p.suv_max for p in at_top)
        if (
            abs(offset) <= MAX_OFF_MIDLINE_MM
            and fill >= MIN_SECTION_FILL
            and volume >= MIN_CUT_ML
            and peak >= GREY_FRACTION * liver_suv
        ):
            return found(
                name,
                mask,
                "hot midline organ filling the head, cut by the end of the field of view",
                cut_by_fov=True,
                suv_max=peak,
            )
        reasons = [
            f"hot region at the field of view's end: {volume:.0f} mL, {100 * fill:.0f}% of the section, "
            f"{offset:+.0f} mm off the midline, SUVmax {peak:.1f}"
        ]
    else:
        reasons = []
    for part in pieces[:3]:
        if part.cc_range[1] >= top:
            continue
        mask = fill_slices(part.mask)
        volume = mask.sum() * grid.voxel_ml
        if abs(part.lr_offset_mm) > MAX_OFF_MIDLINE_MM:
            reasons.append(f"hot part {part.lr_offset_mm:+.0f} mm off the midline")
            continue
        below_top = (body.cranial_end - part.cc_range[1]) * grid.spacing[0]
        if below_top > MAX_BELOW_TOP_MM:
            reasons.append(f"hot part {below_top:.0f} mm below the top of the head")
            continue
        if not MIN_BRAIN_ML <= volume <= MAX_BRAIN_ML:
            reasons.append(f"hot part of {volume:.0f} mL is not brain-sized")
            continue
        return found(name, mask, "hot midline organ filling the head", cut_by_fov=False, suv_max=part.suv_max)
    return not_found(name, "; ".join(reasons) or "no hot region in the head")
