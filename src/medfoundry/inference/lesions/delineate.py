"""Delineation of accepted candidates: LiteMedSAM from the candidate's 3D box, the classic 41 %-of-SUVmax
threshold, or both.

* ``threshold``: voxels >= 41 % of the candidate's SUVmax inside its box grown by ``MARGIN_MM``, the 3D
  (18-connected) component that holds the hottest voxel.
* ``sam``: the candidate's 3D box (grown by one voxel in-plane and ``Z_MARGIN_SLICES`` in z) goes to LiteMedSAM
  on the PET window (SUV 0-10); the hottest slice is segmented with the box and the mask propagated up and
  down (previous mask's box as the prompt) until it vanishes. An empty LiteMedSAM mask falls back to the
  candidate region.
* ``both``: the union of the two masks. LiteMedSAM follows the outline of the whole tumour, including
  low-uptake (necrotic) parts that a 41 % threshold drops; the threshold mask restores hot voxels on slices where
  propagation stopped early.

Every mode returns one boolean mask per candidate; :func:`merge_masks` then joins touching masks into lesions.
"""

from __future__ import annotations

import cc3d
import numpy as np
from tqdm.auto import tqdm

from medfoundry.inference.lesions.candidates import Candidate
from medfoundry.io import MedicalImage

DELINEATIONS = ("sam", "threshold", "both")
SUVMAX_FRACTION = 0.41
MARGIN_MM = 20.0
Z_MARGIN_SLICES = 2


def _grown_box(cand: Candidate, shape, spacing_zyx, margin_mm: float) -> tuple[slice, ...]:
    grow = [max(1, int(np.ceil(margin_mm / s))) for s in spacing_zyx]
    return tuple(
        slice(max(0, b.start - g), min(n, b.stop + g)) for b, g, n in zip(cand.bbox, grow, shape, strict=False)
    )


def threshold_mask(cand: Candidate, suv: np.ndarray, spacing_zyx: tuple[float, ...]) -> np.ndarray:
    """The 41 %-of-SUVmax mask of one candidate (whole-volume boolean array)."""
    box = _grown_box(cand, suv.shape, spacing_zyx, MARGIN_MM)
    hot = suv[box] >= SUVMAX_FRACTION * cand.suv_max
    comps = cc3d.connected_components(hot, connectivity=18)
    peak = tuple(p - b.start for p, b in zip(cand.peak_zyx, box, strict=False))
    out = np.zeros(suv.shape, dtype=bool)
    out[box] = comps == comps[peak]
    return out


def sam_masks(candidates: list[Candidate], image: MedicalImage, predictor, progress: bool = False) -> list[np.ndarray]:
    """LiteMedSAM masks (whole-volume boolean) from each candidate's 3D box, with 3D propagation; slice
    embeddings are shared between candidates."""
    from medfoundry.inference.predictor import Prompts
    from medfoundry.inference.propagation import SliceEmbeddings, propagate, segment_slice
    from medfoundry.preprocessing.intensity import IntensityWindow, normalize_intensity

    if not candidates:
        return []
    nz, ny, nx = image.array.shape
    volume = normalize_intensity(image.with_array(image.array, modality="PET"), IntensityWindow())
    embeddings = SliceEmbeddings(predictor, volume, max_slices=nz)
    masks = []
    for cand in tqdm(candidates, desc="LiteMedSAM", unit="lesion", disable=not progress, leave=False):
        x0, y0, z0, x1, y1, z1 = cand.box_xyz
        box = np.array([max(0, x0 - 1), max(0, y0 - 1), min(nx - 1, x1 + 1), min(ny - 1, y1 + 1)], np.float32)
        z_range = (max(0, z0 - Z_MARGIN_SLICES), min(nz - 1, z1 + Z_MARGIN_SLICES))
        start = cand.peak_zyx[0]  # the hottest slice: the box is tight there and the lesion is surely present
        mask3d = np.zeros(volume.shape, dtype=bool)
        mask3d[start] = segment_slice(predictor, embeddings, start, Prompts(boxes=box[None]))[0]
        if mask3d[start].any():
            propagate(predictor, embeddings, start, mask3d[start], z_range, mask3d)
        masks.append(mask3d)
    return masks


def delineate(
    candidates: list[Candidate], image: MedicalImage, method: str, predictor=None, progress: bool = False
) -> list[np.ndarray]:
    """One whole-volume boolean mask per candidate by ``method`` (one of :data:`DELINEATIONS`)."""
    if method not in DELINEATIONS:
        raise ValueError(f"delineation must be one of {DELINEATIONS}, got {method!r}")
    suv, spacing_zyx = image.array, image.spacing_zyx
    thr = [threshold_mask(c, suv, spacing_zyx) for c in candidates] if method != "sam" else []
    if method == "threshold":
        return thr
    sam = sam_masks(candidates, image, predictor, progress)
    if method == "sam":
        return [s | c.full_mask(suv.shape) if not s.any() else s for s, c in zip(sam, candidates, strict=False)]
    return [s | t for s, t in zip(sam, thr, strict=False)]


def merge_masks(masks: list[np.ndarray], suv: np.ndarray) -> np.ndarray:
    """Label map of the union of ``masks``: overlapping or touching masks become one lesion (18-connectivity,
    as autoPET and ``medfoundry evaluate --lesion-wise`` count components); labels are numbered by decreasing SUVmax."""
    if not masks:
        return np.zeros(suv.shape, dtype=np.uint16)
    union = np.logical_or.reduce(masks)
    comps, n = cc3d.connected_components(union, connectivity=18, return_N=True)
    if n == 0:
        return np.zeros(suv.shape, dtype=np.uint16)
    maxima = np.full(n + 1, -np.inf)
    np.maximum.at(maxima, comps.ravel(), suv.ravel().astype(np.float64))
    order = np.argsort(-maxima[1:]) + 1
    relabel = np.zeros(n + 1, dtype=np.uint16)
    relabel[order] = np.arange(1, n + 1, dtype=np.uint16)
    return relabel[comps]
