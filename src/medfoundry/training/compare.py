"""``classify compare``: a linear head on every embedding cache plus the CNN baseline, scored on the test split.

Writes ``table.md`` / ``table.csv`` (accuracy, precision, recall, specificity, F1, ROC-AUC, AP, confusion
counts, training seconds), ``roc.png``, ``pr.png``, ``confusion.png``, ``test_probabilities.csv`` and one
model bundle per model in ``models/`` (what ``classify predict`` loads).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from medfoundry.errors import InputError
from medfoundry.io.atomic import atomic_dir, check_writable
from medfoundry.io.torchfile import plain


@dataclass
class ComparisonResult:
    """Per-model metric rows (test split) and the markdown table."""

    rows: dict[str, dict]
    markdown: str
    warnings: list[str] = field(default_factory=list)  # problems of the val / test split (when allowed)


def _save_bundle(path: Path, bundle: dict) -> None:
    torch.save(plain(bundle), path)  # tensors and plain values only: read back with weights_only=True


@dataclass
class _Scored:
    """One trained model: table name, bundle key, test metrics, test probabilities and its model bundle."""

    name: str
    key: str
    row: dict
    prob: np.ndarray
    bundle: dict


def _linear_head(cache, dataset, splits, head_cfg, preprocessing: dict) -> _Scored:
    """A linear head on one embedding cache, scored on the test split."""
    from medfoundry.evaluation.classification import binary_metrics
    from medfoundry.modeling.heads import predict_proba
    from medfoundry.training.heads import train_linear_head

    tr, va, te = splits
    labels = dataset.labels
    emb = np.asarray(cache.embeddings, dtype=np.float32)
    weights = dataset.weights
    sample_weight = weights[tr] if weights is not None and head_cfg.imbalance == "weights" else None
    trained = train_linear_head(emb[tr], labels[tr], emb[va], labels[va], head_cfg, sample_weight)
    prob = predict_proba(trained.model, emb[te])
    bundle = {
        "kind": "linear",
        "encoder": cache.manifest["encoder"],
        "weights_path": cache.manifest.get("weights_path"),
        "head_dim": int(emb.shape[1]),
        "dropout": head_cfg.dropout,
        "state_dict": trained.model.state_dict(),
        "threshold": trained.threshold,
        "preprocessing": preprocessing,
        "train": {**asdict(head_cfg), "seconds": trained.seconds, "best_epoch": trained.best_epoch},
    }
    row = {**binary_metrics(labels[te], prob, trained.threshold), "train_seconds": trained.seconds}
    return _Scored(f"{cache.encoder_name} + linear", cache.encoder_name, row, prob, bundle)


def _cnn_baseline(dataset, splits, cnn_cfg, preprocessing: dict, progress: bool) -> _Scored:
    """The from-scratch CNN on the stored slices, scored on the test split."""
    from medfoundry.evaluation.classification import binary_metrics
    from medfoundry.training.cnn_baseline import cnn_probabilities, train_cnn

    tr, va, te = splits
    labels = dataset.labels
    x_tr, x_va, x_te = dataset.images(tr), dataset.images(va), dataset.images(te)
    weights = dataset.weights
    trained = train_cnn(
        x_tr, labels[tr], x_va, labels[va], cnn_cfg, progress=progress,
        sample_weight=None if weights is None else weights[tr],
    )  # fmt: skip
    prob = cnn_probabilities(trained.model, x_te)
    bundle = {
        "kind": "cnn",
        "input_size": int(x_tr.shape[-1]),
        "channels": list(cnn_cfg.channels),
        "state_dict": trained.model.state_dict(),
        "threshold": trained.threshold,
        "preprocessing": preprocessing,
        "train": {**asdict(cnn_cfg), "seconds": trained.seconds, "best_epoch": trained.best_epoch},
    }
    row = {**binary_metrics(labels[te], prob, trained.threshold), "train_seconds": trained.seconds}
    return _Scored("baseline CNN", "cnn", row, prob, bundle)


def _write_outputs(
    folder: Path, scored: list[_Scored], markdown: str, dataset, te: np.ndarray, dataset_dir, warnings: list[str]
) -> None:
    """Tables, plots, test probabilities, model bundles and summary into ``folder``."""
    from medfoundry.evaluation.classification import plot_confusions, plot_curves, write_comparison_csv

    rows = {s.name: s.row for s in scored}
    curves = {s.name: (dataset.labels[te], s.prob) for s in scored}
    (folder / "models").mkdir()
    (folder / "table.md").write_text(markdown)
    write_comparison_csv(rows, folder / "table.csv")
    plot_curves(curves, folder / "roc.png", "roc")
    plot_curves(curves, folder / "pr.png", "pr")
    plot_confusions(rows, folder / "confusion.png")
    with (folder / "test_probabilities.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["row", "case_id", "slice_index", "label", *(s.name for s in scored)])
        for i, r in enumerate(te):
            meta = dataset.rows[int(r)]
            writer.writerow(
                [int(r), meta["case_id"], meta["slice_index"], meta["label"]] + [f"{s.prob[i]:.5f}" for s in scored]
            )
    for s in scored:
        _save_bundle(folder / "models" / f"{s.key}.pt", s.bundle)
    (folder / "summary.json").write_text(
        json.dumps(
            {"rows": rows, "dataset": str(Path(dataset_dir).resolve()), "warnings": warnings}, indent=1, default=float
        )
    )


def run_comparison(
    dataset_dir: str | Path,
    out_dir: str | Path,
    caches: Sequence[str | Path] | None = None,
    cnn: bool = True,
    imbalance: str = "auto",
    threshold_rule: str = "f1",
    head_epochs: int = 300,
    cnn_epochs: int = 12,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
    allow_one_class_splits: bool = False,
) -> ComparisonResult:
    """Train and score every model; the output folder appears complete or not at all.

    ``imbalance="auto"`` uses the dataset's sample weights when it has them (whole-body mode), else
    ``pos_weight``. A validation or test split that is empty or holds one class (or, in whole-body mode, no
    whole-body scan) is refused before any training: its threshold / accuracy would mean nothing. With
    ``allow_one_class_splits`` it is scored anyway and the table starts with a warning naming the problem."""
    from medfoundry.data.pet_slices import SliceDataset
    from medfoundry.data.pet_slices.checks import split_problems
    from medfoundry.evaluation.classification import comparison_markdown
    from medfoundry.inference.embedding_cache import find_caches, open_cache
    from medfoundry.training.cnn_baseline import CNNConfig
    from medfoundry.training.heads import HeadConfig

    out_dir = check_writable(out_dir, overwrite, folder=True, create=False)  # before any work
    dataset = SliceDataset(dataset_dir)
    if caches:
        opened = [open_cache(c, dataset) for c in caches]
    else:
        opened = find_caches(Path(dataset_dir) / "embeddings", dataset)
    if not opened and not cnn:
        raise InputError(
            dataset_dir, "nothing to compare: no complete embedding cache for this dataset and --no-cnn given"
        )
    if imbalance == "auto":
        imbalance = "weights" if dataset.weights is not None else "pos_weight"
    elif imbalance == "weights" and dataset.weights is None:
        raise InputError(dataset_dir, "--imbalance weights needs a whole-body dataset (its manifest has weights)")
    splits = tuple(dataset.split_rows(s) for s in ("train", "val", "test"))
    _, va, te = splits
    if te.size == 0:
        raise InputError(dataset_dir, "the test split is empty; rebuild with a non-zero test fraction")
    problems = split_problems(dataset.rows, dataset.weights is not None, ("val", "test"), empty=True)
    if problems and not allow_one_class_splits:
        raise InputError(
            dataset_dir,
            "; ".join(problems) + ": the threshold (val) or accuracy / ROC-AUC (test) of such a split mean nothing. "
            "Rebuild with both classes in val and test (see 'classify build'); --allow-one-class-splits scores it "
            "anyway with a warning in the table",
        )
    preprocessing = {"config": dataset.info["config"], "preprocessing_hash": dataset.preprocessing_hash}
    head_cfg = HeadConfig(epochs=head_epochs, imbalance=imbalance, threshold_rule=threshold_rule, seed=seed)
    scored = [_linear_head(cache, dataset, splits, head_cfg, preprocessing) for cache in opened]
    if cnn:
        cnn_cfg = CNNConfig(epochs=cnn_epochs, threshold_rule=threshold_rule, seed=seed)
        scored.append(_cnn_baseline(dataset, splits, cnn_cfg, preprocessing, progress))
    rows = {s.name: s.row for s in scored}
    n_pos = int(dataset.labels[te].sum())
    header = (
        f"Test split: {te.size} slices ({n_pos} abnormal) from "
        f"{len({dataset.rows[r]['patient_id'] for r in te})} patients; thresholds chosen on the val split "
        f"({va.size} slices, rule '{threshold_rule}'); heads: imbalance '{imbalance}'.\n\n"
    )
    warning = "".join(f"**WARNING: {p}; its numbers below mean little.**\n\n" for p in problems)
    markdown = warning + header + comparison_markdown(rows, extra=("train_seconds",))
    with atomic_dir(out_dir, overwrite=True) as tmp:  # ``overwrite`` was checked before the training
        _write_outputs(tmp, scored, markdown, dataset, te, dataset_dir, problems)
    return ComparisonResult(rows, markdown, problems)
