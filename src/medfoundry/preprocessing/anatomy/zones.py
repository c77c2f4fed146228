"""Shared helpers of the organ detectors: hot parts, where a part lies relative to the body, the expected range of
an organ on the cranio-caudal coordinate and the "not in field of view" test."""

from __future__ import annotations

from dataclasses import dataclass

import cc3d
import numpy as np
from scipy import ndimage

from medfoundry.preprocessing.anatomy.body import Body, Stature
from medfoundry.preprocessing.anatomy.grid import WorkGrid
from medfoundry.preprocessing.anatomy.morphology import dilate_mm


@dataclass
class Part:
    """One connected part of a mask on the working grid, with its position relative to the body."""

    box: tuple[slice, ...]
    local: np.ndarray  # the part within ``box``
    shape: tuple[int, ...]
    volume_ml: float
    centre: np.ndarray  # working-grid index (cc, ap, lr)
    centre_mm: np.ndarray
    lr_offset_mm: float  # signed distance to the mid-sagittal plane, + = patient's left
    ap_offset_mm: float  # relative to the body's anterior-posterior centre on its centre slice, + = posterior
    cc_range: tuple[int, int]  # first and last working slice
    suv_mean: float
    suv_max: float

    @property
    def mask(self) -> np.ndarray:
        full = np.zeros(self.shape, dtype=bool)
        full[self.box] = self.local
        return full


def parts(mask: np.ndarray, grid: WorkGrid, body: Body, min_ml: float = 0.0, image: np.ndarray | None = None):
    """The 26-connected parts of ``mask`` of at least ``min_ml``, largest first."""
    image = grid.smooth if image is None else image
    labels = cc3d.connected_components(mask, connectivity=26)
    if labels.max() == 0:
        return []
    counts = np.bincount(labels.ravel())
    counts[0] = 0
    keep = np.nonzero(counts * grid.voxel_ml >= max(min_ml, 1e-9))[0]
    keep = keep[np.argsort(counts[keep])[::-1]]
    boxes = ndimage.find_objects(labels)
    out = []
    spacing = np.asarray(grid.spacing)
    for label in keep:
        box = boxes[label - 1]
        local = labels[box] == label
        idx = np.argwhere(local) + [b.start for b in box]
        centre = idx.mean(axis=0)
        centre_mm = centre * spacing
        cz = int(round(centre[0]))
        lr = float(body.midline.signed_distance_mm(centre_mm)[0]) if body.midline is not None else 0.0
        ap_body = body.ap_centre_mm[cz] if np.isfinite(body.ap_centre_mm[cz]) else centre_mm[1]
        values = image[box][local]
        out.append(
            Part(
                box,
                local,
                mask.shape,
                float(counts[label] * grid.voxel_ml),
                centre,
                centre_mm,
                lr,
                float(centre_mm[1] - ap_body),
                (int(idx[:, 0].min()), int(idx[:, 0].max())),
                float(values.mean()),
                float(values.max()),
            )
        )
    return out


def expected_slices(stature: Stature | None, grid: WorkGrid, fractions: tuple[float, float]) -> tuple[float, float]:
    """Working slice range (low, high) where an organ lying at ``fractions`` of stature below the vertex would be;
    the whole scan without a coordinate."""
    if stature is None:
        return 0.0, grid.shape[0] - 1.0
    a, b = (stature.cc_mm(f) / grid.spacing[0] for f in fractions)
    return float(min(a, b)), float(max(a, b))


def outside_fov(stature: Stature | None, grid: WorkGrid, fractions: tuple[float, float]) -> str | None:
    """A reason when the scan's cranio-caudal range misses the organ's range entirely, else None."""
    if stature is None:
        return None
    lo, hi = expected_slices(stature, grid, fractions)
    if hi < 0 or lo > grid.shape[0] - 1:
        top = float(stature.fraction((grid.shape[0] - 1) * grid.spacing[0]))
        bottom = float(stature.fraction(0.0))
        return (
            f"the scan covers {top:.2f}-{bottom:.2f} of stature below the vertex; the organ lies at "
            f"{fractions[0]:.2f}-{fractions[1]:.2f}"
        )
    return None


def grow_within(seed: np.ndarray, allowed: np.ndarray, spacing, mm: float) -> np.ndarray:
    """Voxels of ``allowed`` within ``mm`` of ``seed`` and connected to it, plus the seed."""
    near = dilate_mm(seed, spacing, mm)
    grown = (near & allowed) | seed
    labels = cc3d.connected_components(grown, connectivity=26)
    ids = np.unique(labels[seed])
    return np.isin(labels, ids[ids > 0])


def offset_mm(grid: WorkGrid, body: Body, mask: np.ndarray) -> float:
    """Mean signed distance of ``mask`` to the mid-sagittal plane (mm, + = patient's left)."""
    if body.midline is None or not mask.any():
        return 0.0
    idx = np.argwhere(mask).astype(np.float64) * np.asarray(grid.spacing)
    return float(body.midline.signed_distance_mm(idx).mean())


def thickness_mm(mask: np.ndarray, spacing) -> float:
    """Twice the largest distance from inside ``mask`` to its edge: the diameter of its thickest point."""
    if not mask.any():
        return 0.0
    box = ndimage.find_objects(mask.astype(np.uint8))[0]
    padded = np.pad(mask[box], 1)
    return 2.0 * float(ndimage.distance_transform_edt(padded, sampling=spacing).max())


def principal_axis(mask: np.ndarray, spacing) -> tuple[float, np.ndarray]:
    """(length in mm, unit direction) of ``mask`` along its principal axis (4 SD of the voxel positions, which is
    the full length of a uniform rod)."""
    idx = np.argwhere(mask) * np.asarray(spacing, dtype=np.float64)
    if len(idx) < 2:
        return 0.0, np.array([1.0, 0.0, 0.0])
    values, vectors = np.linalg.eigh(np.cov(idx.T))
    return float(np.sqrt(12.0 * max(values[-1], 0.0))), vectors[:, -1]


def body_offsets(grid: WorkGrid, body: Body) -> tuple[np.ndarray, np.ndarray]:
    """Per voxel (as broadcastable arrays): signed distance to the mid-sagittal plane (mm, + = patient's left;
    shape (z, 1, x)) and front-back position relative to the body's centre on its slice (mm, + = posterior;
    shape (z, y, 1))."""
    z_mm = np.arange(grid.shape[0])[:, None, None] * grid.spacing[0]
    x_mm = np.arange(grid.shape[2])[None, None, :] * grid.spacing[2]
    midline = body.midline
    lr = (
        np.zeros((grid.shape[0], 1, grid.shape[2]))
        if midline is None
        else ((x_mm - midline.slope * z_mm - midline.lr_mm) / np.sqrt(1.0 + midline.slope**2))
    )
    centre = np.nan_to_num(body.ap_centre_mm, nan=grid.shape[1] * grid.spacing[1] / 2)
    ap = np.arange(grid.shape[1])[None, :, None] * grid.spacing[1] - centre[:, None, None]
    return lr, ap
