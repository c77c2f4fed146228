"""``finetune``: adapt LiteMedSAM to a few labelled scans, keeping a small adapter file (docs/adaptation.md)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from medfoundry.api.common import resolve_options
from medfoundry.errors import InputError
from medfoundry.training.finetune_defaults import DECODER_WARMUP, EPOCHS, MIN_EPOCHS, MIN_VAL_CASES, PATIENCE, STEPS


@dataclass
class FinetuneOptions:
    """``train``: a folder of NAME_image / NAME_mask pairs, images/ + labels/ or a dataset.json; ``out`` the run's
    folder (best.pt, last.pt, history.json, curves.png); ``method`` the adapter (decoder, lora, dbsam,
    classprompt); validation from ``val`` / ``val_cases`` or a patient-wise ``val_fraction`` of ``train``. The
    training options are those of ``medfoundry finetune --help`` (``epochs`` / ``lr``: per method when None)."""

    train: Path
    out: Path
    method: str = "decoder"
    image_glob: str | None = None
    cases: list[str] | None = None
    extra: Path | None = None
    val: Path | None = None
    val_cases: list[str] | None = None
    val_fraction: float = 0.2
    every: int = 1
    modality: str | None = None
    epochs: int | None = None
    batch_size: int = 4
    steps_per_epoch: int = STEPS
    patience: int = PATIENCE
    min_epochs: int = MIN_EPOCHS
    warmup_steps: int | None = None
    decoder_warmup: int = DECODER_WARMUP
    lr: float | None = None
    loss: str = "dice+focal"
    schedule: str = "warmup-exp"
    jitter: float = 20.0
    point_prob: float = 0.2
    box3d_prob: float = 0.3
    neighbour_prob: float = 0.4
    rank: int | None = None
    checkpoint_stages: list[int] | None = None
    seed: int = 0
    resume: bool = False
    overwrite: bool = False
    weights: Path | None = None
    threads: int | None = None
    tiny_model: bool = False


def finetune(options: FinetuneOptions | None = None, report: Callable[[str], None] | None = None, **fields):
    """Train the adapter; the :class:`~medfoundry.training.finetune.FinetuneResult` (``.seconds``: the training's
    wall time). ``report(line)`` gets the lines said before training (parameters, samples); the CLI prints them."""
    from medfoundry.data.slices2d import load_samples, split_cases
    from medfoundry.inference.volume_eval import load_volumes
    from medfoundry.io.atomic import check_writable
    from medfoundry.modeling.adapters.io import base_fingerprint
    from medfoundry.modeling.registry import build_adapter
    from medfoundry.training.finetune import FinetuneConfig
    from medfoundry.training.finetune import finetune as train_adapter

    o = resolve_options(FinetuneOptions, options, fields)
    say = report or (lambda line: None)
    if o.box3d_prob + o.neighbour_prob > 1:
        raise InputError(None, "--box3d-prob + --neighbour-prob must not exceed 1")
    if o.threads:
        import torch

        torch.set_num_threads(o.threads)
    out = check_writable(o.out, overwrite=True, folder=True, create=False)  # a file here is refused at once
    previous = [out / n for n in ("last.pt", "best.pt") if (out / n).exists()]
    if previous and not (o.resume or o.overwrite):
        raise InputError(out, "holds a previous run (last.pt); pass --resume to continue it or --overwrite")
    if o.resume and not (out / "last.pt").exists():
        raise InputError(out, "nothing to resume: no last.pt")
    samples = load_samples(o.train, image_glob=o.image_glob, every=o.every, modality=o.modality, cases=o.cases)
    if o.val or o.val_cases:
        val_root = o.val or o.train
        val = load_samples(val_root, image_glob=o.image_glob, every=o.every, modality=o.modality,
                           cases=o.val_cases, progress=False)  # fmt: skip
        if not o.val:
            samples = [s for s in samples if s.case not in set(o.val_cases)]
        train = samples
    elif o.val_fraction > 0:
        train, val = split_cases(samples, o.val_fraction, o.seed, min_val=MIN_VAL_CASES)
    else:
        train, val = samples, []
    val_cases = sorted({s.case for s in val})
    # validation volumes: the 3D path users take (2D validation files are scored slice by slice)
    val_volumes = load_volumes(o.val or o.train, image_glob=o.image_glob, cases=val_cases,
                               modality=o.modality) if val_cases else []  # fmt: skip
    if o.extra:
        train = train + load_samples(o.extra, every=o.every, modality=o.modality, progress=False)
    if o.tiny_model:
        from medfoundry.modeling.lite_medsam import build_tiny_lite_medsam

        base, base_name = build_tiny_lite_medsam(seed=0), "tiny-lite-medsam:0"
    else:
        from medfoundry.modeling.lite_medsam import build_lite_medsam

        base, base_name = build_lite_medsam(weights=o.weights), "lite_medsam"
    fingerprint = base_fingerprint(base)
    adapter_options = {"rank": o.rank, "checkpoint_stages": o.checkpoint_stages}
    if o.method == "classprompt":
        from medfoundry.io.image import MODALITIES

        adapter_options["modalities"] = list(MODALITIES)
    model = build_adapter(base, o.method, adapter_options)
    trainable, total = model.count_parameters()
    say(f"{o.method}: {trainable:,} trainable of {total:,} parameters ({100 * trainable / total:.2f}%)")
    say(f"training on {len(train)} samples from {len({s.case for s in train})} cases, validating on "
        + (f"{len(val_volumes)} volumes (3D box + propagation)" if val_volumes else
           f"{len(val)} samples from {len(val_cases)} cases"))  # fmt: skip
    if o.overwrite and not o.resume:
        for name in ("last.pt", "best.pt", "history.json", "curves.png"):
            (out / name).unlink(missing_ok=True)
    config = FinetuneConfig(
        epochs=o.epochs or EPOCHS.get(o.method, EPOCHS["decoder"]),
        batch_size=o.batch_size,
        lr=o.lr,
        loss=o.loss,
        schedule=o.schedule,
        steps_per_epoch=o.steps_per_epoch,
        jitter=o.jitter,
        point_prob=o.point_prob,
        box3d_prob=o.box3d_prob,
        neighbour_prob=o.neighbour_prob,
        patience=o.patience,
        min_epochs=o.min_epochs,
        warmup_steps=o.warmup_steps,
        decoder_warmup_epochs=o.decoder_warmup,
        seed=o.seed,
    )
    t0 = time.perf_counter()
    result = train_adapter(model, train, val, Path(out), config=config, base_fingerprint=fingerprint,
                           base_name=base_name, resume=o.resume, val_volumes=val_volumes or None)  # fmt: skip
    result.seconds = time.perf_counter() - t0
    return result
