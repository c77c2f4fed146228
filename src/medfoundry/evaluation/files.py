"""Evaluate prediction files against ground-truth files, or two folders matched by file name."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from medfoundry.errors import InputError
from medfoundry.evaluation.evaluator import SegmentationEvaluator
from medfoundry.evaluation.lesionwise import LesionWiseEvaluator
from medfoundry.io.dicom import DICOM_SUFFIXES
from medfoundry.io.formats import FILE_SUFFIXES
from medfoundry.io.image import MedicalImage
from medfoundry.io.paths import split_suffix

_MAX_LISTED = 5


def _suffix(path: Path) -> str:
    return split_suffix(path)[1]


def case_name(path: str | Path) -> str:
    """File name without its format suffix (``a.nii.gz`` -> ``a``)."""
    path = Path(path)
    return path.name if path.is_dir() else split_suffix(path)[0]


def _npz_without_spacing(path: Path) -> bool:
    try:
        with np.load(path, allow_pickle=False) as z:
            return "spacing" not in z.files
    except Exception:  # unreadable files are reported by read_mask
        return False


def read_pair(pred_path: str | Path, gt_path: str | Path, progress: bool = True) -> tuple[MedicalImage, MedicalImage]:
    """Read a prediction and its ground truth as label maps on one grid.

    Raises :class:`InputError` naming both files when shape, spacing, origin or direction differ. A
    prediction without geometry (PNG/TIFF, or an npz holding only ``segs`` as challenge outputs do) takes
    the ground truth's geometry when the shapes match. A DICOM SEG ground truth (which stores only its
    non-empty frames) is placed on the prediction's grid.
    """
    from medfoundry.io import read_mask
    from medfoundry.io.dicom_seg import is_dicom_seg

    pred_path, gt_path = Path(pred_path), Path(gt_path)
    if is_dicom_seg(gt_path):
        pred = read_mask(pred_path, progress=progress)
        return pred, read_mask(gt_path, reference=pred)
    gt = read_mask(gt_path, progress=progress)
    if _suffix(pred_path) == ".npz" and pred_path.is_file() and _npz_without_spacing(pred_path):
        raw = read_mask(pred_path, progress=progress)
        if raw.spatial_shape != gt.spatial_shape:
            raise InputError(
                pred_path,
                f"not on the ground-truth grid ({gt_path}): shape {raw.spatial_shape} vs {gt.spatial_shape}",
            )
        pred = MedicalImage(raw.array, gt.spacing, gt.origin, gt.direction, gt.modality, str(pred_path))
    else:
        pred = read_mask(pred_path, reference=gt, progress=progress)
    return pred, gt


def _challenge_spacing(gt: MedicalImage, gt_path: Path) -> tuple[float, ...]:
    """The spacing the challenge script applies to the array axes: an npz ``spacing`` field as stored."""
    if _suffix(gt_path) == ".npz":
        return tuple(gt.spacing)  # (x, y, z) as the file stores it, applied to (z, y, x) axes
    return gt.spacing_zyx


def match_folders(pred_dir: str | Path, gt_dir: str | Path) -> list[tuple[Path, Path]]:
    """(prediction, ground truth) pairs of two folders, matched by file name; every GT needs a prediction."""
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    gts = sorted(
        p for p in gt_dir.iterdir() if not p.name.startswith(".") and (p.is_dir() or _suffix(p) in FILE_SUFFIXES)
    )
    if not gts:
        raise InputError(gt_dir, "no ground-truth images in this folder")
    missing = [p.name for p in gts if not (pred_dir / p.name).exists()]
    if missing:
        listed = ", ".join(missing[:_MAX_LISTED]) + (" ..." if len(missing) > _MAX_LISTED else "")
        raise InputError(
            pred_dir,
            f"no prediction for {len(missing)} of {len(gts)} ground-truth files in {gt_dir} "
            f"(matched by file name): {listed}",
        )
    return [(pred_dir / p.name, p) for p in gts]


def case_pairs(pred_path: str | Path, gt_path: str | Path) -> list[tuple[Path, Path]]:
    """(prediction, ground truth) file pairs: the two files, or two folders matched by file name."""
    pred_path, gt_path = Path(pred_path), Path(gt_path)
    for p in (pred_path, gt_path):
        if not p.exists():
            raise InputError(p, "no such file or folder")
    pred_is_dir = pred_path.is_dir() and not _is_series(pred_path)
    gt_is_dir = gt_path.is_dir() and not _is_series(gt_path)
    if pred_is_dir != gt_is_dir:
        raise InputError(
            pred_path,
            f"give two files or two folders; the prediction is a {'folder' if pred_is_dir else 'file'} "
            f"and the ground truth {gt_path} a {'folder' if gt_is_dir else 'file'}",
        )
    return match_folders(pred_path, gt_path) if gt_is_dir else [(pred_path, gt_path)]


def evaluate_files(
    pred_path: str | Path,
    gt_path: str | Path,
    tolerance_mm: float = 2.0,
    challenge_compat: bool = False,
    labels: Iterable[int] | None = None,
    progress: bool = True,
) -> SegmentationEvaluator:
    """Evaluate one prediction file against one ground-truth file, or two folders matched by file name.

    Returns the :class:`SegmentationEvaluator` holding the per-case rows; ``case`` is the file name
    without its suffix. Mismatched grids raise :class:`InputError` naming both files.
    """
    pairs = case_pairs(pred_path, gt_path)
    evaluator = SegmentationEvaluator(tolerance_mm, labels, challenge_compat)
    from tqdm import tqdm

    for pred_file, gt_file in tqdm(pairs, desc="evaluate", unit="case", disable=not progress or len(pairs) < 2):
        pred, gt = read_pair(pred_file, gt_file, progress)
        if challenge_compat:
            spacing = _challenge_spacing(gt, gt_file)
        else:
            spacing = gt.spacing_zyx
        evaluator.add(case_name(gt_file), pred.array, gt.array, spacing)
    return evaluator


def _is_series(path: Path) -> bool:
    """A folder of DICOM files (one image) rather than a folder of cases."""
    entries = [p for p in path.iterdir() if not p.name.startswith(".")]
    if not entries or any(p.is_dir() for p in entries):
        return False
    return all(_suffix(p) in DICOM_SUFFIXES or _suffix(p) not in FILE_SUFFIXES for p in entries)


def evaluate_lesion_files(pred_path: str | Path, gt_path: str | Path, progress: bool = True) -> LesionWiseEvaluator:
    """Lesion-wise metrics (:mod:`lesionwise`) of two files or two folders matched by file name."""
    from tqdm import tqdm

    pairs = case_pairs(pred_path, gt_path)
    evaluator = LesionWiseEvaluator()
    for pred_file, gt_file in tqdm(pairs, desc="evaluate", unit="case", disable=not progress or len(pairs) < 2):
        pred, gt = read_pair(pred_file, gt_file, progress)
        evaluator.add(case_name(gt_file), pred.array, gt.array, gt.spacing_zyx)
    return evaluator
