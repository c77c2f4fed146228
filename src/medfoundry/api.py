"""The Python API with the same verbs as the CLI: ``segment``, ``segment_npz``, ``evaluate``, ``demo``.

Each function reads files with :mod:`medfoundry.io`, runs the model, and writes results with the input's geometry,
refusing to replace existing outputs unless ``overwrite=True``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from medfoundry.errors import InputError
from medfoundry.inference.predictor import LiteMedSAMPredictor
from medfoundry.inference.prompts import ObjectPrompt
from medfoundry.inference.segment import segment_array
from medfoundry.io import MedicalImage, check_writable, read_image, read_npz_case, write_mask, write_npz_segs
from medfoundry.preprocessing.intensity import IntensityWindow, normalize_intensity


@dataclass
class SegmentResult:
    """A label map on the input grid plus the normalised image it was computed from (for pictures)."""

    labels: MedicalImage
    normalized: np.ndarray


def make_predictor(
    weights: str | Path | None = None, backend: str = "fast", adapter: str | Path | None = None
) -> LiteMedSAMPredictor:
    """A LiteMedSAM predictor on the real (or given) weights, optionally with a fine-tuned adapter."""
    if adapter is not None:
        from medfoundry.modeling.adapters.io import load_adapted_model  # noqa: PLC0415 - optional feature

        return LiteMedSAMPredictor(model=load_adapted_model(adapter, weights=weights), backend=backend)
    return LiteMedSAMPredictor(weights=None if weights is None else str(weights), backend=backend)


def segment_image(
    image: MedicalImage,
    objects: list[ObjectPrompt],
    predictor: LiteMedSAMPredictor | None = None,
    window: IntensityWindow | None = None,
    threshold: float = 0.5,
    progress: bool = True,
) -> SegmentResult:
    """Segment an image already in memory; object i becomes label i."""
    if image.spatial_ndim not in (2, 3):
        raise InputError(image.path, f"expected a 2D or 3D image, got shape {image.array.shape}")
    predictor = predictor or make_predictor()
    normalized = normalize_intensity(image, window)
    labels = segment_array(
        predictor,
        normalized,
        objects,
        is_3d=image.spatial_ndim == 3,
        path=image.path,
        threshold=threshold,
        progress=progress,
    )
    return SegmentResult(image.with_array(labels, modality="OTHER"), normalized)


def segment(
    image_path: str | Path,
    objects: list[ObjectPrompt],
    out: str | Path,
    *,
    overlay: str | Path | None = None,
    modality: str | None = None,
    window: IntensityWindow | None = None,
    predictor: LiteMedSAMPredictor | None = None,
    threshold: float = 0.5,
    overwrite: bool = False,
    progress: bool = True,
) -> MedicalImage:
    """Segment the image file ``image_path`` from prompts and write the label map to ``out`` (same geometry)."""
    check_writable(out, overwrite)
    if overlay is not None:
        check_writable(overlay, overwrite)
    image = read_image(image_path, modality=modality)
    result = segment_image(image, objects, predictor, window, threshold, progress)
    write_mask(result.labels, out, reference=image, overwrite=overwrite)
    if overlay is not None:
        from medfoundry.evaluation.overlay import save_overlay

        save_overlay(
            result.normalized,
            result.labels.array,
            overlay,
            is_3d=image.spatial_ndim == 3,
            title=Path(image_path).name,
            overwrite=overwrite,
        )
    return result.labels


def boxes_from_labels(labels: np.ndarray) -> np.ndarray:
    """One bounding box per label of a ground-truth map: (N, 4) in 2D, (N, 6) ``[x0, y0, z0, x1, y1, z1]`` in 3D."""
    boxes = []
    for value in (v for v in np.unique(labels) if v):
        idx = np.nonzero(labels == value)
        lo = [int(i.min()) for i in idx][::-1]
        hi = [int(i.max()) for i in idx][::-1]
        boxes.append(lo + hi)
    return np.asarray(boxes, dtype=np.float32).reshape(-1, 2 * labels.ndim)


def segment_npz(
    in_dir: str | Path,
    out_dir: str | Path,
    *,
    predictor: LiteMedSAMPredictor | None = None,
    boxes_from_gts: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> list[Path]:
    """Segment every MedSAM challenge ``.npz`` in ``in_dir`` (``imgs`` + ``boxes``) into ``out_dir``/same name
    with key ``segs``. ``boxes_from_gts`` takes one box per label of ``gts`` when a file has no ``boxes``."""
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    if not in_dir.is_dir():
        raise InputError(in_dir, "input folder not found")
    files = sorted(in_dir.glob("*.npz"))
    if not files:
        raise InputError(in_dir, "no .npz files in the input folder")
    targets = [out_dir / f.name for f in files]
    existing = [t for t in targets if t.exists()]
    if existing and not overwrite:
        raise InputError(existing[0], f"output exists ({len(existing)} of {len(targets)}); pass --overwrite")
    predictor = predictor or make_predictor()
    written = []
    for src, dst in tqdm(list(zip(files, targets, strict=True)), desc="cases", unit="case", disable=not progress):
        case = read_npz_case(src)
        boxes = case.boxes
        if boxes is None:
            if not (boxes_from_gts and case.gts is not None):
                raise InputError(src, "no 'boxes' key; add boxes or pass --boxes-from-gts for files with 'gts'")
            boxes = boxes_from_labels(case.gts)
        objects = [ObjectPrompt(box=b) for b in np.asarray(boxes, dtype=np.float32)]
        result = segment_image(case.to_image(), objects, predictor, progress=False)
        written.append(write_npz_segs(dst, result.labels.array, overwrite=overwrite))
    return written


def evaluate(
    pred: str | Path,
    gt: str | Path,
    out: str | Path,
    *,
    tolerance_mm: float = 2.0,
    challenge_compat: bool = False,
    lesion_wise: bool = False,
    overwrite: bool = False,
    progress: bool = True,
):
    """Score predictions against ground truth (files or folders) and write the per-case CSV to ``out``.

    ``lesion_wise=True`` scores lesions instead (:mod:`medfoundry.evaluation.lesionwise`): ``out`` gets one row
    per case, ``<out stem>_lesions.csv`` one row per reference lesion; returns the ``LesionWiseEvaluator``.
    """
    if lesion_wise:
        from medfoundry.evaluation import evaluate_lesion_files
        from medfoundry.evaluation.lesionwise import lesion_table_path

        out = Path(out)
        lesions_csv = lesion_table_path(out)
        check_writable(out, overwrite)
        check_writable(lesions_csv, overwrite)
        evaluator = evaluate_lesion_files(pred, gt, progress=progress)
        evaluator.write_csv(out, overwrite=overwrite)
        evaluator.write_lesion_csv(lesions_csv, overwrite=overwrite)
        return evaluator
    from medfoundry.evaluation import evaluate_files

    check_writable(out, overwrite)
    evaluator = evaluate_files(
        pred, gt, tolerance_mm=tolerance_mm, challenge_compat=challenge_compat, progress=progress
    )
    evaluator.write_csv(out, overwrite=overwrite)
    return evaluator


def demo(out_dir: str | Path = "medfoundry-demo-output", *, overwrite: bool = False, backend: str = "fast"):
    """Run the bundled demo (see :mod:`medfoundry.demo`)."""
    from medfoundry.demo import run_demo

    return run_demo(out_dir, overwrite=overwrite, backend=backend)


def lesions(
    input: str | Path,
    out_dir: str | Path,
    *,
    threshold: float | None = None,
    min_volume: float = 0.5,
    adapter: str | Path | None = None,
    delineation: str = "threshold",
    suv_factor: float | None = None,
    overwrite: bool = False,
    progress: bool = True,
    backend: str = "fast",
    weights: str | Path | None = None,
):
    """Find, delineate and quantify the lesions of a whole-body PET (DICOM folder, SUV NIfTI, or Bq/mL NIfTI with
    ``suv_factor``) and write the outputs of docs/lesions.md to ``out_dir``; returns the ``LesionResult``."""
    from medfoundry.inference.lesions.pipeline import find_lesions
    from medfoundry.inference.lesions.report import check_out_dir, write_lesion_outputs

    check_out_dir(out_dir, overwrite)
    path = Path(input)
    image = read_image(path, suv=suv_factor is None) if path.is_dir() else read_image(path)
    if adapter is not None:  # a corrupt adapter fails before any work
        predictor = make_predictor(weights=weights, backend=backend, adapter=adapter)
    else:
        predictor = lambda: make_predictor(weights=weights, backend=backend)  # noqa: E731 - built only if needed
    result = find_lesions(
        image,
        threshold=threshold,
        min_volume_ml=min_volume,
        delineation=delineation,
        predictor=predictor,
        suv_factor=suv_factor,
        progress=progress,
    )
    write_lesion_outputs(
        result,
        out_dir,
        source=path,
        dicom_series=path if path.is_dir() else None,
        overwrite=overwrite,
        extra={"min_volume_ml": min_volume, "adapter": None if adapter is None else str(adapter)},
    )
    return result
