"""Training of the from-scratch baseline (:class:`medfoundry.modeling.slice_cnn.SliceCNN`).

Trained on the stored slices with a weighted sampler so that every minibatch is balanced between normal and
abnormal slices; the best-validation-loss epoch is kept and the threshold is chosen on the validation split.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from medfoundry._deprecated import moved
from medfoundry.modeling import slice_cnn as _model
from medfoundry.modeling.heads import predict_proba as _predict_proba
from medfoundry.training.heads import TrainedClassifier, choose_threshold, fit_early_stopping, imbalance_setup

# moved to medfoundry.modeling.slice_cnn; the old name works for one more release
__getattr__ = moved(__name__, "medfoundry.modeling.slice_cnn", ("SliceCNN",))


@dataclass
class CNNConfig:
    """Training options of the CNN baseline."""

    epochs: int = 12
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    channels: tuple[int, ...] = (16, 32, 64)
    threshold_rule: str = "f1"
    seed: int = 0
    patience: int = 5


def train_cnn(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    config: CNNConfig = CNNConfig(),
    progress: bool = True,
    sample_weight: np.ndarray | None = None,
) -> TrainedClassifier:
    """Train :class:`SliceCNN` on ``(n, S, S)`` float slices in ``[0, 1]`` with balanced minibatches
    (drawn in proportion to ``sample_weight`` when given, e.g. the whole-body dataset's weights)."""
    torch.manual_seed(config.seed)
    start = time.perf_counter()
    model = _model.SliceCNN(x_train.shape[-1], config.channels)
    mode = "balanced" if sample_weight is None else "weights"
    _, sampler = imbalance_setup(y_train, mode, config.seed, sample_weight)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(
            torch.from_numpy(np.asarray(x_train, np.float32)), torch.as_tensor(y_train).float()
        ),
        batch_size=config.batch_size,
        sampler=sampler,
    )
    optim = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    loss_fn = nn.BCEWithLogitsLoss()
    xv = torch.from_numpy(np.asarray(x_val, np.float32))
    yv = torch.as_tensor(y_val).float()
    best_epoch, history = fit_early_stopping(
        model,
        loader,
        optim,
        loss_fn,
        xv,
        yv,
        loss_fn,
        config.epochs,
        config.patience,
        progress=lambda r: tqdm(r, desc="training CNN", unit="epoch", disable=not progress),
    )
    p_val = _predict_proba(model, np.asarray(x_val, np.float32), batch_size=64)
    threshold = choose_threshold(y_val, p_val, config.threshold_rule) if len(p_val) else 0.5
    return TrainedClassifier(model.eval(), threshold, time.perf_counter() - start, best_epoch, history)


def cnn_probabilities(model: nn.Module, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Probabilities of 'abnormal' for ``(n, S, S)`` slices in ``[0, 1]``."""
    return _predict_proba(model, np.asarray(images, np.float32), batch_size)
