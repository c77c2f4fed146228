"""Segmentation losses on mask logits (MONAI's): Dice + focal (class-prompt TinyViT) and BCE + 0.8 Dice
(few-exemplar LoRA paper)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from medfoundry.errors import InputError

LOSSES = ("dice+focal", "bce+dice")


def make_loss(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The loss ``name`` (one of :data:`LOSSES`) as ``loss(logits, target)`` on (B, 1, H, W) tensors."""
    from monai.losses import DiceCELoss, DiceFocalLoss

    if name == "dice+focal":
        return DiceFocalLoss(sigmoid=True, gamma=2.0, alpha=0.25, reduction="mean")
    if name == "bce+dice":
        return DiceCELoss(sigmoid=True, lambda_dice=0.8, lambda_ce=1.0, reduction="mean")
    raise InputError(None, f"unknown loss {name!r}; use one of {LOSSES}")
