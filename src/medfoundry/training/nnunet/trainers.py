"""nnU-Net v2 trainers: the plain 2D trainer with a selectable schedule, and the frozen-encoder fusion variants.

All classes subclass nnU-Net's own :class:`nnUNetTrainer`, so data loading, oversampling of foreground patches,
augmentation, the Dice + cross-entropy loss with deep supervision, the poly learning-rate schedule, logging and
checkpointing are nnU-Net's. The fusion trainers only replace :meth:`build_network_architecture` (nnU-Net's planned
U-Net wrapped in :class:`~medfoundry.modeling.fusion.FusionUNet`).

nnU-Net's command-line tools find trainers by class name inside the ``nnunetv2`` package; these classes live in
medfoundry instead (at module level in :mod:`.nnunet_trainers`), so :func:`train` instantiates them directly with
nnU-Net's constructor arguments (plans, configuration, fold, dataset.json, device), and :mod:`.predict` builds their
network with :func:`.network.build_network` and hands it to ``nnUNetPredictor.manual_initialization``.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import torch

from medfoundry.errors import InputError, OutputExistsError
from medfoundry.io.atomic import atomic_path
from medfoundry.modeling.fusion import VARIANTS, FusionSpec
from medfoundry.training.nnunet.runtime import (
    CONFIGURATION,
    PLANS_IDENTIFIER,
    format_fraction,
    fraction_fold,
    nnunet_environment,
)
from medfoundry.training.nnunet.schedule import SCHEDULES, Schedule
from medfoundry.training.resume import resume_or_refuse

MODEL_INFO = "medfoundry_model.json"


# variant -> trainer class name (nnU-Net shows it in its output folder names); classes in :mod:`.nnunet_trainers`
TRAINER_NAMES: dict[str, str] = {
    "baseline": "nnUNetTrainerMF",
    "sam": "nnUNetTrainerMF_nnSAM",
    "convnext1": "nnUNetTrainerMF_nnConvNeXt1",
    "convnext2": "nnUNetTrainerMF_nnConvNeXt2",
    "dino": "nnUNetTrainerMF_nnDINO",
}


def trainer_class(variant: str) -> type:
    """The nnU-Net trainer class of ``variant`` (baseline, sam, convnext1, convnext2, dino).

    The classes are defined at module level in :mod:`.nnunet_trainers` (importable and picklable); that module
    imports nnunetv2, so it is imported here, on first use.
    """
    from medfoundry.training.nnunet import nnunet_trainers

    return getattr(nnunet_trainers, trainer_name(variant))


def trainer_name(variant: str) -> str:
    """The class name nnU-Net uses in the output folder name."""
    if variant not in TRAINER_NAMES:
        raise InputError(None, f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    return TRAINER_NAMES[variant]


def model_folder(run_dir: str | Path, dataset_name: str, variant: str, fold: int) -> Path:
    """nnU-Net's output folder of one trainer and fold (= training fraction) in the run directory."""
    return (
        Path(run_dir).resolve()
        / "nnUNet_results"
        / dataset_name
        / f"{trainer_name(variant)}__{PLANS_IDENTIFIER}__{CONFIGURATION}"
        / f"fold_{fold}"
    )


def _checkpoints(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("checkpoint_*.pth")) if folder.is_dir() else []


def train(
    run_dir: str | Path,
    variant: str = "baseline",
    fraction: float = 100.0,
    schedule: Schedule | None = None,
    fusion: FusionSpec | None = None,
    device: str = "cpu",
    resume: bool = False,
    overwrite: bool = False,
    data_workers: int | None = None,
    seed: int | None = 0,
    encoder_backend: str = "fast",
) -> Path:
    """Train one variant on one training fraction with nnU-Net; returns the model folder (``fold_k``).

    On the CPU a fusion variant's frozen encoder runs on ``encoder_backend`` (``fast``: ONNX Runtime; ``torch``:
    eager), as in ``segment``; on a GPU it runs eagerly.

    An existing model is refused unless ``overwrite`` (retrain) or ``resume`` (continue from nnU-Net's
    ``checkpoint_latest.pth`` after an interruption; a finished model is left as it is).
    """
    from medfoundry.training.nnunet.plan import load_plans

    schedule = schedule or SCHEDULES["cpu"]
    if variant != "baseline":
        fusion = fusion or FusionSpec(variant)
        if fusion.variant != variant:
            raise InputError(None, f"fusion spec is for {fusion.variant}, not {variant}")
    elif fusion is not None:
        raise InputError(None, "the baseline takes no frozen encoder")
    manifest, plans, dataset_json = load_plans(run_dir)
    fold = fraction_fold(manifest, fraction)
    folder = model_folder(run_dir, manifest["dataset_name"], variant, fold)
    found = _checkpoints(folder)
    info_path = folder / MODEL_INFO
    if "checkpoint_final.pth" in found and not (resume or overwrite):
        raise OutputExistsError(folder)
    resuming = resume_or_refuse(folder, found, resume=resume, overwrite=overwrite, what="an interrupted training")
    if resume and "checkpoint_final.pth" in found:
        print(f"{folder}: already trained (checkpoint_final.pth); nothing to resume")
        return folder
    if resume and info_path.is_file():
        old = json.loads(info_path.read_text())
        if old.get("fusion") != (fusion.to_dict() if fusion else None) or old.get("fraction") != float(fraction):
            raise InputError(info_path, "cannot resume: this model was started with another encoder or fraction")
    if overwrite and folder.exists():
        shutil.rmtree(folder)
    if seed is not None:
        import random

        import numpy as np

        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(None, "`device` cuda asked for, but no CUDA GPU is available here")
    with nnunet_environment(run_dir, data_workers=data_workers):
        cls = trainer_class(variant)
        plans = dict(plans, continue_training=resuming)
        trainer = cls(plans=plans, configuration=CONFIGURATION, fold=fold, dataset_json=dataset_json, device=dev)
        trainer.configure(schedule, fusion, encoder_backend)
        if resuming:
            # nnU-Net's loader unpickles with weights_only=False: first prove the file holds only tensors and
            # plain values (weights_only=True, refuses a code payload), then let nnU-Net restore its state
            from nnunetv2.run.run_training import maybe_load_checkpoint

            from medfoundry.io.torchfile import load_torch_file

            for name in ("checkpoint_final.pth", "checkpoint_latest.pth", "checkpoint_best.pth"):
                if name in found:
                    load_torch_file(folder / name, "nnU-Net checkpoint", numpy_scalars=True)
                    break
            maybe_load_checkpoint(trainer, continue_training=True, validation_only=False)
        else:
            trainer.initialize()
        info = {
            "variant": variant,
            "trainer": cls.__name__,
            "fraction": float(fraction),
            "fold": fold,
            "training_cases": manifest["fractions"][format_fraction(fraction)],
            "schedule": asdict(schedule),
            "fusion": fusion.to_dict() if fusion else None,
            "encoder": trainer.network.frozen.describe() if fusion else None,
            "encoder_runtime": getattr(trainer, "mf_runtime", None) if fusion else None,
            "export_id": manifest.get("export_id"),
            "device": str(dev),
        }
        with atomic_path(info_path, overwrite=True) as tmp:
            tmp.write_text(json.dumps(info, indent=2))
        trainer.run_training()
    return folder
