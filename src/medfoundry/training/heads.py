"""Training of the linear head (:class:`medfoundry.modeling.heads.LinearHead`) on frozen embeddings.

Embeddings are standardised with the training split's mean / std (stored in the head). Imbalance is handled
with a positive-class weight in the loss (``pos_weight``) or with balanced minibatches (``balanced``); the
epoch with the lowest validation loss is kept and the decision threshold is chosen on the validation split.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from medfoundry._deprecated import moved
from medfoundry.errors import InputError
from medfoundry.modeling.heads import linear_head as _model

# moved to medfoundry.modeling.heads; the old names work for one more release
__getattr__ = moved(__name__, "medfoundry.modeling.heads", ("LinearHead", "predict_proba"))


@dataclass
class HeadConfig:
    """Training options of the linear head."""

    dropout: float = 0.2
    lr: float = 3e-3
    weight_decay: float = 1e-4
    epochs: int = 300
    batch_size: int = 64
    imbalance: str = "pos_weight"  # "pos_weight", "balanced", "weights" (per-row sample weights) or "none"
    patience: int = 40
    threshold_rule: str = "f1"  # "f1" or "youden"
    seed: int = 0


@dataclass
class TrainedClassifier:
    """A trained model with its validation-chosen threshold and training record."""

    model: nn.Module
    threshold: float
    seconds: float
    best_epoch: int
    history: list[dict] = field(default_factory=list)


def choose_threshold(y_true: np.ndarray, prob: np.ndarray, rule: str = "f1") -> float:
    """Decision threshold maximising F1 (``"f1"``) or Youden's J (``"youden"``) on the given split.

    Falls back to 0.5 when the split holds one class only.
    """
    from sklearn.metrics import precision_recall_curve, roc_curve

    y = np.asarray(y_true).astype(int)
    p = np.asarray(prob, dtype=float)
    if np.unique(y).size < 2:
        return 0.5
    if rule == "youden":
        fpr, tpr, thr = roc_curve(y, p)
        best = int(np.argmax(tpr - fpr))
        return float(min(1.0, thr[best]))
    if rule != "f1":
        raise InputError(None, f"unknown threshold rule {rule!r}; use 'f1' or 'youden'")
    prec, rec, thr = precision_recall_curve(y, p)
    f1 = np.where(prec + rec > 0, 2 * prec * rec / np.maximum(prec + rec, 1e-12), 0.0)[:-1]
    return float(thr[int(np.argmax(f1))])


def imbalance_setup(
    labels: np.ndarray, imbalance: str, seed: int, sample_weight: np.ndarray | None = None
) -> tuple[torch.Tensor | None, torch.utils.data.Sampler | None]:
    """``(pos_weight, sampler)`` for the chosen imbalance remedy (a weighted sampler gives balanced batches).

    ``"weights"`` draws minibatches in proportion to ``sample_weight`` (the whole-body dataset's per-row
    class-balancing weights)."""
    labels = np.asarray(labels).astype(int)
    n_pos, n_neg = int(labels.sum()), int((1 - labels).sum())
    if n_pos == 0 or n_neg == 0:
        raise InputError(None, f"the training split needs both classes (got {n_pos} abnormal, {n_neg} normal)")
    if imbalance == "pos_weight":
        return torch.tensor(n_neg / n_pos, dtype=torch.float32), None
    if imbalance in ("balanced", "weights"):
        if imbalance == "weights":
            if sample_weight is None or len(sample_weight) != labels.size:
                raise InputError(None, "imbalance 'weights' needs one sample weight per training row")
            weights = np.asarray(sample_weight, dtype=np.float64)
        else:
            weights = np.where(labels == 1, 0.5 / n_pos, 0.5 / n_neg)
        generator = torch.Generator().manual_seed(seed)
        sampler = torch.utils.data.WeightedRandomSampler(
            torch.as_tensor(weights, dtype=torch.double), num_samples=labels.size, replacement=True, generator=generator
        )
        return None, sampler
    if imbalance == "none":
        return None, None
    raise InputError(None, f"unknown imbalance option {imbalance!r}; use pos_weight, balanced, weights or none")


def fit_early_stopping(
    model: nn.Module,
    loader,
    optim: torch.optim.Optimizer,
    loss_fn,
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    val_loss_fn,
    epochs: int,
    patience: int,
    progress=None,
) -> tuple[int, list[dict]]:
    """Train for up to ``epochs``, stop after ``patience`` epochs without a lower validation loss, and load the
    best epoch's weights; returns (best epoch, per-epoch history). ``progress`` wraps the epoch range."""
    best = (float("inf"), 0, {k: v.clone() for k, v in model.state_dict().items()})
    history = []
    n_train = len(loader.dataset)
    for epoch in progress(range(epochs)) if progress else range(epochs):
        model.train()
        total = 0.0
        for xb, yb in loader:
            optim.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            optim.step()
            total += loss.item() * len(xb)
        model.eval()
        with torch.no_grad():
            val_loss = float(val_loss_fn(model(x_val), y_val)) if len(x_val) else total / n_train
        history.append({"epoch": epoch, "train_loss": total / n_train, "val_loss": val_loss})
        if val_loss < best[0] - 1e-6:
            best = (val_loss, epoch, {k: v.clone() for k, v in model.state_dict().items()})
        elif epoch - best[1] >= patience:
            break
    model.load_state_dict(best[2])
    return best[1], history


def train_linear_head(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    config: HeadConfig = HeadConfig(),
    sample_weight: np.ndarray | None = None,
) -> TrainedClassifier:
    """Fit the head on cached embeddings; keep the best-validation-loss epoch; threshold chosen on val.

    ``sample_weight`` (per training row) is used with ``imbalance="weights"``."""
    torch.manual_seed(config.seed)
    start = time.perf_counter()
    xt = torch.as_tensor(np.asarray(x_train, dtype=np.float32))
    yt = torch.as_tensor(np.asarray(y_train, dtype=np.float32))
    xv = torch.as_tensor(np.asarray(x_val, dtype=np.float32))
    yv = torch.as_tensor(np.asarray(y_val, dtype=np.float32))
    head = _model.LinearHead(xt.shape[1], config.dropout)
    head.mean.copy_(xt.mean(0))
    head.std.copy_(xt.std(0).clamp_min(1e-6))
    pos_weight, sampler = imbalance_setup(y_train, config.imbalance, config.seed, sample_weight)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    val_loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(xt, yt),
        batch_size=config.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        generator=torch.Generator().manual_seed(config.seed),
    )
    optim = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    best_epoch, history = fit_early_stopping(
        head, loader, optim, loss_fn, xv, yv, val_loss_fn, config.epochs, config.patience
    )
    head.eval()
    with torch.no_grad():
        p_val = torch.sigmoid(head(xv)).numpy() if len(xv) else np.zeros(0)
    threshold = choose_threshold(y_val, p_val, config.threshold_rule) if len(xv) else 0.5
    return TrainedClassifier(head, threshold, time.perf_counter() - start, best_epoch, history)
