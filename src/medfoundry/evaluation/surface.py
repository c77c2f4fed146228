"""Surface metrics of two binary masks: normalised surface distance (NSD) and robust Hausdorff (HD95).

Surfaces are made of the surface elements of DeepMind's ``surface-distance`` (Nikolov et al. 2021): the
2x2(x2) neighbourhood code of every voxel corner gives a surface element ("surfel", a contour segment in 2D)
whose area (length) comes from the marching-cubes normal table for the given spacing. Distances are
measured corner to corner with an exact Euclidean distance transform in mm, and both NSD and HD95 weight
every surfel by its area, as in that package. Masks are cropped to the bounding box of ``pred | gt``
(plus one voxel) first.

Empty-mask rules (see docs/metrics.md): NSD is 1.0 when both masks are empty and 0.0 when exactly one is;
HD95 is 0.0 when both are empty and NaN (undefined) when exactly one is.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from medfoundry.errors import InputError
from medfoundry.evaluation._checks import check_pair, check_spacing
from medfoundry.preprocessing.boxes import mask_slices


@functools.lru_cache(maxsize=64)
def _area_table(spacing: tuple[float, ...]) -> np.ndarray:
    """Surfel area (3D, mm^2) or contour length (2D, mm) for each neighbourhood code: MONAI's public table
    (``monai.metrics.utils.get_code_to_measure_table``), as float64."""
    from monai.metrics.utils import get_code_to_measure_table

    table, _ = get_code_to_measure_table(spacing)
    return np.asarray(table.cpu().numpy(), dtype=np.float64)


def _neighbour_codes(padded: np.ndarray) -> np.ndarray:
    """Code of every voxel corner: one bit per voxel of its 2x2(x2) neighbourhood (MONAI's encoding order)."""
    nd = padded.ndim
    out_shape = tuple(n - 1 for n in padded.shape)
    code = np.zeros(out_shape, dtype=np.uint8)
    n_bits = 2**nd
    for bit, offset in enumerate(np.ndindex(*(2,) * nd)):
        sl = tuple(slice(o, o + n) for o, n in zip(offset, out_shape, strict=True))
        code |= padded[sl].astype(np.uint8) << np.uint8(n_bits - 1 - bit)
    return code


@dataclass(frozen=True)
class SurfaceDistances:
    """Surfel distances (mm, sorted ascending) from each surface to the other, with the surfel areas."""

    distances_gt_to_pred: np.ndarray
    distances_pred_to_gt: np.ndarray
    areas_gt: np.ndarray
    areas_pred: np.ndarray

    @property
    def gt_empty(self) -> bool:
        """True when the ground truth has no surface (an empty mask)."""
        return self.areas_gt.size == 0

    @property
    def pred_empty(self) -> bool:
        """True when the prediction has no surface (an empty mask)."""
        return self.areas_pred.size == 0

    def nsd(self, tolerance_mm: float) -> float:
        """Surface Dice at ``tolerance_mm``; 1.0 if both surfaces are empty, 0.0 if exactly one is."""
        if tolerance_mm < 0 or not np.isfinite(tolerance_mm):
            raise InputError(None, f"tolerance_mm must be finite and >= 0, got {tolerance_mm}")
        if self.gt_empty and self.pred_empty:
            return 1.0
        total = self.areas_gt.sum() + self.areas_pred.sum()
        inside = (
            self.areas_gt[self.distances_gt_to_pred <= tolerance_mm].sum()
            + self.areas_pred[self.distances_pred_to_gt <= tolerance_mm].sum()
        )
        return float(inside / total)

    def robust_hausdorff(self, percentile: float = 95.0) -> float:
        """Area-weighted ``percentile`` Hausdorff distance (mm); 0.0 if both empty, NaN if exactly one is."""
        if not 0.0 <= percentile <= 100.0:
            raise InputError(None, f"percentile must be in [0, 100], got {percentile}")
        if self.gt_empty and self.pred_empty:
            return 0.0
        if self.gt_empty or self.pred_empty:
            return float("nan")
        return float(
            max(
                _weighted_percentile(self.distances_gt_to_pred, self.areas_gt, percentile),
                _weighted_percentile(self.distances_pred_to_gt, self.areas_pred, percentile),
            )
        )

    def average_surface_distance(self) -> float:
        """Area-weighted average symmetric surface distance (mm); same empty rules as HD95."""
        if self.gt_empty and self.pred_empty:
            return 0.0
        if self.gt_empty or self.pred_empty:
            return float("nan")
        num = (self.distances_gt_to_pred * self.areas_gt).sum() + (self.distances_pred_to_gt * self.areas_pred).sum()
        return float(num / (self.areas_gt.sum() + self.areas_pred.sum()))


def _weighted_percentile(sorted_distances: np.ndarray, areas: np.ndarray, percentile: float) -> float:
    """Smallest distance whose cumulative surfel area reaches ``percentile`` % (DeepMind's definition)."""
    cum = np.cumsum(areas) / areas.sum()
    idx = int(np.searchsorted(cum, percentile / 100.0))
    return float(sorted_distances[min(idx, sorted_distances.size - 1)])


def _edt(edges: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """Distance (mm) of every corner to the nearest surfel corner in ``edges``."""
    return ndimage.distance_transform_edt(~edges, sampling=spacing)


def surface_distances(
    pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float] | float | None = None
) -> SurfaceDistances:
    """Surfels of both masks with their areas and their distance to the other surface.

    ``pred`` and ``gt`` are binary 2D or 3D arrays; ``spacing`` is in mm in array axis order (None: 1 mm).
    """
    p, g = check_pair(pred, gt)
    sp = check_spacing(spacing, p.ndim)
    empty = np.zeros(0, dtype=np.float64)
    box = mask_slices(p | g)
    if box is None:
        return SurfaceDistances(empty, empty, empty, empty)
    p = np.pad(p[box], 1)
    g = np.pad(g[box], 1)
    table = _area_table(sp)
    full = len(table) - 1
    code_p, code_g = _neighbour_codes(p), _neighbour_codes(g)
    edges_p = (code_p != 0) & (code_p != full)
    edges_g = (code_g != 0) & (code_g != full)
    areas_p, areas_g = table[code_p[edges_p]], table[code_g[edges_g]]
    has_p, has_g = bool(edges_p.any()), bool(edges_g.any())
    d_g2p = _edt(edges_p, sp)[edges_g] if has_p else np.full(areas_g.shape, np.inf)
    d_p2g = _edt(edges_g, sp)[edges_p] if has_g else np.full(areas_p.shape, np.inf)
    order_g = np.argsort(d_g2p, kind="stable")
    order_p = np.argsort(d_p2g, kind="stable")
    return SurfaceDistances(d_g2p[order_g], d_p2g[order_p], areas_g[order_g], areas_p[order_p])


def nsd(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: Sequence[float] | float | None = None,
    tolerance_mm: float = 2.0,
) -> float:
    """Normalised surface distance (surface Dice) at ``tolerance_mm``; spacing in mm, array axis order."""
    return surface_distances(pred, gt, spacing).nsd(tolerance_mm)


def hausdorff(
    pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float] | float | None = None, percentile: float = 95.0
) -> float:
    """Area-weighted ``percentile`` Hausdorff distance in mm (100: the full Hausdorff distance on surfels)."""
    return surface_distances(pred, gt, spacing).robust_hausdorff(percentile)


def hd95(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float] | float | None = None) -> float:
    """Area-weighted 95th-percentile Hausdorff distance in mm; spacing in array axis order."""
    return hausdorff(pred, gt, spacing, 95.0)


def assd(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float] | float | None = None) -> float:
    """Area-weighted average symmetric surface distance in mm; spacing in array axis order."""
    return surface_distances(pred, gt, spacing).average_surface_distance()
