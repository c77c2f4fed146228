"""From per-candidate scores to accepted lesions: hysteresis within a hot region, and the bilateral-symmetry rule.

* **Hysteresis** (:func:`accept_candidates`): the candidate stage splits one hot region at its prominent maxima so
  that two touching lesions separate, but a large heterogeneous tumour is split too (and its parts may not even
  touch above the threshold), and the classifier then judges each part on its own. A part scoring at least
  ``JOIN_FRACTION`` x the cut joins when another part of the same cluster (hot parts closer than
  ``CLUSTER_GAP_MM``) is accepted (edge detectors' hysteresis: a strong part vouches for its weaker neighbours); a
  part below that stays out, so an accepted lesion does not pull in a clearly physiological neighbour (bladder, heart).
* **Bilateral symmetry** (:func:`symmetric_candidates`): kidneys, salivary glands, tonsils, brown fat and
  symmetric muscle uptake come in mirror-image pairs across the body's mid-sagittal plane, and PET readers use that
  as a cue for physiological uptake. Hot parts closer than ``CLUSTER_GAP_MM`` form clusters (a kidney's calyces and
  cortex are often several disconnected hot parts); two clusters of similar size and uptake at mirror positions
  (same height and depth, opposite sides, both off the midline) are rejected, unless a part scores at least
  ``SYMMETRY_OVERRIDE``. The cost: truly bilateral disease of similar size (e.g. nodes in both axillae) is missed;
  turn the rule off with ``symmetry=False`` (``medfoundry lesions --keep-symmetric``).
"""

from __future__ import annotations

import cc3d
import numpy as np
from scipy import ndimage

from medfoundry.inference.lesions.candidates import Candidate

JOIN_FRACTION = 0.5  # a part scoring >= half the cut joins an accepted part of the same hot region
SYMMETRY_OVERRIDE = 0.9  # a part this confident is kept even when its region has a mirror partner
MIN_OFF_MIDLINE_MM = 20.0  # both regions at least 2 cm off the midline (a midline organ is not a pair)
MAX_MIRROR_MISMATCH_MM = 30.0  # |distance to midline| and depth (y) agree within 3 cm
MAX_HEIGHT_MISMATCH_MM = 50.0  # craniocaudal centres within 5 cm (the right kidney sits lower than the left)
MAX_VOLUME_RATIO = 4.0  # similar size ...
MAX_SUVMAX_RATIO = 3.0  # ... and similar uptake
CLUSTER_GAP_MM = 15.0  # hot parts closer than this form one cluster when looking for mirror partners
BODY_SUV = 0.3  # voxels above this SUV are "body" when finding the midline


def _regions(candidates: list[Candidate]) -> dict[int, list[int]]:
    regions: dict[int, list[int]] = {}
    for i, cand in enumerate(candidates):
        regions.setdefault(cand.region, []).append(i)
    return regions


def accept_candidates(
    candidates: list[Candidate], scores: np.ndarray, cut: float, groups: np.ndarray | None = None
) -> np.ndarray:
    """Boolean acceptance per candidate: ``score >= cut``, plus the hysteresis join within a group: the hot region
    (default), or the cluster of hot parts closer than ``CLUSTER_GAP_MM`` when ``groups`` gives cluster ids."""
    scores = np.asarray(scores, dtype=np.float64)
    accepted = scores >= cut
    if groups is None:
        members_of = _regions(candidates).values()
    else:
        groups = np.asarray(groups)
        members_of = [np.nonzero(groups == g)[0].tolist() for g in np.unique(groups)]
    for members in members_of:
        if accepted[members].any():
            for i in members:
                accepted[i] |= scores[i] >= JOIN_FRACTION * cut
    return accepted


def _lr_axis(direction: np.ndarray) -> int:
    """The array axis (0 = z, 1 = y, 2 = x) that runs most nearly along the patient's left-right axis."""
    d = np.asarray(direction, dtype=np.float64).reshape(3, 3)  # columns: image x, y, z axes in patient space
    image_axis = int(np.argmax(np.abs(d[0, :])))  # the image axis with the largest patient-x component
    return 2 - image_axis


def _clusters(candidates: list[Candidate], shape: tuple[int, ...], spacing_zyx: tuple[float, ...]) -> np.ndarray:
    """Cluster id per candidate: hot parts closer than ``CLUSTER_GAP_MM`` belong to one cluster (a kidney's
    calyces and cortex are often several disconnected hot parts)."""
    union = np.zeros(shape, dtype=bool)
    for cand in candidates:
        union[cand.bbox] |= cand.mask
    near = ndimage.distance_transform_edt(~union, sampling=spacing_zyx) <= CLUSTER_GAP_MM / 2
    labels = cc3d.connected_components(near, connectivity=26)
    return np.array([int(labels[c.peak_zyx]) for c in candidates])


