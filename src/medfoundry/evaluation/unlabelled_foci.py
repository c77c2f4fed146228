"""Slices to leave out of scoring on a partly labelled PET scan: those through avid foci that nobody labelled
but a reader would call suspicious (e.g. ACRIN-042: one mass labelled, other FDG-avid foci not).

The rule is fixed before any classifier is scored and never looks at a classifier's output; it uses only the scan,
its label and the PET-only anatomy (:mod:`medfoundry.preprocessing.anatomy`):

1. **Hot**: SUV above the scan's own PERCIST threshold, 1.5 x liver SUVmean + 2 SD
   (:func:`medfoundry.preprocessing.pet_reference.adaptive_threshold`, the lesion finder's threshold; where its
   homogeneity search finds no reference region in a noisy scan, the 3 cm cube inside the liver the anatomy
   found, rather than a fixed SUV 3).
2. **Not physiological**: outside every organ the anatomy found (brain, salivary glands / tonsils, heart, liver,
   kidneys, ureters, bladder, bowel), each grown by :data:`MARGIN_MM`, and outside the labelled lesions grown by
   the same margin (10 mm: about 1.5 x the 5-9 mm FWHM of clinical PET, so an organ's or a lesion's own spill-over
   is not a focus, plus the anatomy's 4 mm working grid).
3. **A focus a reader would measure**: a 26-connected component of what is left whose PERCIST SUVpeak (mean SUV
   in a 1 mL sphere, :func:`medfoundry.preprocessing.suv_peak.suv_peak_map`) also reaches the threshold: PERCIST's
   criterion for a measurable lesion, which single hot voxels of noise do not meet.

Every slice (array axis 0) holding a voxel of such a focus is excluded from scoring unless it is labelled abnormal.
``uncertain`` (e.g. a loose outline drawn around the labelled lesion) adds the slices it touches where the label
itself has no voxel: the label's own margin, where the slice's truth is not known.

What the rule also catches: physiological uptake the anatomy does not model (thyroid, muscles, brown fat, marrow,
testes, a focal stomach); those slices are lost to scoring too, which makes the test smaller, never easier in a
way that depends on the classifier. Every excluded slice is listed with its reason and the focus it holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cc3d
import numpy as np
from scipy import ndimage

from medfoundry.preprocessing.anatomy.morphology import dilate_mm
from medfoundry.preprocessing.anatomy.physiological import MARGIN_MM, physiological_mask
from medfoundry.preprocessing.pet_reference import adaptive_threshold
from medfoundry.preprocessing.suv_peak import suv_peak_map


@dataclass
class UnlabelledFoci:
    """The suspicious unlabelled foci of one scan and the slices left out of scoring because of them."""

    threshold: float  # the scan's PERCIST threshold (SUV)
    method: str  # how it was found ("percist-liver" or "fallback")
    mask: np.ndarray  # bool (z, y, x): voxels of the suspicious foci
    foci: list[dict] = field(default_factory=list)  # per focus: slices, voxels, mL, SUVmax, SUVpeak
    excluded: dict[int, str] = field(default_factory=dict)  # slice index -> reason
    organs: dict[str, str] = field(default_factory=dict)  # organ -> anatomy status (which ones were used)

    @property
    def excluded_slices(self) -> np.ndarray:
        """Sorted slice indices left out of scoring."""
        return np.array(sorted(self.excluded), dtype=np.int64)

    def as_dict(self) -> dict:
        """JSON-ready summary (no mask)."""
        return {
            "threshold_suv": round(self.threshold, 3),
            "threshold_method": self.method,
            "margin_mm": MARGIN_MM,
            "organs": self.organs,
            "foci": self.foci,
            "excluded_slices": {int(k): v for k, v in sorted(self.excluded.items())},
            "n_excluded": len(self.excluded),
        }


def unlabelled_foci(
    suv: np.ndarray,
    spacing_zyx: tuple[float, ...],
    direction=None,
    label: np.ndarray | None = None,
    uncertain: np.ndarray | None = None,
    anatomy=None,
    margin_mm: float = MARGIN_MM,
) -> UnlabelledFoci:
    """Apply the module's rule to one SUV volume ``(z, y, x)``; ``label`` is its lesion mask (labelled lesions are
    never foci and their slices stay abnormal), ``anatomy`` a :func:`find_anatomy` result (computed when None)."""
    from medfoundry.preprocessing.anatomy import find_anatomy

    suv = np.asarray(suv, dtype=np.float32)
    spacing = tuple(float(s) for s in spacing_zyx)
    if anatomy is None:
        anatomy = find_anatomy(suv, spacing, direction)
    info = adaptive_threshold(suv, spacing, liver=anatomy.mask("liver"))
    lesion = np.zeros(suv.shape, bool) if label is None else np.asarray(label) > 0
    known = physiological_mask(anatomy, suv.shape, spacing, margin_mm)
    if lesion.any():
        known |= dilate_mm(lesion, spacing, margin_mm)
    candidates = (suv > info.threshold) & ~known
    components = cc3d.connected_components(candidates, connectivity=26)
    n = int(components.max())
    peaks = np.atleast_1d(ndimage.maximum(suv_peak_map(suv, spacing), components, np.arange(1, n + 1))) if n else []
    cc = anatomy.cc_fraction if anatomy.cc_axis == 0 else np.full(suv.shape[0], np.nan)
    mask = np.zeros(suv.shape, bool)
    foci = []
    for number, (box, peak) in enumerate(zip(ndimage.find_objects(components), peaks, strict=True), start=1):
        if box is None or peak < info.threshold:
            continue
        comp = components[box] == number
        mask[box] |= comp
        zs = box[0].start + np.nonzero(comp.any(axis=(1, 2)))[0]
        foci.append(
            {
                "id": len(foci) + 1,
                "slices": [int(zs[0]), int(zs[-1])],
                "voxels": int(comp.sum()),
                "volume_ml": round(float(comp.sum() * np.prod(spacing) / 1000.0), 3),
                "suv_max": round(float(suv[box][comp].max()), 3),
                "suv_peak": round(float(peak), 3),
                "cc_fraction": None if not np.isfinite(cc[zs]).any() else round(float(np.nanmean(cc[zs])), 3),
            }
        )
    labelled = lesion.any(axis=(1, 2))
    excluded: dict[int, str] = {}
    for focus in foci:
        for z in range(focus["slices"][0], focus["slices"][1] + 1):
            if mask[z].any() and not labelled[z]:
                excluded.setdefault(z, f"unlabelled focus {focus['id']} (SUVmax {focus['suv_max']:.1f})")
    if uncertain is not None:
        for z in np.nonzero((np.asarray(uncertain) > 0).any(axis=(1, 2)) & ~labelled)[0]:
            excluded.setdefault(int(z), "inside the loose outline, no labelled voxel")
    organs = {name: organ.status for name, organ in anatomy.organs.items()}
    return UnlabelledFoci(float(info.threshold), info.method, mask, foci, excluded, organs)
