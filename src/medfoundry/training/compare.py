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
class Scored:
    """One trained model: table name, bundle key, test metrics, test probabilities and its model bundle."""

    name: str
    key: str
    row: dict
    prob: np.ndarray
    bundle: dict
    val_auc: float = float("nan")  # ROC-AUC on the val split: how models/best.pt is chosen


def _head(name: str, key: str, x: np.ndarray, dataset, splits, head_cfg, preprocessing: dict, encoder=None,
          features: dict | None = None, train_rows: np.ndarray | None = None) -> Scored:  # fmt: skip
    """A linear head on ``x`` (one row per manifest row: an embedding, per-slice features, or both side by side),
    trained on ``train_rows`` (default the train split), scored on the test split."""
    from medfoundry.evaluation.classification import binary_metrics
    from medfoundry.modeling.heads import predict_proba
    from medfoundry.training.heads import train_linear_head

    tr, va, te = splits
    tr = tr if train_rows is None else train_rows
    labels = dataset.labels
    weights = dataset.weights
    sample_weight = weights[tr] if weights is not None and head_cfg.imbalance == "weights" else None
    trained = train_linear_head(x[tr], labels[tr], x[va], labels[va], head_cfg, sample_weight)
    prob = predict_proba(trained.model, x[te])
    bundle = {
        "kind": "linear",
        "name": name,
        "encoder": None if encoder is None else encoder["encoder"],
        "weights_path": None if encoder is None else encoder.get("weights_path"),
        "features": features,  # {"names": [...], "identity": {...}}: per-slice numbers after the embedding
        "head_dim": int(x.shape[1]),
        "dropout": head_cfg.dropout,
        "state_dict": trained.model.state_dict(),
        "threshold": trained.threshold,
        "preprocessing": preprocessing,
        "train": {**asdict(head_cfg), "seconds": trained.seconds, "best_epoch": trained.best_epoch},
    }
    row = {**binary_metrics(labels[te], prob, trained.threshold), "train_seconds": trained.seconds}
    scored = Scored(name, key, row, prob, bundle)
    scored.val_auc = _auc(labels[va], predict_proba(trained.model, x[va]))
    return scored


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p)) if np.unique(y).size == 2 else float("nan")


def train_heads(caches: list, dataset, splits, head_cfg, preprocessing: dict) -> list[Scored]:
    """A linear head per embedding cache (anything with ``embeddings``, ``encoder_name`` and ``manifest``), trained
    on ``splits[0]``, early stopping and threshold on ``splits[1]``, scored on ``splits[2]`` (row indices); with
    per-slice features (whole-body builds with ``--features``): the features alone and next to the first cache's
    embedding. Heads that use the anatomy do not train on crop slices (a crop has no anatomy: its features say
    "not in view", which would teach "no anatomy = lesion")."""
    from medfoundry.data.pet_slices.anatomy_features import HEAD_FEATURES

    scored = []
    embeddings = [(c, np.asarray(c.embeddings, dtype=np.float32)) for c in caches]
    for cache, emb in embeddings:
        scored.append(_head(f"{cache.encoder_name} + linear", cache.encoder_name, emb, dataset, splits, head_cfg,
                            preprocessing, cache.manifest))  # fmt: skip
    found = dataset.features
    if found is None:
        return scored
    names, values, identity = found
    anatomy = [n for n in HEAD_FEATURES if n in names]
    evidence = [n for n in names if n.startswith("finder_")]
    whole = np.array([r.get("source") != "crop" for r in dataset.rows])
    tr_whole = splits[0][whole[splits[0]]]
    combos = []  # (name, key, feature columns, with the first embedding, uses the anatomy)
    if anatomy:
        combos.append(("anatomy features only", "anatomy", anatomy, False, True))
    if evidence:
        combos.append(("finder evidence", "finder", evidence, False, False))
    first = embeddings[0] if embeddings else None
    enc = first[0].encoder_name if first is not None else ""
    if first is not None and anatomy:
        combos.append((f"{enc} + anatomy", f"{enc}_anatomy", anatomy, True, True))
    if first is not None and anatomy and evidence:
        combos.append((f"{enc} + anatomy + evidence", f"{enc}_anatomy_evidence", anatomy + evidence, True, True))
    for name, key, cols, with_embedding, uses_anatomy in combos:
        x = values[:, [names.index(c) for c in cols]]
        if with_embedding:
            x = np.concatenate([first[1], x], axis=1)
        features = {"names": list(cols), "identity": identity}
        scored.append(_head(name, key, x, dataset, splits, head_cfg, preprocessing,
                            first[0].manifest if with_embedding else None, features,
                            tr_whole if uses_anatomy else None))  # fmt: skip
    return scored


def train_cnn_baseline(dataset, splits, cnn_cfg, preprocessing: dict, progress: bool) -> Scored:
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
        "name": "baseline CNN",
        "input_size": int(x_tr.shape[-1]),
        "channels": list(cnn_cfg.channels),
        "state_dict": trained.model.state_dict(),
        "threshold": trained.threshold,
        "preprocessing": preprocessing,
        "train": {**asdict(cnn_cfg), "seconds": trained.seconds, "best_epoch": trained.best_epoch},
    }
    row = {**binary_metrics(labels[te], prob, trained.threshold), "train_seconds": trained.seconds}
    scored = Scored("baseline CNN", "cnn", row, prob, bundle)
    scored.val_auc = _auc(labels[va], cnn_probabilities(trained.model, x_va))
    return scored


