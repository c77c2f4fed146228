"""The run directory of the nnU-Net arm: nnU-Net's three folders under it, and a manifest tying it to one dataset.

Layout of ``RUN``::

    RUN/medfoundry_nnunet.json      manifest: dataset id/name, source files, test split, training fractions
    RUN/nnUNet_raw/DatasetXXX_NAME  nnU-Net v2 raw layout (imagesTr, labelsTr, imagesTs, labelsTs, dataset.json)
    RUN/nnUNet_preprocessed/...     fingerprint, plans, preprocessed 2D data, splits_final.json
    RUN/nnUNet_results/...          one folder per trainer; fold k = training fraction k of the manifest
    RUN/predictions/VARIANT/fFRACTION/CASE.nii.gz
    RUN/reports/                    tables and the Dice-against-fraction plot

nnU-Net reads the ``nnUNet_raw`` / ``nnUNet_preprocessed`` / ``nnUNet_results`` environment variables; they are set
for this process only, inside :func:`nnunet_environment`, and restored afterwards (never in the user's shell or home).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from medfoundry.errors import InputError
from medfoundry.io.atomic import atomic_path

MANIFEST_NAME = "medfoundry_nnunet.json"
MANIFEST_FORMAT = 1
CONFIGURATION = "2d"
PLANS_IDENTIFIER = "nnUNetPlans"
NNUNET_VARIABLES = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")


@dataclass(frozen=True)
class RunLayout:
    """Paths of one run directory."""

    root: Path

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST_NAME

    @property
    def raw(self) -> Path:
        return self.root / "nnUNet_raw"

    @property
    def preprocessed(self) -> Path:
        return self.root / "nnUNet_preprocessed"

    @property
    def results(self) -> Path:
        return self.root / "nnUNet_results"

    @property
    def predictions(self) -> Path:
        return self.root / "predictions"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    def dataset_raw(self, dataset_name: str) -> Path:
        return self.raw / dataset_name

    def dataset_preprocessed(self, dataset_name: str) -> Path:
        return self.preprocessed / dataset_name

    def prediction_dir(self, variant: str, fraction: float) -> Path:
        return self.predictions / variant / f"f{format_fraction(fraction)}"


def format_fraction(fraction: float) -> str:
    """``100`` -> ``"100"``, ``2.5`` -> ``"2.5"``: the training fraction in percent, as used in names."""
    return f"{float(fraction):g}"


@contextlib.contextmanager
def nnunet_environment(
    run_dir: str | Path, data_workers: int | None = None, preprocessed: str | Path | None = None
) -> Iterator[RunLayout]:
    """Point nnU-Net's folder variables at ``run_dir`` for the duration of the block, then restore them.

    ``data_workers`` sets nnU-Net's number of data-augmentation processes (``nnUNet_n_proc_DA``; 0 = in-process).
    ``preprocessed``: the folder nnU-Net writes its preprocessed datasets to instead of ``RUN/nnUNet_preprocessed``
    (planning stages there, then swaps the finished dataset folder in). Call it before importing nnunetv2 modules
    so that versions reading the variables at import time see them too.
    """
    layout = RunLayout(Path(run_dir).resolve())
    names = NNUNET_VARIABLES + (("nnUNet_n_proc_DA",) if data_workers is not None else ())
    saved = {name: os.environ.get(name) for name in names}
    os.environ["nnUNet_raw"] = str(layout.raw)
    os.environ["nnUNet_preprocessed"] = str(preprocessed or layout.preprocessed)
    os.environ["nnUNet_results"] = str(layout.results)
    if data_workers is not None:
        os.environ["nnUNet_n_proc_DA"] = str(int(data_workers))
    try:
        yield layout
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def read_manifest(run_dir: str | Path) -> dict:
    """The run's manifest; a clear error when ``run_dir`` was not made by ``medfoundry nnunet prepare``."""
    layout = RunLayout(Path(run_dir))
    if not layout.manifest.is_file():
        raise InputError(
            run_dir,
            f"not a medfoundry nnU-Net run directory (no {MANIFEST_NAME}); run 'medfoundry nnunet prepare' first",
        )
    try:
        manifest = json.loads(layout.manifest.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(layout.manifest, f"unreadable run manifest ({exc.__class__.__name__})") from exc
    if manifest.get("format") != MANIFEST_FORMAT or "dataset_name" not in manifest:
        raise InputError(layout.manifest, "not a medfoundry nnU-Net run manifest (unknown format)")
    return manifest


def write_manifest(run_dir: str | Path, manifest: dict, overwrite: bool = False) -> Path:
    """Write the manifest atomically."""
    path = RunLayout(Path(run_dir)).manifest
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2))
    return path


def fraction_fold(manifest: dict, fraction: float) -> int:
    """The nnU-Net fold index that holds training fraction ``fraction`` (percent) of this run."""
    key = format_fraction(fraction)
    folds = manifest["folds"]
    if key not in folds:
        raise InputError(
            manifest.get("run_dir"),
            f"training fraction {key}% was not prepared for this run; prepared: " + ", ".join(f"{k}%" for k in folds),
        )
    return int(folds[key])


def nnunet_dataset_name(dataset_id: int, name: str) -> str:
    """nnU-Net's folder name ``DatasetXXX_NAME``."""
    return f"Dataset{int(dataset_id):03d}_{name}"
