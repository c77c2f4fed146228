"""Delineation of accepted candidates: LiteMedSAM from the candidate's 3D box, the classic 41 %-of-SUVmax
threshold, their union, or their union kept where uptake supports it (the default).

* ``threshold``: voxels >= 41 % of the candidate's SUVmax inside its box grown by ``MARGIN_MM``, the 3D
  (18-connected) component that holds the hottest voxel.
* ``sam``: the candidate's 3D box (grown by one voxel in-plane and ``Z_MARGIN_SLICES`` in z) goes to LiteMedSAM
  on the PET window (SUV 0-10); the hottest slice is segmented with the box and the mask propagated up and
  down (previous mask's box as the prompt) until it vanishes. An empty LiteMedSAM mask falls back to the
  candidate region.
* ``both``: the union of the two masks. LiteMedSAM follows the outline of the whole tumour, including
  low-uptake (necrotic) parts that a 41 % threshold drops, but it also spreads into neighbouring tissue of
  background uptake (a 120 mL "lesion" at SUVmean 2.2 around a mediastinal focus).
* ``supported`` (the default): the 41 % outline, plus LiteMedSAM's contribution where uptake supports it
  (:func:`supported_mask`): its voxels at or above the :func:`support_level` between the local background and
  the candidate threshold, 18-connected to the candidate, plus the cavities they enclose (a necrotic centre
  stays in the lesion).

Every mode returns one boolean mask per candidate; :mod:`.assemble` then turns them into lesions (touching
lesions split at the saddle between their maxima).
"""

from __future__ import annotations

import cc3d
import numpy as np
from scipy import ndimage
from tqdm.auto import tqdm

from medfoundry.inference.lesions.candidates import Candidate
from medfoundry.io import MedicalImage
from medfoundry.preprocessing.pet_background import grown_box, shell_background

DELINEATIONS = ("supported", "both", "sam", "threshold")
SUVMAX_FRACTION = 0.41
MARGIN_MM = 20.0
Z_MARGIN_SLICES = 2
# the local background is the median SUV 10-20 mm outside the outline: beyond the lesion's spill-out (partial
# volume reaches about one resolution FWHM, 5-10 mm on clinical scanners) and still local
BACKGROUND_SHELL_MM = (10.0, 20.0)
BODY_SUV = 0.3  # shell voxels at or below this are air (outside the body), not background tissue


def support_level(background: float, threshold: float) -> float:
    """The lowest SUV that supports an outline voxel: half way from the local ``background`` to the candidate
    ``threshold`` (never below the background). The faintest lesion the finder reports has uptake >= the
    threshold; blurred by the scanner, its edge (half contrast) lies half way between its uptake and the
    background, so a voxel below that level is outside even the faintest lesion's edge."""
    return max(background, background + 0.5 * (threshold - background))


def threshold_mask(cand: Candidate, suv: np.ndarray, spacing_zyx: tuple[float, ...]) -> np.ndarray:
    """The 41 %-of-SUVmax mask of one candidate (whole-volume boolean array)."""
    box = grown_box(cand.bbox, suv.shape, spacing_zyx, MARGIN_MM)
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


def _fill_enclosed(mask: np.ndarray) -> np.ndarray:
    """``mask`` with its cavities filled: in 3D, and on each axial, coronal and sagittal plane (a necrotic centre
    that opens to the outside on one plane is usually closed on another)."""
    filled = ndimage.binary_fill_holes(mask)
    for axis in range(mask.ndim):
        planes = np.moveaxis(mask, axis, 0)
        filled |= np.moveaxis(np.stack([ndimage.binary_fill_holes(p) for p in planes]), 0, axis)
    return filled


def local_background(outline: np.ndarray, suv: np.ndarray, spacing_zyx: tuple[float, ...]) -> float:
    """The local background of a lesion outline (whole-volume boolean): the median SUV of the body voxels
    (SUV > ``BODY_SUV``) 10-20 mm outside it."""
    inner, outer = BACKGROUND_SHELL_MM
    box = grown_box(ndimage.find_objects(outline.astype(np.uint8))[0], suv.shape, spacing_zyx, outer)
    return shell_background(suv[box], outline[box], spacing_zyx, outer, inner_mm=inner, min_suv=BODY_SUV)


def supported_mask(
    cand: Candidate,
    sam: np.ndarray,
    thr: np.ndarray,
    suv: np.ndarray,
    spacing_zyx: tuple[float, ...],
    threshold: float,
) -> np.ndarray:
    """The 41 % outline ``thr`` and the candidate, plus LiteMedSAM's outline ``sam`` where uptake supports it:
    its voxels at or above :func:`support_level` (from the :func:`local_background` of the whole outline), all
    18-connected to the candidate, plus the cavities they enclose within the outlines (whole-volume booleans)."""
    base = thr.copy()
    base[cand.bbox] |= cand.mask
    outline = base | sam
    level = support_level(local_background(outline, suv, spacing_zyx), threshold)
    box = grown_box(ndimage.find_objects(outline.astype(np.uint8))[0], suv.shape, spacing_zyx, 0.0)
    region = outline[box]
    core = np.zeros_like(region)
    core[tuple(slice(b.start - g.start, b.stop - g.start) for b, g in zip(cand.bbox, box, strict=True))] = cand.mask
    keep = base[box] | (region & (suv[box] >= level))
    parts = cc3d.connected_components(keep, connectivity=18)
    keep = _fill_enclosed(np.isin(parts, np.unique(parts[core]))) & region
    out = np.zeros(suv.shape, dtype=bool)
    out[box] = keep
    return out


def delineate(
    candidates: list[Candidate],
    image: MedicalImage,
    method: str,
    predictor=None,
    progress: bool = False,
    threshold: float | None = None,
) -> list[np.ndarray]:
    """One whole-volume boolean mask per candidate by ``method`` (one of :data:`DELINEATIONS`; ``supported``
    needs the candidate ``threshold``)."""
    if method not in DELINEATIONS:
        raise ValueError(f"delineation must be one of {DELINEATIONS}, got {method!r}")
    suv, spacing_zyx = image.array, image.spacing_zyx
    thr = [threshold_mask(c, suv, spacing_zyx) for c in candidates] if method != "sam" else []
    if method == "threshold":
        return thr
    sam = sam_masks(candidates, image, predictor, progress)
    if method == "sam":
        return [s | c.full_mask(suv.shape) if not s.any() else s for s, c in zip(sam, candidates, strict=False)]
    if method == "both":
        return [s | t for s, t in zip(sam, thr, strict=False)]
    if threshold is None:
        raise ValueError("the supported delineation needs the candidate threshold")
    return [supported_mask(c, s, t, suv, spacing_zyx, threshold) for c, s, t in zip(candidates, sam, thr, strict=True)]
