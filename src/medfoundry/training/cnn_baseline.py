"""The from-scratch baseline: a 3-block CNN (conv, batch norm, ReLU, max pool) + three fully connected layers.

Trained on the stored slices with a weighted sampler so that every minibatch is balanced between normal and
abnormal slices; the best-validation-loss epoch is kept and the threshold is chosen on the validation split.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from medfoundry.training.heads import TrainedClassifier, choose_threshold, fit_early_stopping, imbalance_setup


class SliceCNN(nn.Module):
    """``(B, 1, S, S)`` slice in ``[0, 1]`` -> ``(B,)`` logit; :meth:`predict` applies the sigmoid."""

    def __init__(
        self, input_size: int = 224, channels: Sequence[int] = (16, 32, 64), hidden: Sequence[int] = (128, 32)
    ):
        super().__init__()
        blocks, c_in = [], 1
        for c_out in channels:
            blocks += [
                nn.Conv2d(c_in, c_out, 3, padding=1),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            c_in = c_out
        self.features = nn.Sequential(*blocks)
        side = input_size // 2 ** len(channels)
        self.input_size = input_size
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c_in * side * side, hidden[0]),
            nn.ReLU(inplace=True),
            nn.Dropout(0.3),
            nn.Linear(hidden[0], hidden[1]),
            nn.ReLU(inplace=True),
            nn.Linear(hidden[1], 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (the loss applies the sigmoid for numerical stability)."""
        if x.ndim == 3:
            x = x[:, None]
        return self.classifier(self.features(x)).squeeze(-1)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Sigmoid probability of 'abnormal'."""
        return torch.sigmoid(self.forward(x))


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


def _probs(model: SliceCNN, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    model.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(images), batch_size):
            out.append(model.predict(torch.from_numpy(images[i : i + batch_size])).numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def train_cnn(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    config: CNNConfig = CNNConfig(),
    progress: bool = True,
) -> TrainedClassifier:
    """Train :class:`SliceCNN` on ``(n, S, S)`` float slices in ``[0, 1]`` with balanced minibatches."""
    torch.manual_seed(config.seed)
    start = time.perf_counter()
    model = SliceCNN(x_train.shape[-1], config.channels)
    _, sampler = imbalance_setup(y_train, "balanced", config.seed)
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
    p_val = _probs(model, np.asarray(x_val, np.float32))
    threshold = choose_threshold(y_val, p_val, config.threshold_rule) if len(p_val) else 0.5
    return TrainedClassifier(model.eval(), threshold, time.perf_counter() - start, best_epoch, history)


def cnn_probabilities(model: SliceCNN, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Probabilities of 'abnormal' for ``(n, S, S)`` slices in ``[0, 1]``."""
    return _probs(model, np.asarray(images, np.float32), batch_size)
