"""``decoder``: MedSAM-style fine-tuning; only the mask decoder trains (encoder and prompt encoder frozen)."""

from __future__ import annotations

from typing import Any

from torch import nn

from medfoundry.modeling.adapters.base import AdaptedLiteMedSAM

DEFAULTS: dict[str, Any] = {}


def build(base: nn.Module, config: dict[str, Any], base_ptrs: set[int]) -> AdaptedLiteMedSAM:
    """The base model with a trainable mask decoder."""
    for p in base.mask_decoder.parameters():
        p.requires_grad_(True)
    return AdaptedLiteMedSAM(base, "decoder", config, base_ptrs)
