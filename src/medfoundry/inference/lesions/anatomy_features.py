"""Per-candidate features relative to the patient's anatomy (feature set v3; issue 28): where the candidate lies in
the body and next to which organ of physiological uptake, whether its mirror position across the mid-sagittal plane
is as hot, and how hot it is against the liver.

* ``cc_position``: the cranio-caudal coordinate of its centroid (fraction of stature below the vertex,
  :mod:`medfoundry.preprocessing.anatomy.body`);
* ``near_<group>`` for each of :data:`ORGAN_GROUPS`: the fraction of its voxels within :data:`NEAR_MM` of the
  group's organs (0 when the organs are in view but were not found);
* ``organ_distance_mm``: the distance from its nearest voxel to the nearest organ found, capped at
  :data:`MAX_DISTANCE_MM`;
* ``abs_midline_mm``: the distance of its centroid to the mid-sagittal plane;
* ``mirror_ratio``: the hottest SUV within :data:`MIRROR_RADIUS_MM` of its mirrored centroid (its own voxels left
  out) over its SUVmax: about 1 for a kidney or a salivary gland (a partner as hot), low for a one-sided lesion;
* ``suvmax_over_liver``: its SUVmax over the liver's SUVmean (over the anatomy's liver, else PERCIST's own liver
  search).

A feature that cannot be measured is NaN: an organ group none of whose organs is in the field of view (a torso scan
has no brain; a crop has no organ at all), no cranio-caudal coordinate, no mid-sagittal plane, a mirror position
outside the image, a crop (its midline is not the body's), no liver. A model imputes its training mean there
(:meth:`medfoundry.modeling.lesion_classifier.LesionClassifier.score`), i.e. the feature then says nothing.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from medfoundry.inference.lesions.candidates import Candidate
from medfoundry.preprocessing.anatomy import NOT_IN_FOV, Anatomy
from medfoundry.preprocessing.anatomy.morphology import dilate_mm
from medfoundry.preprocessing.anatomy.position import cc_fraction, midline_offset_mm, mirror_zyx

ORGAN_GROUPS = {
    "brain": ("brain",),
    "salivary": ("salivary",),
    "heart": ("heart",),
    "liver": ("liver",),
    "kidneys": ("kidney_right", "kidney_left", "ureters"),
    "bladder": ("bladder",),
    "bowel": ("bowel",),
}
NEAR_MM = 5.0  # about one voxel: "touches the organ" allowing for the anatomy's 4 mm working grid
MAX_DISTANCE_MM = 100.0  # beyond 10 cm an organ no longer explains uptake
MIRROR_RADIUS_MM = 15.0  # the mirror point is as uncertain as the midline and the partner's own position
MAX_DISTANCE_POINTS = 2000  # a large candidate's voxels are subsampled for the nearest-organ distance

ANATOMY = (
    "cc_position",
    *(f"near_{g}" for g in ORGAN_GROUPS),
    "organ_distance_mm",
    "abs_midline_mm",
    "mirror_ratio",
    "suvmax_over_liver",
)


def _voxels(cand: Candidate) -> np.ndarray:
    return np.argwhere(cand.mask) + np.array([b.start for b in cand.bbox])


def _group_near(anatomy: Anatomy, group: str) -> np.ndarray | None:
    """Voxels within NEAR_MM of the group's found organs (cached on the anatomy); None when none is in view."""
    key = ("near", group)
    if key not in anatomy._distances:
        organs = [anatomy.organs[n] for n in ORGAN_GROUPS[group]]
        if all(o.status == NOT_IN_FOV for o in organs):
            anatomy._distances[key] = None
        else:
            masks = [o.mask for o in organs if o.mask is not None]
            union = np.logical_or.reduce(masks) if masks else None
            anatomy._distances[key] = (
                False if union is None or not union.any() else dilate_mm(union, anatomy.spacing_zyx, NEAR_MM)
            )
    return anatomy._distances[key]


