"""``classify``: PET slice abnormality detection, one function per step with its options dataclass.

``classify_build`` (volumes -> slice dataset), ``classify_embed`` (frozen encoder -> on-disk embedding cache,
resumable; on Ray actors with ``ray=``), ``classify_compare`` (linear heads on every cache + the CNN baseline),
``classify_predict`` (one scan) and ``classify_predict_many`` (a manifest of scans with one model load, one
folder per scan, resumable, bad rows at the end; on Ray actors with ``ray=``). Each takes its options object or
its fields as keywords."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from medfoundry.api.batch import run_rows, scan_folder
from medfoundry.api.common import resolve_options
from medfoundry.errors import BatchFailures, InputError


@dataclass
class ClassifyBuildOptions:
    """``classify build``: the cases (``cases`` CSV, ``autopet`` tree, ``case`` triples), the slicing and the split;
    ``mode="wholebody"`` with ``crops`` / ``crop`` and the insertion options (docs/classify.md)."""

    out: Path
    mode: str = "slices"
    cases: Path | None = None
    autopet: Path | None = None
    case: list = field(default_factory=list)
    grid: tuple[int, int, int] | None = None
    size: int = 224
    min_lesion_voxels: int = 1
    min_slice_max: float = 0.0
    intensity: str = "slice-max"
    suv_window: float = 10.0
    binarize: bool = False
    lesion_labels: list[int] | None = None
    split: tuple[float, float, float] = (0.75, 0.15, 0.10)
    seed: int = 0
    test_patients: list[str] = field(default_factory=list)
    val_patients: list[str] = field(default_factory=list)
    train_patients: list[str] = field(default_factory=list)
    tracers: list[str] | None = None
    test_tracer: str | None = None
    allow_incomplete_splits: bool = False
    crops: Path | None = None
    crop: list = field(default_factory=list)
    insertions: int = 4
    crop_slices: int = 0
    lesions_per_scan: tuple[int, int] = (1, 3)
    lesion_volume: tuple[float, float] = (1.0, 60.0)
    lesion_contrast: tuple[float, float] = (0.5, 1.0)
    lesion_fwhm: float | None = None
    features: list[str] = field(default_factory=list)
    borrow_backgrounds: bool = False
    regions: list[tuple[str, float, float]] | None = None
    overwrite: bool = False


@dataclass
class ClassifyBuildResult:
    """The slice dataset written and the cases it was built from."""

    dataset: Any
    cases: list


def classify_build(options: ClassifyBuildOptions | None = None, **fields) -> ClassifyBuildResult:
    """Resample the cases' PET volumes, cut labelled axial slices and split them by patient into ``out``."""
    from medfoundry.data.pet_slices import (
        CaseSpec,
        SliceConfig,
        autopet_cases,
        build_slice_dataset,
        keep_tracers,
        read_case_table,
        tracer_pins,
    )

    o = resolve_options(ClassifyBuildOptions, options, fields)
    cases = read_case_table(o.cases) if o.cases else []
    cases += autopet_cases(o.autopet) if o.autopet else []
    cases += [CaseSpec(cid, Path(img), Path(msk)) for cid, img, msk in o.case]
    if not cases:
        raise InputError(None, "no cases: give --cases CSV, --autopet ROOT or --case ID IMAGE MASK")
    wholebody = o.mode == "wholebody"
    if not wholebody and (o.crops or o.crop or o.regions or o.features or o.borrow_backgrounds):
        raise InputError(
            None, "--crops / --crop / --regions / --features / --borrow-backgrounds belong to --mode wholebody"
        )
    grid = o.grid if o.grid is not None else ((0, 0, 0) if wholebody else (400, 400, 300))
    config = SliceConfig(
        grid=tuple(grid),
        size=o.size,
        min_lesion_voxels=o.min_lesion_voxels,
        min_slice_max=o.min_slice_max,
        binarize=o.binarize,
        lesion_labels=tuple(o.lesion_labels) if o.lesion_labels else None,
        intensity=o.intensity,
        suv_window=o.suv_window,
    )
    if o.tracers:
        cases = keep_tracers(cases, o.tracers)
    pinned = tracer_pins(cases, o.test_tracer) if o.test_tracer else {}
    for split in ("train", "val", "test"):
        for patient in getattr(o, f"{split}_patients"):
            if pinned.setdefault(patient, split) != split:
                raise InputError(None, f"patient {patient} is pinned to both {pinned[patient]} and {split}")
    if wholebody:
        dataset = _build_wholebody(o, cases, config, pinned)
    else:
        dataset = build_slice_dataset(
            cases,
            o.out,
            config,
            fractions=tuple(o.split),
            seed=o.seed,
            pinned=pinned,
            overwrite=o.overwrite,
            allow_incomplete_splits=o.allow_incomplete_splits,
        )
    return ClassifyBuildResult(dataset, cases)


