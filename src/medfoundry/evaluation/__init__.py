"""Segmentation metrics (DSC, IoU, NSD, HD95, autoPET FPV/FNV, lesion-wise), per-class/per-case tables and the
MedSAM-on-laptop 2024 challenge scoring. Spacing is always in mm, in array axis order. See docs/metrics.md."""

from medfoundry.evaluation.evaluator import (
    COLUMNS,
    METRICS,
    SegmentationEvaluator,
    challenge_case_metrics,
    evaluate_case,
)
from medfoundry.evaluation.files import evaluate_files, evaluate_lesion_files, match_folders, read_pair
from medfoundry.evaluation.lesions import LesionErrors, lesion_errors, lesion_fp_fn_volume
from medfoundry.evaluation.lesionwise import LesionRow, LesionWiseEvaluator, LesionWiseResult, lesion_wise
from medfoundry.evaluation.overlap import dice, iou
from medfoundry.evaluation.surface import SurfaceDistances, assd, hausdorff, hd95, nsd, surface_distances

__all__ = [
    "COLUMNS",
    "METRICS",
    "LesionErrors",
    "LesionRow",
    "LesionWiseEvaluator",
    "LesionWiseResult",
    "SegmentationEvaluator",
    "SurfaceDistances",
    "assd",
    "challenge_case_metrics",
    "dice",
    "evaluate_case",
    "evaluate_files",
    "evaluate_lesion_files",
    "hausdorff",
    "hd95",
    "iou",
    "lesion_errors",
    "lesion_fp_fn_volume",
    "lesion_wise",
    "match_folders",
    "nsd",
    "read_pair",
    "surface_distances",
]