def symmetric_candidates(
    candidates: list[Candidate],
    suv: np.ndarray,
    spacing_zyx: tuple[float, ...],
    direction: np.ndarray | None = None,
) -> np.ndarray:
    """Boolean per candidate: its cluster of hot parts has a mirror-image partner across the mid-sagittal plane."""
    flags = np.zeros(len(candidates), dtype=bool)
    if len(candidates) < 2 or suv.ndim != 3:
        return flags
    lr = _lr_axis(np.eye(3) if direction is None else direction)
    if lr == 0:  # the left-right axis runs across slices (a sagittal acquisition): no axial mirror to look at
        return flags
    other = 1 if lr == 2 else 2  # the in-plane axis that is not left-right (anterior-posterior)
    spacing = np.asarray(spacing_zyx, dtype=np.float64)
    body = suv > BODY_SUV
    cluster = _clusters(candidates, suv.shape, spacing_zyx)
    summary = {}
    for cid in np.unique(cluster):
        members = np.nonzero(cluster == cid)[0]
        idx = np.concatenate([np.argwhere(candidates[i].mask) + [b.start for b in candidates[i].bbox] for i in members])
        z0, z1 = int(idx[:, 0].min()), int(idx[:, 0].max()) + 1
        body_lr = np.nonzero(body[z0:z1].any(axis=tuple(a for a in (0, 1, 2) if a != lr)))[0]
        if body_lr.size == 0:
            continue
        mid = 0.5 * (body_lr.min() + body_lr.max())  # centre of the body's left-right extent on these slices
        centre = idx.mean(axis=0)
        summary[int(cid)] = {
            "offset_mm": (centre[lr] - mid) * spacing[lr],
            "height_mm": centre[0] * spacing[0],
            "depth_mm": centre[other] * spacing[other],
            "volume_ml": sum(candidates[i].volume_ml for i in members),
            "suv_max": max(candidates[i].suv_max for i in members),
        }
    paired: set[int] = set()
    keys = sorted(summary)
    for a_i, a in enumerate(keys):
        for b in keys[a_i + 1 :]:
            if _mirror_pair(summary[a], summary[b]):
                paired.update((a, b))
    return np.isin(cluster, sorted(paired))


def _mirror_pair(sa: dict, sb: dict) -> bool:
    if sa["offset_mm"] * sb["offset_mm"] >= 0:  # same side (or on the midline)
        return False
    if min(abs(sa["offset_mm"]), abs(sb["offset_mm"])) < MIN_OFF_MIDLINE_MM:
        return False
    if abs(abs(sa["offset_mm"]) - abs(sb["offset_mm"])) > MAX_MIRROR_MISMATCH_MM:
        return False
    if abs(sa["depth_mm"] - sb["depth_mm"]) > MAX_MIRROR_MISMATCH_MM:
        return False
    if abs(sa["height_mm"] - sb["height_mm"]) > MAX_HEIGHT_MISMATCH_MM:
        return False
    vol = max(sa["volume_ml"], sb["volume_ml"]) / max(min(sa["volume_ml"], sb["volume_ml"]), 1e-6)
    suv_ratio = max(sa["suv_max"], sb["suv_max"]) / max(min(sa["suv_max"], sb["suv_max"]), 1e-6)
    return vol <= MAX_VOLUME_RATIO and suv_ratio <= MAX_SUVMAX_RATIO


def select_lesions(
    candidates: list[Candidate],
    scores: np.ndarray,
    cut: float,
    suv: np.ndarray,
    spacing_zyx: tuple[float, ...],
    direction: np.ndarray | None = None,
    symmetry: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """(accepted per candidate, mirror-paired per candidate); a paired candidate is accepted only when its score
    reaches ``SYMMETRY_OVERRIDE``. Every candidate counts as a partner, accepted or not."""
    clusters = _clusters(candidates, suv.shape, spacing_zyx) if candidates and suv.ndim == 3 else None
    accepted = accept_candidates(candidates, scores, cut, clusters)
    if not symmetry:
        return accepted, np.zeros(len(candidates), dtype=bool)
    paired = symmetric_candidates(candidates, suv, spacing_zyx, direction)
    accepted &= ~paired | (np.asarray(scores, dtype=np.float64) >= SYMMETRY_OVERRIDE)
    return accepted, paired