def _build_wholebody(o: ClassifyBuildOptions, cases: list, config, pinned: dict):
    from medfoundry.data.insertion import CLINICAL_FWHM_MM, InsertionConfig
    from medfoundry.data.pet_slices import CaseSpec, WholeBodyOptions, build_wholebody_dataset, read_case_table

    crops = read_case_table(o.crops) if o.crops else []
    crops += [CaseSpec(cid, Path(img), Path(msk)) for cid, img, msk in o.crop]
    regions = None
    if o.regions:
        regions = {}
        for split, lo, hi in o.regions:
            if split in regions:
                raise InputError(None, f"--regions names the {split} split twice")
            regions[split] = (lo, hi)
    options = WholeBodyOptions(
        n_inserted=o.insertions,
        insertion=InsertionConfig(
            lesions_per_scan=tuple(o.lesions_per_scan),
            volume_ml=tuple(o.lesion_volume),
            intensity_scale=tuple(o.lesion_contrast),
            resolution_fwhm_mm=CLINICAL_FWHM_MM if o.lesion_fwhm is None else o.lesion_fwhm,
        ),
        crop_slices=o.crop_slices,
        regions=regions,
        borrow_backgrounds=o.borrow_backgrounds,
    )
    features = None
    if o.features:
        from medfoundry.inference.slice_features import feature_source

        features = feature_source(o.features)
    return build_wholebody_dataset(
        cases,
        crops,
        o.out,
        config,
        options,
        fractions=tuple(o.split),
        seed=o.seed,
        pinned=pinned,
        overwrite=o.overwrite,
        allow_incomplete_splits=o.allow_incomplete_splits,
        features=features,
    )


@dataclass
class ClassifyEmbedOptions:
    """``classify embed``: every slice of ``dataset`` through a frozen ``encoder`` into the cache (default
    ``DATASET/embeddings``); ``ray``: the cache's chunks on Ray actors (``RayOptions``, an address or True)."""

    dataset: Path
    encoder: str = "litemedsam"
    weights: Path | None = None
    cache: Path | None = None
    batch_size: int = 16
    tiny: bool = False
    backend: str = "fast"
    chunk_rows: int = 128
    progress: bool = True
    ray: Any = None


@dataclass
class EmbedResult:
    """The complete cache, the seconds this run took, and (on Ray) the chunks embedded by this run."""

    cache: Any
    seconds: float
    chunks_done: int = 0


def _embedding_encoder(name: str, weights, tiny: bool, backend: str):
    """The frozen encoder of ``classify embed`` on its backend (built once per process)."""
    from medfoundry.inference.encoder_backends import encoder_runtime
    from medfoundry.modeling.registry import build_encoder

    return encoder_runtime(build_encoder(name, weights=weights, tiny=tiny), backend)


def classify_embed(options: ClassifyEmbedOptions | None = None, **fields) -> EmbedResult:
    """Embed every slice once (cached, resumable: finished chunks are kept). With ``ray``, each actor builds
    the encoder once and writes whole chunks; the driver joins them into the same cache as a local run."""
    from medfoundry.data.pet_slices import SliceDataset
    from medfoundry.inference.embedding_cache import embed_dataset, finish_embedding, note_progress, start_embedding

    o = resolve_options(ClassifyEmbedOptions, options, fields)
    dataset = SliceDataset(o.dataset)
    cache_root = o.cache or (Path(o.dataset) / "embeddings")
    start = time.perf_counter()
    encoder = _embedding_encoder(o.encoder, o.weights, o.tiny, o.backend)
    if o.ray is None:
        cache = embed_dataset(
            dataset, encoder, cache_root, batch_size=o.batch_size, chunk_rows=o.chunk_rows, weights_path=o.weights,
            progress=o.progress,
        )  # fmt: skip
        return EmbedResult(cache, time.perf_counter() - start)
    run = start_embedding(dataset, encoder, cache_root, o.chunk_rows, o.weights)  # the driver: the cache's identity
    if run.complete is not None:
        return EmbedResult(run.complete, time.perf_counter() - start)
    out_dim = encoder.out_dim
    del encoder  # the actors build their own
    chunks = [EmbedChunk(f"chunk {c}", c, run.chunk_path(c)) for c in run.todo]
    finished: list[int] = []

    def done(chunk, outcome) -> None:
        if outcome.ok:
            finished.append(chunk.index)
            note_progress(run, finished)

    outcomes = run_rows(
        chunks,
        partial(_embed_chunk_row, run=run, batch_size=o.batch_size),
        partial(_embedding_model, Path(o.dataset), o.encoder, o.weights, o.tiny, o.backend),
        ray=o.ray,
        progress=o.progress,
        desc=f"embedding ({o.encoder})",
        unit="chunk",
        done_before=0,
        on_done=done,
        on_lost=lambda chunk: _forget(chunk.out),
        is_done=lambda chunk: chunk.out.is_file(),
    )
    failed = [(chunk.name, out.why) for chunk, out in zip(chunks, outcomes, strict=True) if not out.ok]
    if failed:  # the chunks written stay: a rerun resumes
        raise BatchFailures(run.folder, [c.out for c in chunks if c.out.is_file()], failed)
    cache = finish_embedding(run, out_dim, time.perf_counter() - start)
    return EmbedResult(cache, time.perf_counter() - start, len(chunks))


