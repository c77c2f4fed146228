"""The whole-body PET lesion finder: SUV check -> threshold -> candidates -> classifier -> delineation -> report."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from medfoundry.errors import InputError, MedfoundryWarning
from medfoundry.evaluation.pet_quant import lesion_stats, patient_totals
from medfoundry.inference.lesions.candidates import Candidate, find_candidates
from medfoundry.inference.lesions.delineate import DELINEATIONS, delineate, merge_masks
from medfoundry.inference.lesions.detection_grid import DetectionGrid, detection_grid, to_native
from medfoundry.inference.lesions.features import candidate_features
from medfoundry.inference.lesions.grouping import select_lesions
from medfoundry.io import MedicalImage
from medfoundry.preprocessing.anatomy import Anatomy, find_anatomy
from medfoundry.preprocessing.pet_reference import ThresholdInfo, adaptive_threshold
from medfoundry.preprocessing.pet_suv import MIN_PLAUSIBLE_PET, to_suv  # noqa: F401 - re-exported here

DEFAULT_MIN_VOLUME_ML = 0.5
DEFAULT_DELINEATION = "both"


@dataclass
class LesionResult:
    """What :func:`find_lesions` found: the label map on the input grid and the per-lesion table."""

    suv: MedicalImage
    labels: MedicalImage
    lesions: list[dict]
    totals: dict
    threshold: ThresholdInfo
    candidates: list[Candidate] = field(default_factory=list)
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    accepted: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    symmetric: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    delineation: str = DEFAULT_DELINEATION
    seconds: dict = field(default_factory=dict)
    grid: DetectionGrid | None = None  # where candidates were found and classified (see detection_grid)
    anatomy: Anatomy | None = None  # body, midline, cranio-caudal coordinate and organs (preprocessing.anatomy)


def find_lesions(
    image: MedicalImage,
    *,
    threshold: float | None = None,
    min_volume_ml: float = DEFAULT_MIN_VOLUME_ML,
    delineation: str = DEFAULT_DELINEATION,
    predictor=None,
    classifier=None,
    suv_factor: float | None = None,
    symmetry: bool = True,
    progress: bool = True,
) -> LesionResult:
    """Find and delineate the lesions of a PET volume (see docs/lesions.md); zero lesions is a valid result.

    ``predictor`` is a LiteMedSAM predictor, a function returning one (called only when a candidate exists), or
    None for the default model; ``classifier`` defaults to the shipped one. ``symmetry=False`` keeps candidates
    with a mirror-image partner (see :mod:`medfoundry.inference.lesions.grouping`)."""
    if delineation not in DELINEATIONS:
        raise InputError(None, f"--delineation must be one of {', '.join(DELINEATIONS)}, got {delineation!r}")
    if threshold is not None and not (np.isfinite(threshold) and threshold > 0):
        raise InputError(None, f"--threshold must be a positive SUV, got {threshold}")
    if not (np.isfinite(min_volume_ml) and min_volume_ml >= 0):
        raise InputError(None, f"--min-volume must be >= 0 mL, got {min_volume_ml}")
    suv_image = to_suv(image, suv_factor)  # bad input fails before any progress bar is drawn
    seconds: dict[str, float] = {}
    stages = ["anatomy", "threshold", "candidates", "classifier", "delineation", "quantification"]
    bar = tqdm(total=len(stages), desc="lesions", unit="stage", disable=not progress)
    clock = time.perf_counter()

    def done(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[stage] = round(now - clock, 3)
        clock = now
        bar.set_postfix_str(stage)
        bar.update(1)

    try:
        suv, spacing_zyx = suv_image.array, suv_image.spacing_zyx
        anatomy = find_anatomy(suv, spacing_zyx, suv_image.direction)
        if line := anatomy.summary_line():
            warnings.warn(line, MedfoundryWarning, stacklevel=2)
        done("anatomy")
        grid = detection_grid(suv, spacing_zyx)  # finer scans: the classifier's training resolution
        info = adaptive_threshold(grid.suv, grid.spacing_zyx, threshold)
        done("threshold")
        candidates = find_candidates(grid.suv, grid.spacing_zyx, info.threshold, min_volume_ml)
        done("candidates")
        scores = np.zeros(len(candidates))
        if candidates:
            if predictor is None:
                from medfoundry.inference.predictor import LiteMedSAMPredictor

                predictor = LiteMedSAMPredictor()
            elif callable(predictor) and not hasattr(predictor, "embed"):  # a factory: build only when needed
                predictor = predictor()
            if classifier is None:
                from medfoundry.modeling.lesion_classifier import load_lesion_classifier

                classifier = load_lesion_classifier()
            features = candidate_features(candidates, grid.suv, grid.spacing_zyx, info.threshold, predictor)
            scores = classifier.score(features)
        cut = classifier.threshold if classifier is not None else 0.5
        direction = np.asarray(suv_image.direction or np.eye(3))
        keep, symmetric = select_lesions(candidates, scores, cut, grid.suv, grid.spacing_zyx, direction, symmetry)
        candidates = to_native(candidates, grid, suv, info.threshold)
        accepted = [(c, float(s)) for c, s, k in zip(candidates, scores, keep, strict=False) if k]
        done("classifier")
        masks = delineate([c for c, _ in accepted], suv_image, delineation, predictor, progress=progress)
        labels = merge_masks(masks, suv)
        done("delineation")
        lesions = lesion_stats(suv, labels, suv_image.spacing, suv_image.origin, suv_image.direction)
        for les in lesions:  # the score of the most confident candidate that overlaps each lesion
            inside = [s for c, s in accepted if (labels[c.bbox][c.mask] == les["id"]).any()]
            les["score"] = max(inside) if inside else float("nan")
        done("quantification")
    finally:
        bar.close()
    return LesionResult(
        suv=suv_image,
        labels=image.with_array(labels, modality="OTHER"),
        lesions=lesions,
        totals=patient_totals(lesions),
        threshold=info,
        candidates=candidates,
        scores=scores,
        accepted=keep,
        symmetric=symmetric,
        delineation=delineation,
        seconds=seconds,
        grid=grid,
        anatomy=anatomy,
    )
