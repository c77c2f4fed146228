"""Dropout + one linear layer on frozen embeddings (logistic regression), standardised by stored mean / std."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class LinearHead(nn.Module):
    """``sigmoid(linear(dropout((x - mean) / std)))``; :meth:`forward` returns the raw logit.

    Weights and bias start at zero, as logistic regression does (the problem is convex: nothing to break by
    symmetry): the first epochs move the head along the difference of the class means, never along a random
    direction, so that early stopping at an early epoch (an uninformative validation set) hands back a weak head,
    not a random one (a 3-feature head kept at its first epoch had ranked a test scan at ROC-AUC 0.29)."""

    def __init__(self, dim: int, dropout: float = 0.2) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(dim, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, dim)`` embeddings -> ``(B,)`` logits."""
        return self.linear(self.dropout((x.float() - self.mean) / self.std)).squeeze(-1)


def predict_proba(model: nn.Module, x: np.ndarray | torch.Tensor, batch_size: int = 4096) -> np.ndarray:
    """Sigmoid probabilities of a logit model (a head or the slice CNN) on ``x``, in eval mode without gradients."""
    model.eval()
    x = torch.as_tensor(np.asarray(x, dtype=np.float32)) if not isinstance(x, torch.Tensor) else x.float()
    out = []
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            out.append(torch.sigmoid(model(x[i : i + batch_size])).numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)