def _organ_tree(anatomy: Anatomy) -> tuple[np.ndarray, cKDTree] | None:
    """(union of every organ found, KD-tree of its voxels in mm), cached; None when no organ was found."""
    key = ("union-tree", None)
    if key not in anatomy._distances:
        masks = [o.mask for o in anatomy.organs.values() if o.mask is not None]
        union = np.logical_or.reduce(masks) if masks else None
        if union is None or not union.any():
            anatomy._distances[key] = None
        else:
            anatomy._distances[key] = (union, cKDTree(np.argwhere(union) * np.asarray(anatomy.spacing_zyx)))
    return anatomy._distances[key]


def liver_suv_mean(suv: np.ndarray, spacing_zyx: tuple[float, ...], anatomy: Anatomy | None) -> float:
    """The liver's SUVmean: over the anatomy's liver mask, else PERCIST's own liver search, else NaN."""
    from medfoundry.preprocessing.pet_reference import find_reference_region

    liver = None if anatomy is None else anatomy.mask("liver")
    if liver is not None and liver.any():
        return float(np.mean(suv[liver], dtype=np.float64))
    ref = find_reference_region(suv, spacing_zyx)
    return float("nan") if ref is None else float(ref[0])


def _mirror_ratio(anatomy: Anatomy, cand: Candidate, voxels: np.ndarray, suv: np.ndarray) -> float:
    point = mirror_zyx(anatomy, voxels)
    if point is None:
        return float("nan")
    centre = np.round(point).astype(int)
    if np.any(centre < 0) or np.any(centre >= np.asarray(suv.shape)):
        return float("nan")
    half = [max(1, int(round(MIRROR_RADIUS_MM / s))) for s in anatomy.spacing_zyx]
    box = tuple(slice(max(0, c - h), min(n, c + h + 1)) for c, h, n in zip(centre, half, suv.shape, strict=True))
    window = np.array(suv[box], dtype=np.float64)
    own = np.zeros(suv.shape, bool)
    own[cand.bbox] = cand.mask
    window[own[box]] = -np.inf
    hottest = float(window.max())
    return hottest / max(cand.suv_max, 1e-6) if np.isfinite(hottest) else float("nan")


def anatomy_features(
    candidates: list[Candidate], suv: np.ndarray, anatomy: Anatomy | None, liver_mean: float
) -> np.ndarray:
    """(N, len(ANATOMY)) features of candidates given on the anatomy's (native) grid; all NaN without anatomy."""
    out = np.full((len(candidates), len(ANATOMY)), np.nan)
    if anatomy is None:
        return out
    spacing = np.asarray(anatomy.spacing_zyx)
    tree = _organ_tree(anatomy)
    crop = bool(anatomy.field_of_view.get("crop"))  # a crop's midline is the crop's, not the body's
    for i, cand in enumerate(candidates):
        voxels = _voxels(cand)
        idx = tuple(voxels.T)
        row = [cc_fraction(anatomy, voxels)]
        for group in ORGAN_GROUPS:
            near = _group_near(anatomy, group)
            row.append(None if near is None else (0.0 if near is False else float(near[idx].mean())))
        if tree is None:
            row.append(None)
        else:
            union, kd = tree
            if union[idx].any():
                row.append(0.0)
            else:
                pick = voxels[:: max(1, len(voxels) // MAX_DISTANCE_POINTS)]
                d = kd.query(pick * spacing, k=1, distance_upper_bound=MAX_DISTANCE_MM)[0]
                row.append(float(min(np.min(d), MAX_DISTANCE_MM)))
        offset = None if crop else midline_offset_mm(anatomy, voxels)
        row.append(None if offset is None else abs(offset))
        row.append(float("nan") if crop else _mirror_ratio(anatomy, cand, voxels, suv))
        row.append(cand.suv_max / liver_mean if np.isfinite(liver_mean) and liver_mean > 0 else None)
        out[i] = [np.nan if v is None else v for v in row]
    return out
