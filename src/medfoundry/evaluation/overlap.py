"""Volume-overlap metrics of two binary masks: Dice similarity coefficient (DSC) and IoU (Jaccard).

Empty-mask rules (see docs/metrics.md): both masks empty -> 1.0 (the absence was predicted correctly);
exactly one empty -> 0.0.
"""

from __future__ import annotations

import numpy as np

from medfoundry.evaluation._checks import check_pair


def overlap_counts(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int, int]:
    """(intersection, prediction, ground-truth) voxel counts of two binary masks."""
    p, g = check_pair(pred, gt)
    return int(np.count_nonzero(p & g)), int(np.count_nonzero(p)), int(np.count_nonzero(g))


def dice_from_counts(inter: int, n_pred: int, n_gt: int) -> float:
    """DSC = 2|P&G| / (|P| + |G|); 1.0 when both are empty."""
    total = n_pred + n_gt
    return 1.0 if total == 0 else 2.0 * inter / total


def iou_from_counts(inter: int, n_pred: int, n_gt: int) -> float:
    """IoU = |P&G| / |P|G|; 1.0 when both are empty."""
    union = n_pred + n_gt - inter
    return 1.0 if union == 0 else inter / union


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice similarity coefficient of two binary masks (2D or 3D); 1.0 if both are empty."""
    return dice_from_counts(*overlap_counts(pred, gt))


def iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """Intersection over union (Jaccard index) of two binary masks; 1.0 if both are empty."""
    return iou_from_counts(*overlap_counts(pred, gt))
