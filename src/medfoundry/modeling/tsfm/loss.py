"""Partial-label loss of the dataset pool: per-class BCE + batch Dice over the classes a case annotates."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PartialLabelBCEDiceLoss(nn.Module):
    """BCE + soft Dice per class, counted only where a case's source annotates that class (MultiTalent).

    ``logits`` and ``target`` are (B, K, D, H, W); ``annotated`` is a (B, K) boolean mask. A class that a
    case's source does not label contributes nothing for that case, so an organ dataset does not teach the
    model that tumours are background. The Dice of each class is computed over all annotating cases of the
    batch together (a batch Dice), and averaged over the classes annotated anywhere in the batch.
    """

    def __init__(self, smooth: float = 1e-5, dice_weight: float = 1.0, bce_weight: float = 1.0):
        super().__init__()
        self.smooth = smooth
        self.dice_weight = dice_weight
        self.bce_weight = bce_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor, annotated: torch.Tensor) -> torch.Tensor:
        """A scalar loss; zero (with a gradient path) when the batch annotates no class at all."""
        if logits.shape != target.shape or annotated.shape != logits.shape[:2]:
            raise ValueError(
                f"shapes differ: logits {tuple(logits.shape)}, target {tuple(target.shape)}, "
                f"annotated {tuple(annotated.shape)}"
            )
        target = target.to(logits.dtype)
        weight = annotated.to(logits.dtype)[:, :, None, None, None]  # (B, K, 1, 1, 1)
        n_vox = logits[0, 0].numel()
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        denom = weight.sum() * n_vox
        bce_term = (bce * weight).sum() / denom.clamp_min(1.0)

        prob = torch.sigmoid(logits) * weight
        tgt = target * weight
        dims = (0, 2, 3, 4)
        inter = (prob * tgt).sum(dims)
        card = prob.sum(dims) + tgt.sum(dims)
        dice = (2 * inter + self.smooth) / (card + self.smooth)  # (K,)
        present = annotated.any(0)
        if present.any():
            dice_term = 1.0 - dice[present].mean()
        else:
            dice_term = logits.sum() * 0.0
        return self.bce_weight * bce_term + self.dice_weight * dice_term
