"""The organ rule: a candidate lying mostly inside an organ whose FDG uptake is physiological is not a lesion.

The brain (glucose is its only fuel), the urinary tract (FDG is not reabsorbed: kidneys, renal pelvis, ureters and
bladder hold excreted tracer) and the heart (myocardium uses glucose, more or less depending on fasting) are hot on
every FDG scan of every patient; a classifier that learnt normal anatomy from one or two patients is easily fooled
by another patient's brain or kidneys. The anatomy (:mod:`medfoundry.preprocessing.anatomy`) finds these organs
from physiology and geometry, without training data, so the rule holds on a new patient: a candidate with at least
:data:`MIN_INSIDE` of its voxels inside one of :data:`RULE_ORGANS` is rejected, whatever its score, and reported in
``lesions.json`` with the reason (``physiological: brain``).

No exception is made for a focal spot hotter than the organ: the brain's and the bladder's uptake range over a
factor of 3-5 between patients and with fasting or hydration, so "clearly above the organ's expected uptake" has
no safe cut relative to the liver. What the rule cannot see, by design: a lesion inside these organs (brain
metastases, renal or urothelial tumours, cardiac or pericardial lesions) whose candidate lies mostly in the organ
mask, and a lesion that the candidate stage merged with the organ into one part. Turn the rule off with
``organ_rule=False`` (``medfoundry lesions --no-organ-rule``) to look for those; the liver, salivary glands and
bowel are not in the rule (lesions there are common) and are left to the classifier's anatomy features.
"""

from __future__ import annotations

import numpy as np

from medfoundry.inference.lesions.candidates import Candidate

RULE_ORGANS = {
    "brain": ("brain",),
    "bladder": ("bladder",),
    "kidneys": ("kidney_right", "kidney_left", "ureters"),
    "heart": ("heart",),
}
MIN_INSIDE = 0.5  # "mostly inside": the organ masks fit the organ tightly (measured overlaps of organ candidates
# on the shared scans are 0.73-1.0; a lesion beside an organ overlaps it a little through the blur)


def organ_reasons(candidates: list[Candidate], anatomy) -> list[str | None]:
    """Per candidate (on the anatomy's native grid): ``physiological: <organ>`` when at least :data:`MIN_INSIDE`
    of its voxels lie in one of :data:`RULE_ORGANS` (the group holding most of them), else None."""
    out: list[str | None] = [None] * len(candidates)
    if anatomy is None:
        return out
    groups = {}
    for group, names in RULE_ORGANS.items():
        masks = [anatomy.mask(n) for n in names if anatomy.mask(n) is not None]
        if masks:
            groups[group] = np.logical_or.reduce(masks)
    if not groups:
        return out
    for i, cand in enumerate(candidates):
        inside = {g: float(m[cand.bbox][cand.mask].mean()) for g, m in groups.items()}
        group = max(inside, key=inside.get)
        if inside[group] >= MIN_INSIDE:
            out[i] = f"physiological: {group}"
    return out
