"""Where a lesion candidate lies relative to the anatomy: the numbers a classifier can use next to its shape and
uptake (issue 28: anatomy as features).

A candidate is given as its voxels (native array indices, (N, 3)) or a single point; :func:`candidate_position`
returns its cranio-caudal coordinate (fraction of stature below the vertex), its signed distance to the
mid-sagittal plane (mm, + = patient's left), the fraction of its voxels inside each organ, the distance (mm) from
its nearest voxel to each organ (0 when it touches or enters it; None when the organ was not found) and its
centroid mirrored across the mid-sagittal plane (native indices), where a physiological partner would be.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from medfoundry.preprocessing.anatomy import Anatomy


def _centroid_work_mm(anatomy: Anatomy, voxels_zyx: np.ndarray) -> np.ndarray:
    centre = np.asarray(voxels_zyx, dtype=np.float64).reshape(-1, 3).mean(axis=0)
    return anatomy.grid.to_work_index(centre[None])[0] * np.asarray(anatomy.grid.spacing)


def cc_fraction(anatomy: Anatomy, voxels_zyx: np.ndarray) -> float | None:
    """Cranio-caudal coordinate of the centroid (fraction of stature below the vertex), None without landmarks."""
    if anatomy.stature is None:
        return None
    return float(anatomy.stature.fraction(_centroid_work_mm(anatomy, voxels_zyx)[0]))


def midline_offset_mm(anatomy: Anatomy, voxels_zyx: np.ndarray) -> float | None:
    """Signed distance of the centroid to the mid-sagittal plane (mm, + = patient's left), None without a plane."""
    midline = anatomy.work_body.midline
    if midline is None:
        return None
    return float(midline.signed_distance_mm(_centroid_work_mm(anatomy, voxels_zyx)[None])[0])


def mirror_zyx(anatomy: Anatomy, voxels_zyx: np.ndarray) -> np.ndarray | None:
    """The centroid reflected across the mid-sagittal plane, as (fractional) native indices; None without one."""
    midline = anatomy.work_body.midline
    if midline is None:
        return None
    mirrored = midline.mirror_mm(_centroid_work_mm(anatomy, voxels_zyx)[None])
    return anatomy.grid.to_native_index(mirrored / np.asarray(anatomy.grid.spacing))[0]


def organ_overlap(anatomy: Anatomy, voxels_zyx: np.ndarray) -> dict[str, float | None]:
    """Fraction of the voxels inside each organ (None for an organ not found)."""
    idx = tuple(np.asarray(voxels_zyx, dtype=np.int64).reshape(-1, 3).T)
    out: dict[str, float | None] = {}
    for name, organ in anatomy.organs.items():
        out[name] = None if organ.mask is None else float(organ.mask[idx].mean())
    return out


def _surface_tree(anatomy: Anatomy, name: str) -> cKDTree | None:
    """KD-tree of the organ's surface voxels in native millimetres (built once per organ and cached)."""
    key = ("surface", name)
    if key not in anatomy._distances:
        mask = anatomy.organs[name].mask
        if mask is None:
            anatomy._distances[key] = None
        else:
            surface = mask & ~ndimage.binary_erosion(mask)
            anatomy._distances[key] = cKDTree(np.argwhere(surface) * np.asarray(anatomy.spacing_zyx))
    return anatomy._distances[key]


def organ_distance_mm(anatomy: Anatomy, voxels_zyx: np.ndarray) -> dict[str, float | None]:
    """Distance (mm) from the nearest voxel to each organ: 0 when a voxel lies inside it, None when not found."""
    voxels = np.asarray(voxels_zyx, dtype=np.int64).reshape(-1, 3)
    points = voxels * np.asarray(anatomy.spacing_zyx)
    out: dict[str, float | None] = {}
    for name, organ in anatomy.organs.items():
        tree = _surface_tree(anatomy, name)
        if tree is None:
            out[name] = None
        elif organ.mask[tuple(voxels.T)].any():
            out[name] = 0.0
        else:
            out[name] = float(tree.query(points, k=1)[0].min())
    return out


def candidate_position(anatomy: Anatomy, voxels_zyx: np.ndarray) -> dict:
    """Everything above for one candidate (native voxel indices (N, 3), or one point)."""
    mirror = mirror_zyx(anatomy, voxels_zyx)
    return {
        "cc_fraction": cc_fraction(anatomy, voxels_zyx),
        "midline_offset_mm": midline_offset_mm(anatomy, voxels_zyx),
        "mirror_zyx": None if mirror is None else [float(v) for v in mirror],
        "overlap": organ_overlap(anatomy, voxels_zyx),
        "distance_mm": organ_distance_mm(anatomy, voxels_zyx),
    }
