"""Lesion-level errors of the autoPET challenge: false-positive and false-negative volume in millilitres.

FPV: total volume of the predicted connected components that do not overlap the ground truth at all.
FNV: total volume of the ground-truth connected components that do not overlap the prediction at all.
Components use 18-connectivity in 3D (faces and edges, as autoPET's ``val_script.py`` with ``cc3d``) and
8-connectivity in 2D (a 2D image is one slice, where the 18-neighbourhood reduces to the 8-neighbourhood).
Both are always defined: 0.0 when the respective mask is empty.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import cc3d
import numpy as np

from medfoundry.evaluation._checks import check_pair, check_spacing


@dataclass(frozen=True)
class LesionErrors:
    """Missed and spurious components of one binary mask pair, with their volumes in ml."""

    fpv_ml: float
    fnv_ml: float
    n_pred_components: int
    n_gt_components: int
    n_false_positive: int
    n_false_negative: int

    def as_dict(self) -> dict[str, float | int]:
        """The fields as a plain dict (for tables)."""
        return asdict(self)


def components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected components of a binary 2D/3D mask as autoPET counts them (18-connectivity in 3D, 8 in 2D).

    Returns the component label array (0 background, 1..n numbered in the (z, y, x) raster order of each
    component's first voxel) and n.
    """
    connectivity = 18 if mask.ndim == 3 else 8
    labels, n = cc3d.connected_components(np.ascontiguousarray(mask), connectivity=connectivity, return_N=True)
    return labels, int(n)


def _unmatched(mask: np.ndarray, other: np.ndarray) -> tuple[int, int, int]:
    """(components of ``mask``, those not touching ``other``, voxels in those)."""
    labels, n = components(mask)
    if n == 0:
        return 0, 0, 0
    hit = np.zeros(n + 1, dtype=bool)
    hit[np.unique(labels[other & mask])] = True
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    missed = ~hit
    missed[0] = False
    return int(n), int(missed.sum()), int(sizes[missed].sum())


def lesion_errors(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float] | float | None = None) -> LesionErrors:
    """autoPET component-wise errors of binary ``pred`` vs ``gt``; spacing (mm) in array axis order."""
    p, g = check_pair(pred, gt)
    sp = check_spacing(spacing, p.ndim)
    voxel_ml = float(np.prod(sp)) / 1000.0
    n_pred, n_fp, fp_vox = _unmatched(p, g)
    n_gt, n_fn, fn_vox = _unmatched(g, p)
    return LesionErrors(fp_vox * voxel_ml, fn_vox * voxel_ml, n_pred, n_gt, n_fp, n_fn)


def lesion_fp_fn_volume(
    pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float] | float | None = None
) -> tuple[float, float]:
    """(FPV, FNV) in ml as defined by autoPET; spacing (mm) in array axis order (None: 1 mm)."""
    err = lesion_errors(pred, gt, spacing)
    return err.fpv_ml, err.fnv_ml