@dataclass
class EmbedChunk:
    """One row of a Ray embedding run: a chunk of the dataset's slices and the file it is written to."""

    name: str
    index: int
    out: Path


def _embedding_model(dataset: Path, name: str, weights, tiny: bool, backend: str):
    from medfoundry.data.pet_slices import SliceDataset

    return SliceDataset(dataset), _embedding_encoder(name, weights, tiny, backend)


def _embed_chunk_row(chunk: EmbedChunk, model, *, run, batch_size: int) -> int:
    from medfoundry.inference.embedding_cache import embed_chunk

    dataset, encoder = model()
    return embed_chunk(dataset, encoder, run, chunk.index, batch_size)


def _forget(path: Path) -> None:
    from medfoundry.io.atomic import remove_temporaries_of

    remove_temporaries_of(path)


@dataclass
class ClassifyCompareOptions:
    """``classify compare``: a linear head per cached encoder (``embeddings``, default every cache of the
    dataset) and the CNN baseline, scored on the test split."""

    dataset: Path
    out: Path
    embeddings: list[Path] | None = None
    no_cnn: bool = False
    imbalance: str = "auto"
    threshold_rule: str = "f1"
    head_epochs: int = 300
    cnn_epochs: int = 12
    seed: int = 0
    overwrite: bool = False
    allow_one_class_splits: bool = False


def classify_compare(options: ClassifyCompareOptions | None = None, **fields):
    """Train and score the heads; the :func:`medfoundry.training.compare.run_comparison` result (``.markdown``)."""
    from medfoundry.training.compare import run_comparison

    o = resolve_options(ClassifyCompareOptions, options, fields)
    return run_comparison(
        dataset_dir=o.dataset,
        out_dir=o.out,
        caches=o.embeddings,
        cnn=not o.no_cnn,
        imbalance=o.imbalance,
        threshold_rule=o.threshold_rule,
        head_epochs=o.head_epochs,
        cnn_epochs=o.cnn_epochs,
        seed=o.seed,
        overwrite=o.overwrite,
        allow_one_class_splits=o.allow_one_class_splits,
    )


@dataclass
class ClassifyPredictOptions:
    """``classify predict``: per-slice abnormality probability of ``scan`` (or of every row of ``manifest``:
    columns image[,out][,mask][,suv_factor]) with the bundle ``model``, written to the folder ``out`` (with a
    manifest: one folder per scan below it). ``embedding_cache``: keep the scan's embeddings in
    ``$MEDFOUNDRY_CACHE/slice_embeddings``; ``ray``: the manifest's scans on Ray actors."""

    model: Path
    out: Path
    scan: Path | None = None
    mask: Path | None = None
    weights: Path | None = None
    threshold: float | None = None
    suv_factor: float | None = None
    backend: str = "fast"
    embedding_cache: bool = True
    overwrite: bool = False
    progress: bool = True
    manifest: Path | None = None
    allow_absolute_out: bool = False
    ray: Any = None


def _embedding_cache_dir(use: bool):
    from medfoundry.inference.onnx_export import cache_dir

    return cache_dir() / "slice_embeddings" if use else None


def classify_predict(options: ClassifyPredictOptions | None = None, **fields):
    """One scan: the :class:`~medfoundry.inference.slice_classifier.ScanPrediction` and its folder ``out``."""
    from medfoundry.inference.slice_classifier import predict_scan

    o = resolve_options(ClassifyPredictOptions, options, fields)
    if o.scan is None:
        raise InputError(None, "give a SCAN (or --manifest FILE)")
    return predict_scan(
        o.scan,
        o.model,
        o.out,
        mask=o.mask,
        weights=o.weights,
        threshold=o.threshold,
        overwrite=o.overwrite,
        suv_factor=o.suv_factor,
        backend=o.backend,
        embedding_cache=_embedding_cache_dir(o.embedding_cache),
        progress=o.progress,
    )


