"""The Python API: the front door of every verb of the CLI (docs/api.md has the table).

``segment``, ``segment_many``, ``segment_npz``, ``evaluate``, ``lesions``, ``lesions_manifest`` and
``lesions_train`` live here; ``classify_*``, ``finetune``, ``nnunet_*``, ``pool``, ``pretrain``, ``transfer``
and ``synthesize`` in their modules (:mod:`medfoundry.api.classify`, ...), each with its options dataclass, and are
re-exported here. Each function reads files with :mod:`medfoundry.io`, runs the model, and writes results with the
input's geometry, refusing to replace existing outputs unless ``overwrite=True``. The batch verbs run their rows
through :func:`medfoundry.api.batch.run_rows`, locally or on Ray actors (``ray=``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from medfoundry.api.batch import run_rows, scan_folder
from medfoundry.api.classify import (  # noqa: F401 - the classify verb's front door
    ClassifyBuildOptions,
    ClassifyCompareOptions,
    ClassifyEmbedOptions,
    ClassifyPredictOptions,
    classify_build,
    classify_compare,
    classify_embed,
    classify_predict,
    classify_predict_many,
)
from medfoundry.api.common import (
    ModelFields,
    WindowFields,
    make_predictor,
    resolve_options,
    set_threads,
    warn_if_no_contrast,
)
from medfoundry.api.finetune import FinetuneOptions, finetune  # noqa: F401
from medfoundry.api.nnunet import (  # noqa: F401 - the nnunet verb's steps
    NnunetEvaluateOptions,
    NnunetPlanOptions,
    NnunetPredictOptions,
    NnunetPrepareOptions,
    NnunetTrainOptions,
    nnunet_evaluate,
    nnunet_plan,
    nnunet_predict,
    nnunet_prepare,
    nnunet_train,
)
from medfoundry.api.pool import PoolOptions, pool, pool_check  # noqa: F401
from medfoundry.api.synthesize import SynthesizeOptions, synthesize  # noqa: F401
from medfoundry.api.tsfm import (  # noqa: F401 - pretrain and transfer
    PretrainOptions,
    TransferOptions,
    TransferPredictOptions,
    pretrain,
    transfer,
    transfer_predict,
)
from medfoundry.api.view import ViewInputs, ViewOptions, view_inputs  # noqa: F401 - what `view` opens
from medfoundry.errors import BatchFailures, InputError, MedfoundryError
from medfoundry.inference.predictor import LiteMedSAMPredictor
from medfoundry.inference.prompts import ObjectPrompt
from medfoundry.inference.segment import check_prompts, segment_array
from medfoundry.io import (
    MedicalImage,
    check_writable,
    read_image,
    read_image_for_model,
    read_npz_case,
    write_mask,
    write_npz_segs,
)
from medfoundry.io.atomic import check_outputs, remove_temporaries_of
from medfoundry.io.numbers import check_number
from medfoundry.preprocessing.boxes import label_boxes
from medfoundry.preprocessing.intensity import IntensityWindow, normalize_intensity


@dataclass
class SegmentResult:
    """A label map on the input grid plus the normalised image it was computed from (for pictures)."""

    labels: MedicalImage
    normalized: np.ndarray


PredictorArg = LiteMedSAMPredictor | Callable[[], LiteMedSAMPredictor] | None


def _check_probability(threshold: float) -> float:
    """The mask threshold: a probability in (0, 1), checked before any work."""
    return check_number(threshold, "--threshold", lo=0.0, hi=1.0, lo_open=True, hi_open=True)


def _resolve_predictor(predictor: PredictorArg) -> LiteMedSAMPredictor:
    """The predictor itself, one built now from a factory (so inputs and outputs are checked before the model
    loads), or the default one."""
    if predictor is None:
        return make_predictor()
    if not callable(predictor) or isinstance(predictor, LiteMedSAMPredictor):
        return predictor
    return predictor()


def segment_image(
    image: MedicalImage,
    objects: list[ObjectPrompt],
    predictor: LiteMedSAMPredictor | None = None,
    window: IntensityWindow | None = None,
    threshold: float = 0.5,
    progress: bool = True,
    slice_step: int = 1,
) -> SegmentResult:
    """Segment an image already in memory; object i becomes label i (``slice_step``: see ``segment_array``)."""
    if image.spatial_ndim not in (2, 3):
        raise InputError(image.path, f"expected a 2D or 3D image, got shape {image.array.shape}")
    threshold = _check_probability(threshold)
    check_prompts(objects, image.array.shape, image.spatial_ndim == 3, image.path)  # before the model loads
    warn_if_no_contrast(image)
    normalized = normalize_intensity(image, window)
    predictor = _resolve_predictor(predictor)
    labels = segment_array(
        predictor,
        normalized,
        objects,
        is_3d=image.spatial_ndim == 3,
        path=image.path,
        threshold=threshold,
        progress=progress,
        slice_step=slice_step,
    )
    return SegmentResult(image.with_array(labels, modality="OTHER"), normalized)


read_for_segmentation = read_image_for_model  # the modality rule of training folders (io.readers)


@dataclass
class SegmentOptions(WindowFields, ModelFields):
    """``segment`` and ``segment --manifest``: the intensity options (:class:`~medfoundry.api.common.WindowFields`),
    the model (:class:`~medfoundry.api.common.ModelFields`: ``weights`` / ``adapter`` / ``backend`` / ``threads``,
    or a ``predictor`` or a factory of one), the mask ``threshold``, ``slice_step`` (see ``segment_array``), an
    ``overlay`` PNG (one image; a manifest gives overlays in its 'overlay' column), ``overwrite`` and ``progress``."""

    overlay: str | Path | None = None
    threshold: float = 0.5
    slice_step: int = 1
    overwrite: bool = False
    progress: bool = True
    predictor: PredictorArg = None

    def for_manifest(self) -> SegmentOptions:
        """These options, checked for a manifest run (its overlays come from the rows)."""
        if self.overlay is not None:
            raise InputError("--overlay", "with --manifest, give overlays in an 'overlay' column")
        return self


def segment(
    image_path: str | Path,
    objects: list[ObjectPrompt],
    out: str | Path,
    options: SegmentOptions | None = None,
    **fields,
) -> MedicalImage:
    """Segment the image file ``image_path`` from prompts and write the label map to ``out`` (same geometry).

    Every output path is checked before any work (distinct, writable place, not existing unless ``overwrite``).
    """
    o = resolve_options(SegmentOptions, options, fields)
    _check_probability(o.threshold)
    check_outputs(out, o.overlay, overwrite=o.overwrite)
    image = read_for_segmentation(image_path, o.modality, progress=o.progress)
    result = segment_image(
        image, objects, o.predictor_factory(), o.intensity_window(), o.threshold, o.progress, o.slice_step
    )
    write_mask(result.labels, out, reference=image, overwrite=o.overwrite)
    if o.overlay is not None:
        from medfoundry.evaluation.overlay import save_overlay

        save_overlay(
            result.normalized,
            result.labels.array,
            o.overlay,
            is_3d=image.spatial_ndim == 3,
            title=Path(image_path).name,
            overwrite=o.overwrite,
        )
    return result.labels


@dataclass
class ManyResult:
    """What :func:`segment_many` did: outputs written, rows skipped (output already there), rows that failed
    (name, why), the seconds to the first model-ready result and per written scan, where those seconds went
    (``phases``: read / segment / write per written scan) and, on Ray, the rows redone after a worker died."""

    written: list[Path]
    skipped: list[Path]
    failed: list[tuple[str, str]]
    seconds: list[float]
    model_seconds: float = 0.0
    phases: list[dict] = field(default_factory=list)
    retried: list[str] = field(default_factory=list)


def segment_row(
    row,
    predictor: PredictorArg = None,
    *,
    modality: str | None = None,
    window: IntensityWindow | None = None,
    threshold: float = 0.5,
    overwrite: bool = False,
    slice_step: int = 1,
    progress: bool = False,
) -> dict[str, float]:
    """Segment one manifest row (:class:`~medfoundry.inference.manifest.ManifestRow`) and write its outputs, the
    overlay first and the mask last (both atomic: an existing mask means a finished row; an overlay without its mask
    is from an unfinished row and is written again; ``progress``: the DICOM reading bar). Returns the seconds spent
    reading, segmenting (encoder + decoder) and writing; a row that cannot be done raises
    :class:`~medfoundry.errors.MedfoundryError`. The one step of :func:`segment_many`, locally and on Ray workers."""
    import time

    t0 = time.perf_counter()
    check_outputs(row.out, row.overlay, overwrite=True)  # the mask is not there (or overwrite): redo the row
    image = read_for_segmentation(row.image, modality, progress=progress)
    t1 = time.perf_counter()
    res = segment_image(image, row.objects, predictor, window, threshold, progress=False, slice_step=slice_step)
    t2 = time.perf_counter()
    if row.overlay is not None:  # first: the mask is the row's last file
        from medfoundry.evaluation.overlay import save_overlay

        save_overlay(
            res.normalized,
            res.labels.array,
            row.overlay,
            is_3d=image.spatial_ndim == 3,
            title=row.image.name,
            overwrite=True,  # an overlay without its mask is from an unfinished row
        )
    write_mask(res.labels, row.out, reference=image, overwrite=overwrite)
    return {"read": t1 - t0, "segment": t2 - t1, "write": time.perf_counter() - t2}


def segment_many(rows: list, options: SegmentOptions | None = None, **fields) -> ManyResult:
    """Segment every row of a manifest (:func:`medfoundry.inference.manifest.read_manifest`) with one model.

    The model is built once, at the first usable row. A row whose output exists is skipped unless ``overwrite``
    (outputs are written atomically, the overlay before the mask, so an existing mask means a finished row: an
    interrupted run resumes where it stopped, and an overlay without its mask is from an unfinished row and is
    written again). A bad row is recorded and the run goes on; at the end
    :class:`~medfoundry.errors.BatchFailures` lists the failed rows if there are any.

    :func:`medfoundry.api.ray_batch.segment_many_ray` does the same on Ray actors (same outputs, resume rule and
    failure report); this function never imports Ray. The options are :class:`SegmentOptions` (no ``overlay``).
    """
    o = resolve_options(SegmentOptions, options, fields).for_manifest()
    _check_probability(o.threshold)
    import time

    result = ManyResult([], [], [], [])
    model: list[LiteMedSAMPredictor] = []

    def once() -> LiteMedSAMPredictor:
        if not model:
            start = time.perf_counter()
            model.append(_resolve_predictor(o.predictor_factory()))
            result.model_seconds = time.perf_counter() - start
        return model[0]

    bar = tqdm(rows, desc="scans", unit="scan", disable=not o.progress)
    for row in bar:
        if row.error is not None:
            result.failed.append((row.name, row.error))
            continue
        if row.out.exists() and not o.overwrite:
            result.skipped.append(row.out)
            continue
        start = time.perf_counter()
        try:
            phases = segment_row(
                row,
                once,
                modality=o.modality,
                window=o.intensity_window(),
                threshold=o.threshold,
                overwrite=o.overwrite,
                slice_step=o.slice_step,
                progress=o.progress,
            )
        except MedfoundryError as exc:
            result.failed.append((row.name, str(exc)))
            continue
        result.written.append(row.out)
        result.seconds.append(time.perf_counter() - start)
        result.phases.append(phases)
    return raise_if_failed(result)


def raise_if_failed(result: ManyResult) -> ManyResult:
    """``result``, or :class:`~medfoundry.errors.BatchFailures` (carrying it as ``.result``) when a row failed."""
    if result.failed:
        error = BatchFailures("manifest", result.written, result.failed)
        error.result = result
        raise error
    return result


def boxes_from_labels(labels: np.ndarray) -> np.ndarray:
    """One bounding box per label of a ground-truth map: (N, 4) in 2D, (N, 6) ``[x0, y0, z0, x1, y1, z1]`` in 3D."""
    return label_boxes(labels)


@dataclass
class SegmentNpzOptions(ModelFields):
    """``segment-npz``: the model (:class:`~medfoundry.api.common.ModelFields`), ``boxes_from_gts`` (one box per
    label of ``gts`` for files without ``boxes``), ``stop_on_error`` (the first bad file stops the run; default:
    it is skipped and reported at the end), ``overwrite`` and ``progress``."""

    boxes_from_gts: bool = False
    stop_on_error: bool = False
    overwrite: bool = False
    progress: bool = True
    predictor: PredictorArg = None


def segment_npz(
    in_dir: str | Path,
    out_dir: str | Path,
    options: SegmentNpzOptions | None = None,
    **fields,
) -> list[Path]:
    """Segment every MedSAM challenge ``.npz`` in ``in_dir`` (``imgs`` + ``boxes``) into ``out_dir``/same name
    with key ``segs``. ``boxes_from_gts`` takes one box per label of ``gts`` when a file has no ``boxes``.

    A file that cannot be used is skipped (the default) and the run goes on; at the end
    :class:`~medfoundry.errors.BatchFailures` lists the files done and the ones that failed. With
    ``stop_on_error`` the first bad file stops the run (the files written before it stay).
    """
    o = resolve_options(SegmentNpzOptions, options, fields)
    keep_going = not o.stop_on_error
    predictor, boxes_from_gts, overwrite = o.predictor_factory(), o.boxes_from_gts, o.overwrite
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    if not in_dir.is_dir():
        raise InputError(in_dir, "input folder not found" if not in_dir.exists() else "is not a folder")
    check_writable(out_dir, overwrite=True, folder=True)
    files = sorted(in_dir.glob("*.npz"))
    if not files:
        raise InputError(in_dir, "no .npz files in the input folder")
    targets = [out_dir / f.name for f in files]
    existing = [t for t in targets if t.exists()]
    if existing and not overwrite:
        raise InputError(existing[0], f"output exists ({len(existing)} of {len(targets)}); pass --overwrite")
    written: list[Path] = []
    failed: list[tuple[str, str]] = []
    for src, dst in tqdm(list(zip(files, targets, strict=True)), desc="cases", unit="case", disable=not o.progress):
        try:
            case = read_npz_case(src)
            boxes = case.boxes
            if boxes is None:
                if not (boxes_from_gts and case.gts is not None):
                    raise InputError(src, "no 'boxes' key; add boxes or pass --boxes-from-gts for files with 'gts'")
                boxes = boxes_from_labels(case.gts)
            objects = [ObjectPrompt(box=b) for b in np.asarray(boxes, dtype=np.float32)]
            image = case.to_image()
            check_prompts(objects, image.array.shape, image.spatial_ndim == 3, str(src))
            predictor = _resolve_predictor(predictor)  # loaded at the first usable file
            result = segment_image(image, objects, predictor, progress=False)
            written.append(write_npz_segs(dst, result.labels.array, overwrite=overwrite))
        except MedfoundryError as exc:
            if not keep_going:
                raise
            failed.append((src.name, getattr(exc, "problem", None) or str(exc)))
    if failed:
        raise BatchFailures(in_dir, written, failed)
    return written


@dataclass
class EvaluateOptions:
    """``evaluate``: the NSD tolerance ``tolerance_mm`` (``--tolerance``), ``challenge_compat`` (MedSAM-on-laptop
    2024 scoring), the ``labels`` to score, a ``summary`` CSV and a ``plot`` PNG, ``lesion_wise`` scoring,
    ``overwrite``, ``progress``."""

    tolerance_mm: float = 2.0
    challenge_compat: bool = False
    labels: list[int] | None = None
    summary: str | Path | None = None
    plot: str | Path | None = None
    lesion_wise: bool = False
    overwrite: bool = False
    progress: bool = True


def evaluate(pred: str | Path, gt: str | Path, out: str | Path, options: EvaluateOptions | None = None, **fields):
    """Score predictions against ground truth (files or folders) and write the per-case CSV to ``out`` (and the
    per-class means to ``summary``, the distributions to the PNG ``plot``). Every output is checked first.

    ``lesion_wise=True`` scores lesions instead (:mod:`medfoundry.evaluation.lesionwise`): ``out`` gets one row
    per case, ``<out stem>_lesions.csv`` one row per reference lesion, ``summary`` the means over cases; returns
    the ``LesionWiseEvaluator``.
    """
    o = resolve_options(EvaluateOptions, options, fields)
    labels, summary, plot, overwrite, progress = o.labels, o.summary, o.plot, o.overwrite, o.progress
    if o.lesion_wise:
        from medfoundry.evaluation import evaluate_lesion_files
        from medfoundry.evaluation.lesionwise import lesion_table_path

        out = Path(out)
        lesions_csv = lesion_table_path(out)
        for option, given in (("--labels", labels), ("--challenge-compat", o.challenge_compat), ("--plot", plot)):
            if given:
                raise InputError(None, f"{option} does not apply to --lesion-wise")
        check_outputs(out, lesions_csv, summary, overwrite=overwrite)
        evaluator = evaluate_lesion_files(pred, gt, progress=progress)
        evaluator.write_csv(out, overwrite=overwrite)
        evaluator.write_lesion_csv(lesions_csv, overwrite=overwrite)
        if summary is not None:
            evaluator.write_summary_csv(summary, overwrite=overwrite)
        return evaluator
    from medfoundry.evaluation import evaluate_files

    check_outputs(out, summary, plot, overwrite=overwrite)
    if plot is not None and Path(plot).suffix.lower() != ".png":
        raise InputError(plot, "the plot is written as PNG; give a .png path")
    evaluator = evaluate_files(
        pred, gt, tolerance_mm=o.tolerance_mm, challenge_compat=o.challenge_compat, labels=labels, progress=progress
    )
    evaluator.write_csv(out, overwrite=overwrite)
    if summary is not None:
        evaluator.write_summary_csv(summary, overwrite=overwrite)
    if plot is not None:
        from medfoundry.evaluation.plots import plot_metrics

        plot_metrics(evaluator, plot, overwrite=overwrite)
    return evaluator


def _lesion_predictor(adapter, weights, backend: str):
    """The LiteMedSAM predictor of the lesion finder, built once: now with an ``adapter`` (a corrupt adapter fails
    before any work), else at the first scan that needs it."""
    if adapter is not None:
        return make_predictor(weights=weights, backend=backend, adapter=adapter)
    built: list[LiteMedSAMPredictor] = []

    def once() -> LiteMedSAMPredictor:
        if not built:
            built.append(make_predictor(weights=weights, backend=backend))
        return built[0]

    return once


@dataclass
class LesionsOptions(ModelFields):
    """``lesions`` and ``lesions --manifest``: the finder (``threshold`` SUV or None: adaptive, ``min_volume`` mL,
    ``delineation``, ``keep_symmetric``, ``organ_rule``), the classifier ``model`` (default: the shipped one),
    ``suv_factor`` (one scan: SUV = value x factor; a manifest has a suv_factor column), the LiteMedSAM options
    (:class:`~medfoundry.api.common.ModelFields`), ``allow_absolute_out`` (a manifest's rows), ``overwrite`` and
    ``progress``."""

    threshold: float | None = None
    min_volume: float = 0.5
    delineation: str = "supported"
    keep_symmetric: bool = False
    organ_rule: bool = True
    model: str | Path | None = None
    suv_factor: float | None = None
    allow_absolute_out: bool = False
    overwrite: bool = False
    progress: bool = True

    def for_manifest(self) -> LesionsOptions:
        """These options, checked for a manifest run (each scan's factor comes from its row)."""
        if self.suv_factor:
            raise InputError("--suv-factor", "with --manifest, give each scan's factor in a suv_factor column")
        return self


def _finder_options(o: LesionsOptions) -> dict:
    """The finder's options of one run, numbers checked first (a value that would overflow never reaches it)."""
    threshold = o.threshold
    if threshold is not None:
        threshold = check_number(threshold, "--threshold", lo=0.0, lo_open=True)
    min_volume = check_number(o.min_volume, "--min-volume", lo=0.0)
    return dict(threshold=threshold, min_volume=min_volume, delineation=o.delineation, adapter=o.adapter,
                keep_symmetric=o.keep_symmetric, organ_rule=bool(o.organ_rule))  # fmt: skip


def _lesions_one(path: Path, out_dir: Path, *, suv_factor, predictor, classifier, options: dict, overwrite, progress):
    """Read one scan, find its lesions and write its folder (see :func:`lesions`)."""
    from medfoundry.inference.lesions.pipeline import find_lesions
    from medfoundry.inference.lesions.report import write_lesion_outputs

    image = read_image(path, suv=suv_factor is None, progress=progress) if path.is_dir() else read_image(path)
    result = find_lesions(
        image,
        threshold=options["threshold"],
        min_volume_ml=options["min_volume"],
        delineation=options["delineation"],
        predictor=predictor,
        classifier=classifier,
        suv_factor=suv_factor,
        symmetry=not options["keep_symmetric"],
        organ_rule=options["organ_rule"],
        progress=progress,
    )
    write_lesion_outputs(
        result,
        out_dir,
        source=path,
        dicom_series=path if path.is_dir() else None,
        overwrite=overwrite,
        progress=progress,
        extra={
            "min_volume_ml": options["min_volume"],
            "adapter": None if options["adapter"] is None else str(options["adapter"]),
            "classifier": classifier.path,
            "symmetry_rule": not options["keep_symmetric"],
        },
    )
    return result


def lesions(input: str | Path, out_dir: str | Path, options: LesionsOptions | None = None, **fields):
    """Find, delineate and quantify the lesions of a whole-body PET (DICOM folder, SUV NIfTI, or Bq/mL NIfTI with
    ``suv_factor``) and write the outputs of docs/lesions.md to ``out_dir``; ``model`` is a classifier from
    :func:`lesions_train` (default: the shipped one); ``organ_rule=False`` keeps candidates lying mostly in the
    brain, urinary tract or heart (rejected by default). The options are :class:`LesionsOptions` (or their fields
    as keywords). Returns the ``LesionResult``."""
    from medfoundry.modeling.lesion_classifier import load_lesion_classifier

    o = resolve_options(LesionsOptions, options, fields)
    options = _finder_options(o)
    suv_factor, overwrite = o.suv_factor, o.overwrite
    set_threads(o.threads)
    if suv_factor is not None:
        suv_factor = check_number(suv_factor, "--suv-factor", lo=0.0, lo_open=True)
    check_writable(out_dir, overwrite, folder=True)  # before any work
    classifier = load_lesion_classifier(o.model)
    return _lesions_one(
        Path(input),
        Path(out_dir),
        suv_factor=suv_factor,
        predictor=_lesion_predictor(o.adapter, o.weights, o.backend),
        classifier=classifier,
        options=options,
        overwrite=overwrite,
        progress=o.progress,
    )


lesion_folder = scan_folder  # a lesions manifest row's folder when it names none (medfoundry.api.batch)


@dataclass
class CohortResult:
    """What :func:`lesions_manifest` did: scan folders written, kept from an earlier run, rows that failed
    (name, why), the cohort table (one dict per row, as in ``cohort.csv``) and its path."""

    written: list[Path]
    kept: list[Path]
    failed: list[tuple[str, str]]
    rows: list[dict]
    cohort_csv: Path


COHORT_CSV = "cohort.csv"


def lesions_manifest(
    manifest: str | Path, out_dir: str | Path, options: LesionsOptions | None = None, *, ray=None, **fields
) -> CohortResult:
    """:func:`lesions` for every row of a manifest (:func:`medfoundry.inference.manifest.read_manifest`: an
    ``image`` column, optional ``out`` (the scan's folder, default :func:`lesion_folder`) and ``suv_factor``
    columns; an ``out`` stays inside the manifest's folder or ``out_dir`` unless ``allow_absolute_out``), with one
    model load, and ``OUT_DIR/cohort.csv`` (per scan: lesion count, total MTV, total TLG,
    threshold used, seconds, or the error), rewritten after every scan.

    Resumable: a scan whose folder holds a ``lesions.json`` is kept unless ``overwrite`` (folders are written
    whole, atomically, so an interrupted run leaves no half-written one). A bad row is recorded and the run goes
    on; at the end :class:`~medfoundry.errors.BatchFailures` lists the failed rows (``.result`` has the rest).

    ``ray`` (``RayOptions``, an address or True): the scans on Ray actors, each loading the models once
    (:mod:`medfoundry.api.batch`); the same folders and ``cohort.csv``. The options are :class:`LesionsOptions`
    (or their fields as keywords) without ``suv_factor``.
    """
    from medfoundry.inference.lesions.report import cohort_row, write_cohort_csv
    from medfoundry.inference.manifest import read_manifest
    from medfoundry.modeling.lesion_classifier import load_lesion_classifier

    o = resolve_options(LesionsOptions, options, fields).for_manifest()
    options = _finder_options(o)
    overwrite, model, adapter, weights, backend = o.overwrite, o.model, o.adapter, o.weights, o.backend
    set_threads(o.threads)
    out_dir = Path(out_dir)
    check_writable(out_dir, overwrite=True, folder=True)
    base = Path(manifest) if Path(manifest).is_dir() else Path(manifest).parent
    rows = read_manifest(
        manifest,
        out_dir,
        defaults=[],
        allow_absolute_out=o.allow_absolute_out,
        default_out=lambda image, out: lesion_folder(image, out, base),
    )
    classifier = load_lesion_classifier(model)  # a bad model file fails before any work
    out_dir.mkdir(parents=True, exist_ok=True)
    result = CohortResult([], [], [], [], out_dir / COHORT_CSV)
    table: dict[int, dict] = {}
    order = {id(row): i for i, row in enumerate(rows)}

    def record(row, status: str, error: str | None = None) -> None:
        folder = row.out
        if status == "failed":
            result.failed.append((row.name, error))
        else:
            (result.kept if status == "kept" else result.written).append(folder)
        table[order[id(row)]] = cohort_row(row.name, row.image, folder, status, error=error)
        result.rows = [table[i] for i in sorted(table)]
        write_cohort_csv(result.cohort_csv, result.rows)

    todo = []
    for row in rows:  # the resume rule and the manifest's own bad rows, on the driver
        folder = row.out
        if row.error is None and folder.exists() and not overwrite:
            if (folder / "lesions.json").is_file():
                record(row, "kept")
                continue
            row.error = f"{folder} exists and is not a lesions folder; pass --overwrite to replace it"
        if row.error is not None:
            record(row, "failed", row.error)
        else:
            todo.append(row)
    if ray is None:
        predictor = _lesion_predictor(adapter, weights, backend)
        factory = lambda: (classifier, predictor)  # noqa: E731 - built already (the predictor: at first use)
    else:
        factory = partial(_lesion_models, model, adapter, weights, backend)
    run_rows(
        todo,
        partial(_lesion_row, options=options, overwrite=overwrite),
        factory,
        ray=ray,
        progress=o.progress,
        done_before=len(rows) - len(todo),
        on_done=lambda row, out: record(row, "done") if out.ok else record(row, "failed", out.why),
        on_lost=lambda row: remove_temporaries_of(row.out),
        is_done=lambda row: (row.out / "lesions.json").is_file(),
    )
    write_cohort_csv(result.cohort_csv, result.rows)
    place = {row.out: i for i, row in enumerate(rows)}  # the lists in manifest order, as the local loop makes
    names = {row.name: i for i, row in enumerate(rows)}
    for kind in (result.written, result.kept):
        kind.sort(key=lambda folder: place.get(folder, len(rows)))
    result.failed.sort(key=lambda item: names.get(item[0], len(rows)))
    if result.failed:
        error = BatchFailures(manifest, result.written + result.kept, result.failed)
        error.result = result
        raise error
    return result


def _lesion_models(model, adapter, weights, backend: str):
    """A Ray actor's lesion models: the classifier and the LiteMedSAM predictor (built at first use)."""
    from medfoundry.modeling.lesion_classifier import load_lesion_classifier

    return load_lesion_classifier(model), _lesion_predictor(adapter, weights, backend)


def _lesion_row(row, models, *, options: dict, overwrite: bool) -> None:
    """One manifest row of :func:`lesions_manifest`: its scan's folder, written whole."""
    classifier, predictor = models()
    _lesions_one(row.image, row.out, suv_factor=_row_suv_factor(row), predictor=predictor, classifier=classifier,
                 options=options, overwrite=overwrite, progress=False)  # fmt: skip


def _row_suv_factor(row) -> float | None:
    """A manifest row's ``suv_factor`` cell (SUV = value x factor, for a Bq/mL volume), if any."""
    text = str(row.fields.get("suv_factor") or "").strip()
    return check_number(text, "suv_factor", lo=0.0, lo_open=True) if text else None


@dataclass
class LesionsTrainOptions:
    """``lesions train``: the ROI names and the negatives-only scans (:mod:`medfoundry.data.lesion_scans`),
    ``inserted`` copies with inserted lesions from ``insert_seed`` on, the candidate ``thresholds``, the
    ``embedding`` and ``anatomy`` features, ``scanner_copies``, the folds' ``seed``, a features ``cache``, the
    LiteMedSAM ``weights`` / ``backend`` / ``threads``, ``overwrite`` and ``progress``; None: the training's
    default (:class:`~medfoundry.training.lesion_classifier.TrainingConfig`)."""

    roi_names: list[str] | None = None
    negatives_only: list[str] | None = None
    inserted: int = 0
    insert_seed: int | None = None
    thresholds: tuple[float, ...] | None = None
    embedding: bool = True
    anatomy: bool = True
    scanner_copies: int | None = None
    seed: int = 0
    cache: str | Path | None = None
    overwrite: bool = False
    progress: bool = True
    backend: str = "fast"
    weights: str | Path | None = None
    threads: int | None = None


def lesions_train(data: str | Path, out: str | Path, options: LesionsTrainOptions | None = None, **fields):
    """Train the lesion classifier on the labelled scans under ``data`` (:mod:`medfoundry.data.lesion_scans`) and
    write it to ``out`` (JSON, atomically; refused if it exists unless ``overwrite``); use it with
    ``lesions(..., model=out)``. Returns the :class:`~medfoundry.training.lesion_classifier.TrainResult`
    (classifier, cross-validation grouped by scan, per-scan table)."""
    from medfoundry.training.lesion_classifier import TrainingConfig, train_lesion_classifier

    o = resolve_options(LesionsTrainOptions, options, fields)
    set_threads(o.threads)
    check_writable(out, o.overwrite)  # before any work
    if Path(out).suffix.lower() != ".json":
        raise InputError(out, "the lesion classifier is written as JSON; give a .json path")
    defaults = TrainingConfig()
    config = TrainingConfig(
        thresholds=defaults.thresholds if o.thresholds is None else tuple(o.thresholds),
        inserted=o.inserted,
        insert_seed=defaults.insert_seed if o.insert_seed is None else o.insert_seed,
        negatives_only=tuple(o.negatives_only or ()),
        roi_names=None if not o.roi_names else tuple(o.roi_names),
        embedding=o.embedding,
        anatomy=o.anatomy,
        scanner_copies=defaults.scanner_copies if o.scanner_copies is None else int(o.scanner_copies),
        seed=o.seed,
    )
    result = train_lesion_classifier(
        data, lambda: make_predictor(weights=o.weights, backend=o.backend), config, progress=o.progress, cache=o.cache
    )
    result.classifier.save(out)
    return result
