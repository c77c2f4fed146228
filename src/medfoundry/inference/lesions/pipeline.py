"""The whole-body PET lesion finder: SUV check -> threshold -> candidates -> classifier -> delineation -> report."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from medfoundry.errors import InputError, MedfoundryWarning
from medfoundry.evaluation.pet_quant import lesion_stats, patient_totals
from medfoundry.inference.lesions.anatomy_features import anatomy_features, liver_suv_mean
from medfoundry.inference.lesions.assemble import Lesions, assemble_lesions
from medfoundry.inference.lesions.candidates import Candidate, find_candidates
from medfoundry.inference.lesions.delineate import DELINEATIONS, delineate, local_background
from medfoundry.inference.lesions.detection_grid import DetectionGrid, detection_grid, to_native
from medfoundry.inference.lesions.features import candidate_features, check_feature_names, uses_anatomy
from medfoundry.inference.lesions.grouping import select_lesions
from medfoundry.inference.lesions.organ_rule import organ_reasons
from medfoundry.io import MedicalImage
from medfoundry.preprocessing.anatomy import Anatomy, find_anatomy
from medfoundry.preprocessing.pet_reference import ThresholdInfo, adaptive_threshold
from medfoundry.preprocessing.pet_suv import MIN_PLAUSIBLE_PET, to_suv  # noqa: F401 - re-exported here

DEFAULT_MIN_VOLUME_ML = 0.5
DEFAULT_DELINEATION = "supported"


@dataclass
class Detection:
    """What the detection stages found: candidates (on the native grid), their scores, which were accepted
    (and which had a mirror partner), the classifier's cut, the threshold and the grid they ran on."""

    threshold: ThresholdInfo
    grid: DetectionGrid
    candidates: list[Candidate]
    scores: np.ndarray
    accepted: np.ndarray
    symmetric: np.ndarray
    cut: float
    reasons: list[str] = field(default_factory=list)


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
    reasons: list[str] = field(default_factory=list)  # per candidate: accepted, or why not (see candidate_reasons)
    organ_rule: bool = True


def resolve_predictor(predictor):
    """A LiteMedSAM predictor: ``predictor`` itself, one built from a factory, or the default one."""
    if predictor is None:
        from medfoundry.inference.predictor import LiteMedSAMPredictor

        return LiteMedSAMPredictor()
    if callable(predictor) and not hasattr(predictor, "embed"):  # a factory: build only when needed
        return predictor()
    return predictor


def uses_embedding(classifier) -> bool:
    """Whether ``classifier`` scores with the LiteMedSAM embedding (else only the handcrafted features)."""
    return any(name.startswith("embedding_") for name in classifier.feature_names)


def detect(
    suv_image: MedicalImage,
    *,
    threshold: float | None,
    min_volume_ml: float,
    predictor,
    classifier,
    symmetry: bool = True,
    anatomy: Anatomy | None = None,
    organ_rule: bool = True,
    done=lambda stage: None,
) -> tuple[Detection, object]:
    """Threshold, candidates, classifier and the organ rule (steps 1-4 of docs/lesions.md) on the detection grid;
    returns the detection and the predictor (built from a factory only when a candidate needs it). ``anatomy``
    (native grid) gives the liver when PERCIST's own liver search fails, the anatomy features of a v3 model and
    the organ rule (``organ_rule=False``: off); when not given it is found here, so that every caller (the
    finder, the benches) scores with the same anatomy. ``done(stage)`` is called after each stage."""
    suv, spacing_zyx = suv_image.array, suv_image.spacing_zyx
    if anatomy is None:
        anatomy = find_anatomy(suv, spacing_zyx, suv_image.direction)
    grid = detection_grid(suv, spacing_zyx)  # finer scans: the classifier's training resolution
    info = adaptive_threshold(grid.suv, grid.spacing_zyx, threshold, liver=liver_on_grid(grid, anatomy))
    done("threshold")
    candidates = find_candidates(grid.suv, grid.spacing_zyx, info.threshold, min_volume_ml)
    done("candidates")
    native = to_native(candidates, grid, suv, info.threshold)
    scores = np.zeros(len(candidates))
    if classifier is None:
        from medfoundry.modeling.lesion_classifier import load_lesion_classifier

        classifier = load_lesion_classifier()
    check_feature_names(classifier)
    if candidates:
        embedding = uses_embedding(classifier)
        if embedding:
            predictor = resolve_predictor(predictor)
        rows = None
        if uses_anatomy(classifier.feature_names):
            rows = anatomy_features(native, suv, anatomy, liver_suv_mean(suv, spacing_zyx, anatomy))
        features = candidate_features(
            candidates, grid.suv, grid.spacing_zyx, info.threshold, predictor if embedding else None,
            names=list(classifier.feature_names), anatomy_rows=rows,
        )  # fmt: skip
        scores = classifier.score(features)
    direction = np.asarray(suv_image.direction or np.eye(3))
    keep, symmetric = select_lesions(
        candidates, scores, classifier.threshold, grid.suv, grid.spacing_zyx, direction, symmetry
    )
    organs = organ_reasons(native, anatomy) if organ_rule else [None] * len(native)
    keep &= np.array([r is None for r in organs], dtype=bool)
    reasons = candidate_reasons(keep, symmetric, organs, scores, classifier.threshold)
    done("classifier")
    return Detection(info, grid, native, scores, keep, symmetric, classifier.threshold, reasons), predictor


