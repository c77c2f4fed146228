"""Bowel: tube-shaped hot parts in the abdomen and pelvis that belong to no other organ.

Why it generalises: FDG uptake in the bowel wall and its content (colon above all, also small bowel and stomach;
more with metformin) is common and variable, but it follows the bowel: curved tubes 2-5 cm across that fill the
abdomen from below the diaphragm to the pelvis, in front of the retroperitoneum. A lymph node or a tumour is a
compact blob; a bowel segment is longer than it is thick. The detector takes the hot parts (>=
:data:`BOWEL_FRACTION` x the liver level) from :data:`BELOW_DOME_MM` under the liver dome (or the top of the scan
when there is no liver) down to the bottom of the bladder (or the end of the scan), outside the liver, heart,
kidneys, ureters and bladder (grown by :data:`ORGAN_MARGIN_MM`), and keeps those whose length along their
principal axis is at least :data:`MIN_ELONGATION` x their thickness.
"""

from __future__ import annotations

import numpy as np

from medfoundry.preprocessing.anatomy.body import Body
from medfoundry.preprocessing.anatomy.grid import WorkGrid
from medfoundry.preprocessing.anatomy.morphology import dilate_mm
from medfoundry.preprocessing.anatomy.organ import Organ, found, not_found, not_in_fov
from medfoundry.preprocessing.anatomy.zones import parts, principal_axis, thickness_mm

BOWEL_FRACTION = 1.3  # bowel uptake ranges from below the liver to several times it; below 1.3 x it blends in
BELOW_DOME_MM = 30.0  # the stomach and splenic flexure reach up under the left diaphragm
ORGAN_MARGIN_MM = 10.0
MIN_ELONGATION = 2.0  # a tube: length >= 2 x thickness (a sphere has 1.15 by this measure)
MIN_PART_ML = 1.0


def find_bowel(grid: WorkGrid, body: Body, organs: dict[str, Organ], liver_suv: float) -> Organ:
    """Bowel uptake on the working grid (see the module docstring); ``organs`` holds the other organs found."""
    name = "bowel"
    liver, bladder = organs.get("liver"), organs.get("bladder")
    if liver is None or not liver.found:
        if bladder is None or not bladder.found:
            return not_found(name, "neither liver nor bladder found: the abdomen cannot be placed")
        top = grid.shape[0] - 1
    else:
        top = int(liver.info["dome_slice"] - BELOW_DOME_MM / grid.spacing[0])
    if body.neck_base is not None:
        top = min(top, body.neck_base)
    bottom = int(np.argwhere(bladder.mask)[:, 0].min()) if bladder is not None and bladder.found else 0
    if top <= bottom:
        return not_in_fov(name, "the abdomen is not in the scan")
    hot = np.zeros(grid.shape, dtype=bool)
    hot[bottom : top + 1] = grid.smooth[bottom : top + 1] >= BOWEL_FRACTION * liver_suv
    hot &= body.mask
    for other in organs.values():
        if other.found:
            hot &= ~dilate_mm(other.mask, grid.spacing, ORGAN_MARGIN_MM)
    tubes = []
    for p in parts(hot, grid, body, min_ml=MIN_PART_ML):
        length, _ = principal_axis(p.local, grid.spacing)
        if length >= MIN_ELONGATION * thickness_mm(p.local, grid.spacing):
            tubes.append(p)
    if not tubes:
        return not_found(name, "no tube-shaped hot part in the abdomen")
    mask = np.any([p.mask for p in tubes], axis=0)
    return found(name, mask, f"{len(tubes)} tube-shaped hot part(s) in the abdomen outside the other organs")
