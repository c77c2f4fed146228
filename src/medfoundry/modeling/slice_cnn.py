"""The from-scratch slice classifier: a 3-block CNN (conv, batch norm, ReLU, max pool) + three fully connected
layers."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


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
