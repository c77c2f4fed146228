"""``nnunet``: the nnU-Net PET experiment (prepare, plan, train, predict, evaluate), one function per step with
its options dataclass (docs/nnunet.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from medfoundry.api.common import resolve_device, resolve_options
from medfoundry.errors import InputError


@dataclass
class NnunetPrepareOptions:
    """Export the cases under ``data`` (``image`` / ``mask`` path patterns with ``{case}``, or an ``autopet``
    tree) to nnU-Net's raw layout in ``run_dir``, with a patient-wise test split and training ``fractions``."""

    data: Path
    run_dir: Path
    image: str = "{case}/PET_image.nii.gz"
    mask: str = "{case}/PET_mask.nii.gz"
    patient_regex: str | None = None
    autopet: bool = False
    tracers: list[str] | None = None
    modality: str = "PET"
    dataset_id: int = 501
    name: str = "PETSTS"
    test_fraction: float = 0.2
    fractions: list[float] = field(default_factory=lambda: [100, 50, 10, 5, 1])
    seed: int = 0
    binarize: bool = False
    max_cases: int | None = None
    overwrite: bool = False


def nnunet_prepare(options: NnunetPrepareOptions | None = None, **fields) -> dict:
    """The run's manifest (``manifest_summary`` of :mod:`medfoundry.training.nnunet.export` says it in lines)."""
    from medfoundry.training.nnunet.export import prepare

    o = resolve_options(NnunetPrepareOptions, options, fields)
    return prepare(
        o.data,
        o.run_dir,
        image_pattern=o.image,
        mask_pattern=o.mask,
        dataset_id=o.dataset_id,
        name=o.name,
        modality=o.modality,
        test_fraction=o.test_fraction,
        fractions=o.fractions,
        seed=o.seed,
        patient_regex=o.patient_regex,
        binarize=o.binarize,
        max_cases=o.max_cases,
        overwrite=o.overwrite,
        autopet=o.autopet,
        tracers=o.tracers,
    )


@dataclass
class NnunetPlanOptions:
    """nnU-Net's fingerprint, planning and 2D preprocessing of ``run_dir``."""

    run_dir: Path
    processes: int = 1
    gpu_memory_gb: float | None = None
    overwrite: bool = False


def nnunet_plan(options: NnunetPlanOptions | None = None, **fields) -> dict:
    """The plan's summary (name -> value)."""
    from medfoundry.training.nnunet.plan import plan_and_preprocess

    o = resolve_options(NnunetPlanOptions, options, fields)
    return plan_and_preprocess(
        o.run_dir, num_processes=o.processes, gpu_memory_target_gb=o.gpu_memory_gb, overwrite=o.overwrite
    )


@dataclass
class NnunetTrainOptions:
    """Train one ``variant`` on one training ``fraction`` (percent) with a ``schedule`` (overrides: epochs,
    iterations, val_iterations, batch_size, lr); fusion variants take a frozen ``encoder``."""

    run_dir: Path
    variant: str = "baseline"
    fraction: float = 100.0
    schedule: str = "cpu"
    epochs: int | None = None
    iterations: int | None = None
    val_iterations: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    encoder: str | None = None
    encoder_weights: Path | None = None
    encoder_input_size: int | None = None
    tiny_encoder: bool = False
    device: str | None = None
    backend: str = "fast"
    workers: int | None = None
    seed: int = 0
    resume: bool = False
    overwrite: bool = False


def nnunet_train(options: NnunetTrainOptions | None = None, **fields) -> Path:
    """The trained model's folder."""
    from medfoundry.modeling.fusion import FusionSpec
    from medfoundry.training.nnunet.schedule import make_schedule
    from medfoundry.training.nnunet.trainers import train

    o = resolve_options(NnunetTrainOptions, options, fields)
    schedule = make_schedule(
        o.schedule,
        epochs=o.epochs,
        iterations_per_epoch=o.iterations,
        val_iterations=o.val_iterations,
        batch_size=o.batch_size,
        initial_lr=o.lr,
        save_every=1 if o.schedule != "nnunet" else None,
    )
    fusion = None
    if o.variant != "baseline":
        fusion = FusionSpec(
            o.variant,
            encoder=o.encoder,
            weights=str(o.encoder_weights) if o.encoder_weights else None,
            input_size=o.encoder_input_size,
            tiny=o.tiny_encoder,
            seed=o.seed,
        )
    elif o.encoder or o.encoder_weights or o.tiny_encoder:
        raise InputError(None, "the baseline has no frozen encoder; drop --encoder/--encoder-weights/--tiny-encoder")
    return train(
        o.run_dir,
        o.variant,
        o.fraction,
        schedule,
        fusion,
        device=resolve_device(o.device),
        resume=o.resume,
        overwrite=o.overwrite,
        data_workers=o.workers,
        seed=o.seed,
        encoder_backend=o.backend,
    )


@dataclass
class NnunetPredictOptions:
    """Predict the run's test split (or the volumes / folders ``input``) with one trained model into ``out``
    (default RUN/predictions/VARIANT/fFRACTION)."""

    run_dir: Path
    variant: str = "baseline"
    fraction: float = 100.0
    input: list[Path] | None = None
    out: Path | None = None
    device: str | None = None
    backend: str = "fast"
    mirroring: bool = False
    overwrite: bool = False


def nnunet_predict(options: NnunetPredictOptions | None = None, **fields) -> list[Path]:
    """The masks written."""
    from medfoundry.training.nnunet.predict import predict

    o = resolve_options(NnunetPredictOptions, options, fields)
    return predict(
        o.run_dir,
        o.variant,
        o.fraction,
        inputs=o.input,
        out_dir=o.out,
        device=resolve_device(o.device),
        mirroring=o.mirroring,
        overwrite=o.overwrite,
        encoder_backend=o.backend,
    )


@dataclass
class NnunetEvaluateOptions:
    """Tables (Markdown + CSV) and a Dice-vs-fraction plot of the run's predictions into ``out`` (default
    RUN/reports), for some ``variants`` / ``fractions`` (default all)."""

    run_dir: Path
    out: Path | None = None
    variants: list[str] | None = None
    fractions: list[float] | None = None
    overwrite: bool = False


def nnunet_evaluate(options: NnunetEvaluateOptions | None = None, **fields):
    """The per-variant summaries (``summary_markdown`` of :mod:`medfoundry.training.nnunet.report` tabulates them)."""
    from medfoundry.training.nnunet.report import evaluate_run

    o = resolve_options(NnunetEvaluateOptions, options, fields)
    return evaluate_run(o.run_dir, out_dir=o.out, variants=o.variants, fractions=o.fractions, overwrite=o.overwrite)