def _write_outputs(
    folder: Path, scored: list[Scored], markdown: str, dataset, te: np.ndarray, dataset_dir, warnings: list[str]
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
    best = best_on_val(scored)
    if best is not None:
        chosen = {"model": best.name, "file": f"{best.key}.pt", "rule": "highest ROC-AUC on the val split",
                  "val_roc_auc": best.val_auc}  # fmt: skip
        _save_bundle(folder / "models" / "best.pt", {**best.bundle, "chosen": chosen})
    summary = {
        "rows": rows,
        "val_roc_auc": {s.name: s.val_auc for s in scored},
        "best": None if best is None else best.name,
        "dataset": str(Path(dataset_dir).resolve()),
        "warnings": warnings,
    }
    (folder / "summary.json").write_text(json.dumps(summary, indent=1, default=float))


def best_on_val(scored: list[Scored]) -> Scored | None:
    """The model with the highest val-split ROC-AUC (never the test split's: that would choose on the test)."""
    usable = [s for s in scored if np.isfinite(s.val_auc)]
    return max(usable, key=lambda s: s.val_auc) if usable else None


def borrowed_val_rows(dataset) -> np.ndarray:
    """With ``--borrow-backgrounds`` and a val split without whole-body slices of its own (two scans: one in train,
    one in test), the train split's normal whole-body slices join val as its normal examples (seen in training:
    the threshold is set against them; the val lesions are unseen). Empty otherwise."""
    wholebody = dataset.info.get("wholebody") or {}
    rows = dataset.rows
    if not wholebody.get("borrow_backgrounds") or any(
        r["split"] == "val" and r.get("source") == "wholebody" for r in rows
    ):
        return np.zeros(0, dtype=np.int64)
    return np.array(
        [r["row"] for r in rows if r["split"] == "train" and r.get("source") == "wholebody" and r["label"] == 0],
        dtype=np.int64,
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
            dataset_dir, "nothing to compare: no complete embedding cache for this dataset and `cnn=False` given"
        )
    if imbalance == "auto":
        imbalance = "weights" if dataset.weights is not None else "pos_weight"
    elif imbalance == "weights" and dataset.weights is None:
        raise InputError(dataset_dir, "`imbalance` weights needs a whole-body dataset (its manifest has weights)")
    splits = tuple(dataset.split_rows(s) for s in ("train", "val", "test"))
    borrowed = borrowed_val_rows(dataset)
    if borrowed.size:
        splits = (splits[0], np.union1d(splits[1], borrowed), splits[2])
    _, va, te = splits
    if te.size == 0:
        raise InputError(dataset_dir, "the test split is empty; rebuild with a non-zero test fraction")
    lent_rows = set(borrowed.tolist())
    checked = [dict(r, split="val") if r["row"] in lent_rows else r for r in dataset.rows]
    problems = split_problems(checked, dataset.weights is not None, ("val", "test"), empty=True)
    if problems and not allow_one_class_splits:
        raise InputError(
            dataset_dir,
            "; ".join(problems) + ": the threshold (val) or accuracy / ROC-AUC (test) of such a split mean nothing. "
            "Rebuild with both classes in val and test (see 'classify build'); `allow_one_class_splits` scores it "
            "anyway with a warning in the table",
        )
    preprocessing = {"config": dataset.info["config"], "preprocessing_hash": dataset.preprocessing_hash}
    head_cfg = HeadConfig(epochs=head_epochs, imbalance=imbalance, threshold_rule=threshold_rule, seed=seed)
    scored = train_heads(opened, dataset, splits, head_cfg, preprocessing)
    if cnn:
        cnn_cfg = CNNConfig(epochs=cnn_epochs, threshold_rule=threshold_rule, seed=seed)
        scored.append(train_cnn_baseline(dataset, splits, cnn_cfg, preprocessing, progress))
    rows = {s.name: s.row for s in scored}
    n_pos = int(dataset.labels[te].sum())
    lent = f"with the train scans' {borrowed.size} normal slices borrowed, " if borrowed.size else ""
    header = (
        f"Test split: {te.size} slices ({n_pos} abnormal) from "
        f"{len({dataset.rows[r]['patient_id'] for r in te})} patients; thresholds chosen on the val split "
        f"({lent}{va.size} slices, rule '{threshold_rule}'); heads: imbalance '{imbalance}'.\n\n"
    )
    warning = "".join(f"**WARNING: {p}; its numbers below mean little.**\n\n" for p in problems)
    best = best_on_val(scored)
    footer = (
        ""
        if best is None
        else (
            f"\n`models/best.pt` = {best.name} (highest val ROC-AUC, {best.val_auc:.3f}): what `classify predict` "
            "should be given.\n"
        )
    )
    markdown = warning + header + comparison_markdown(rows, extra=("train_seconds",)) + footer
    with atomic_dir(out_dir, overwrite=True) as tmp:  # ``overwrite`` was checked before the training
        _write_outputs(tmp, scored, markdown, dataset, te, dataset_dir, problems)
    return ComparisonResult(rows, markdown, problems)