def liver_on_grid(grid: DetectionGrid, anatomy: Anatomy | None) -> np.ndarray | None:
    """The anatomy's liver (native grid) on the detection grid, for the threshold when PERCIST's search fails."""
    liver = None if anatomy is None else anatomy.mask("liver")
    if liver is None or not grid.resampled:
        return liver
    from medfoundry.preprocessing.resample import resample_volume

    return resample_volume(liver.astype(np.float32), tuple(grid.suv.shape)) >= 0.5


def candidate_reasons(
    accepted: np.ndarray, symmetric: np.ndarray, organs: list[str | None], scores: np.ndarray, cut: float
) -> list[str]:
    """Per candidate, for ``lesions.json``: ``accepted``, or why not: ``physiological: <organ>`` (the organ rule),
    ``mirror partner`` (the symmetry rule), ``score below cut``."""
    out = []
    for ok, pair, organ, score in zip(accepted, symmetric, organs, scores, strict=True):
        if ok:
            out.append("accepted")
        elif organ is not None:
            out.append(organ)
        elif pair and score >= cut:
            out.append("mirror partner")
        else:
            out.append("score below cut")
    return out


def explained_as_physiological(reason: str) -> bool:
    """Whether a reason of :func:`candidate_reasons` calls the candidate physiological uptake (organ rule, mirror
    partner)."""
    return reason.startswith("physiological") or reason == "mirror partner"


def outline_lesions(
    suv_image: MedicalImage,
    detection: Detection,
    delineation: str,
    predictor,
    min_volume_ml: float,
    progress: bool = False,
) -> Lesions:
    """Delineation and lesion assembly (steps 5-6 of docs/lesions.md) of the accepted candidates."""
    index = np.flatnonzero(detection.accepted)
    if index.size == 0:
        return assemble_lesions([], [], [], 0.0, suv_image.array, suv_image.spacing_zyx, 0.0, 0.0, [])
    accepted = [detection.candidates[i] for i in index]
    if delineation != "threshold":
        predictor = resolve_predictor(predictor)
    suv, spacing_zyx, level = suv_image.array, suv_image.spacing_zyx, detection.threshold.threshold
    masks = delineate(accepted, suv_image, delineation, predictor, progress=progress, threshold=level)
    backgrounds = []
    for cand, mask in zip(accepted, masks, strict=True):
        outline = mask.copy()
        outline[cand.bbox] |= cand.mask
        backgrounds.append(local_background(outline, suv, spacing_zyx))
    lesions = assemble_lesions(
        masks, accepted, detection.scores[index].tolist(), detection.cut, suv, spacing_zyx, level, min_volume_ml,
        backgrounds,
    )  # fmt: skip
    lesions.members = [[int(index[i]) for i in m] for m in lesions.members]  # indices into detection.candidates
    return lesions


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
    organ_rule: bool = True,
    progress: bool = True,
) -> LesionResult:
    """Find and delineate the lesions of a PET volume (see docs/lesions.md); zero lesions is a valid result.

        ``predictor`` is a LiteMedSAM predictor, a function returning one (called only when a candidate exists), or
        None for the default model; ``classifier`` defaults to the shipped one. ``symmetry=False`` keeps candidates
        with a mirror-image partner (see :mod:`medfoundry.inference.lesions.grouping`); ``organ_rule=False`` keeps
    candidates lying mostly in the brain, urinary tract or heart (:mod:`medfoundry.inference.lesions.organ_rule`)."""
    if delineation not in DELINEATIONS:
        raise InputError(None, f"`delineation` must be one of {', '.join(DELINEATIONS)}, got {delineation!r}")
    if threshold is not None and not (np.isfinite(threshold) and threshold > 0):
        raise InputError(None, f"`threshold` must be a positive SUV, got {threshold}")
    if not (np.isfinite(min_volume_ml) and min_volume_ml >= 0):
        raise InputError(None, f"`min_volume_ml` must be >= 0 mL, got {min_volume_ml}")
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
        anatomy = find_anatomy(suv_image.array, suv_image.spacing_zyx, suv_image.direction)
        if line := anatomy.summary_line():
            warnings.warn(line, MedfoundryWarning, stacklevel=2)
        done("anatomy")
        detection, predictor = detect(
            suv_image,
            threshold=threshold,
            min_volume_ml=min_volume_ml,
            predictor=predictor,
            classifier=classifier,
            symmetry=symmetry,
            anatomy=anatomy,
            organ_rule=organ_rule,
            done=done,
        )
        found = outline_lesions(suv_image, detection, delineation, predictor, min_volume_ml, progress)
        done("delineation")
        suv = suv_image.array
        lesions = lesion_stats(suv, found.labels, suv_image.spacing, suv_image.origin, suv_image.direction)
        for les, score, members in zip(lesions, found.scores, found.members, strict=True):
            les["score"] = score
            les["candidates"] = [detection.candidates[i].index for i in members]
        done("quantification")
    finally:
        bar.close()
    return LesionResult(
        suv=suv_image,
        labels=image.with_array(found.labels, modality="OTHER"),
        lesions=lesions,
        totals=patient_totals(lesions),
        threshold=detection.threshold,
        candidates=detection.candidates,
        scores=detection.scores,
        accepted=detection.accepted,
        symmetric=detection.symmetric,
        delineation=delineation,
        seconds=seconds,
        grid=detection.grid,
        anatomy=anatomy,
        reasons=detection.reasons,
        organ_rule=organ_rule,
    )