@dataclass
class PredictManyResult:
    """What :func:`classify_predict_many` did: scan folders written, kept from an earlier run, rows that failed
    (name, why), and the seconds per written scan."""

    written: list[Path]
    kept: list[Path]
    failed: list[tuple[str, str]]
    seconds: list[float] = field(default_factory=list)
    flagged: dict[Path, int] = field(default_factory=dict)


PREDICT_DONE = "flagged_ranges.json"  # a scan folder's last file: its presence means a finished row


def classify_predict_many(options: ClassifyPredictOptions | None = None, **fields) -> PredictManyResult:
    """Every row of ``manifest`` with one model load (per process; per Ray actor with ``ray``): one folder per
    scan (``out`` column, default its image's path below ``out``, as ``lesions --manifest``). Resumable: a folder
    with ``flagged_ranges.json`` is a finished row, kept unless ``overwrite``. A bad row is recorded and the run
    goes on; :class:`~medfoundry.errors.BatchFailures` lists the failed rows at the end (``.result``)."""
    from medfoundry.inference.manifest import read_manifest
    from medfoundry.inference.slice_classifier import load_slice_model
    from medfoundry.io.atomic import check_writable

    o = resolve_options(ClassifyPredictOptions, options, fields)
    if o.manifest is None:
        raise InputError(None, "give a --manifest FILE")
    if o.scan is not None:
        raise InputError(o.scan, "give a scan or --manifest, not both")
    if o.mask is not None or o.suv_factor is not None:
        raise InputError("--mask", "with --manifest, give masks and SUV factors in 'mask' / 'suv_factor' columns")
    out_dir = Path(o.out)
    check_writable(out_dir, overwrite=True, folder=True)
    base = Path(o.manifest) if Path(o.manifest).is_dir() else Path(o.manifest).parent
    rows = read_manifest(
        o.manifest,
        out_dir,
        defaults=[],
        allow_absolute_out=o.allow_absolute_out,
        default_out=lambda image, out: scan_folder(image, out, base),
    )
    model = load_slice_model(o.model, o.weights, o.backend)  # a bad bundle fails before any work
    result = PredictManyResult([], [], [])
    todo = []
    failed: dict[int, tuple[str, str]] = {}
    for i, row in enumerate(rows):
        if row.error is None and row.out.exists() and not o.overwrite:
            if (row.out / PREDICT_DONE).is_file():
                result.kept.append(row.out)
                continue
            row.error = f"{row.out} exists and is not a prediction folder; pass --overwrite to replace it"
        if row.error is not None:
            failed[i] = (row.name, row.error)
        else:
            todo.append(row)
    step = partial(
        _predict_row,
        base=base,
        threshold=o.threshold,
        embedding_cache=_embedding_cache_dir(o.embedding_cache),
    )
    factory = (lambda: model) if o.ray is None else partial(load_slice_model, o.model, o.weights, o.backend)
    outcomes = run_rows(
        todo,
        step,
        factory,
        ray=o.ray,
        progress=o.progress,
        done_before=len(rows) - len(todo),
        on_lost=lambda row: _forget(row.out),
        is_done=lambda row: (row.out / PREDICT_DONE).is_file(),
    )
    order = {id(row): i for i, row in enumerate(rows)}
    for row, outcome in zip(todo, outcomes, strict=True):
        if outcome.ok:
            result.written.append(row.out)
            result.seconds.append(outcome.seconds)
            result.flagged[row.out] = outcome.value
        else:
            failed[order[id(row)]] = (row.name, outcome.why)
    result.failed = [failed[i] for i in sorted(failed)]
    if result.failed:
        error = BatchFailures(o.manifest, result.written + result.kept, result.failed)
        error.result = result
        raise error
    return result


def _predict_row(row, model, *, base: Path, threshold, embedding_cache) -> int:
    """One manifest row of :func:`classify_predict_many`: its scan's folder, written whole; the flagged slices."""
    from medfoundry.inference.slice_classifier import predict_scan
    from medfoundry.io.numbers import check_number

    mask = str(row.fields.get("mask") or "").strip()
    mask_path = None
    if mask:
        mask_path = Path(mask).expanduser()
        mask_path = mask_path if mask_path.is_absolute() else base / mask_path
    factor = str(row.fields.get("suv_factor") or "").strip()
    suv_factor = check_number(factor, "suv_factor", lo=0.0, lo_open=True) if factor else None
    pred = predict_scan(
        row.image,
        model(),
        row.out,
        mask=mask_path,
        threshold=threshold,
        overwrite=True,  # the folder is not there, or --overwrite
        suv_factor=suv_factor,
        embedding_cache=embedding_cache,
        progress=False,
    )
    return int((pred.probabilities >= pred.threshold).sum())
