"""Fingerprint, plan and preprocess with nnU-Net v2's own API (2D configuration), inside the run directory.

nnU-Net's :func:`extract_fingerprints`, :func:`plan_experiments` (its default ``ExperimentPlanner``: patch size,
network topology, batch size, per-channel normalisation) and :func:`preprocess` do the work; this module only points
them at the run directory and writes ``splits_final.json`` with one fold per training fraction of the manifest
(train = validation = the fraction's cases, so that no scarce labelled case is held out of training).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from medfoundry.errors import InputError, OutputExistsError
from medfoundry.io.atomic import atomic_dir
from medfoundry.training.nnunet.runtime import (
    CONFIGURATION,
    PLANS_IDENTIFIER,
    RunLayout,
    nnunet_environment,
    read_manifest,
)

PLAN_STAMP = "medfoundry_plan.json"


def splits_from_manifest(manifest: dict) -> list[dict]:
    """nnU-Net ``splits_final.json`` content: fold k = training fraction k (train and val = its cases)."""
    splits = [None] * len(manifest["folds"])
    for key, fold in manifest["folds"].items():
        cases = list(manifest["fractions"][key])
        splits[int(fold)] = {"train": cases, "val": cases}
    return splits


def plan_and_preprocess(
    run_dir: str | Path,
    num_processes: int = 1,
    gpu_memory_target_gb: float | None = None,
    overwrite: bool = False,
) -> dict:
    """Run nnU-Net's fingerprint extraction, planner and 2D preprocessing; returns the 2D configuration.

    nnU-Net writes into a temporary folder beside ``nnUNet_preprocessed/DATASET``
    (:func:`~medfoundry.io.atomic.atomic_dir`), which replaces it only once planning, preprocessing and the splits
    are complete: an interrupted or refused run leaves the previous plan as it was.
    """
    manifest = read_manifest(run_dir)
    layout = RunLayout(Path(run_dir).resolve())
    dataset_name = manifest["dataset_name"]
    if not (layout.dataset_raw(dataset_name) / "dataset.json").is_file():
        raise InputError(layout.dataset_raw(dataset_name), "nnU-Net raw dataset missing; run 'prepare' again")
    target = layout.dataset_preprocessed(dataset_name)
    if (target / f"{PLANS_IDENTIFIER}.json").exists() and not overwrite:
        raise OutputExistsError(target / f"{PLANS_IDENTIFIER}.json")
    # nnU-Net writes DATASET/ under $nnUNet_preprocessed: point that at the temporary folder, then lift DATASET's
    # contents into it so that it becomes nnUNet_preprocessed/DATASET when complete
    with atomic_dir(target, overwrite=True) as tmp, nnunet_environment(run_dir, preprocessed=tmp):
        from nnunetv2.experiment_planning.plan_and_preprocess_api import (
            extract_fingerprints,
            plan_experiments,
            preprocess,
        )

        dataset_id = int(manifest["dataset_id"])
        try:
            extract_fingerprints([dataset_id], num_processes=num_processes, check_dataset_integrity=True)
        except (AssertionError, RuntimeError) as exc:
            raise InputError(layout.dataset_raw(dataset_name), f"nnU-Net refused the dataset: {exc}") from exc
        plans_identifier = plan_experiments([dataset_id], gpu_memory_target_in_gb=gpu_memory_target_gb)
        preprocess([dataset_id], plans_identifier, configurations=(CONFIGURATION,), num_processes=(num_processes,))
        staged = tmp / dataset_name
        for entry in list(staged.iterdir()):
            os.replace(entry, tmp / entry.name)
        staged.rmdir()
        (tmp / "splits_final.json").write_text(json.dumps(splits_from_manifest(manifest), indent=1))
        (tmp / PLAN_STAMP).write_text(json.dumps({"export_id": manifest.get("export_id")}))
        plans = json.loads((tmp / f"{plans_identifier}.json").read_text())
    return configuration_summary(plans)


def configuration_summary(plans: dict) -> dict:
    """The parts of nnU-Net's 2D plan a user wants to see."""
    cfg = plans["configurations"][CONFIGURATION]
    arch = cfg["architecture"]["arch_kwargs"]
    return {
        "dataset": plans["dataset_name"],
        "patch_size": cfg["patch_size"],
        "batch_size": cfg["batch_size"],
        "spacing": cfg["spacing"],
        "normalization": cfg["normalization_schemes"],
        "stages": arch["n_stages"],
        "features_per_stage": arch["features_per_stage"],
        "transpose_forward": plans["transpose_forward"],
    }


def load_plans(run_dir: str | Path) -> tuple[dict, dict, dict]:
    """(manifest, plans, dataset_json) of a planned run; clear errors when planning is missing or stale."""
    manifest = read_manifest(run_dir)
    folder = Path(run_dir) / "nnUNet_preprocessed" / manifest["dataset_name"]
    plans_file = folder / f"{PLANS_IDENTIFIER}.json"
    if not plans_file.is_file():
        raise InputError(run_dir, "not planned yet; run 'medfoundry nnunet plan' first")
    if plans_file.parent.name != json.loads(plans_file.read_text()).get("dataset_name"):
        raise InputError(plans_file, "plans belong to another dataset; run 'medfoundry nnunet plan --overwrite'")
    stamp = folder / PLAN_STAMP
    if not stamp.is_file() or json.loads(stamp.read_text()).get("export_id") != manifest.get("export_id"):
        raise InputError(
            folder, "the preprocessed data predate the current export; run 'medfoundry nnunet plan --overwrite'"
        )
    plans = json.loads(plans_file.read_text())
    dataset_json = json.loads((folder / "dataset.json").read_text())
    return manifest, plans, dataset_json
