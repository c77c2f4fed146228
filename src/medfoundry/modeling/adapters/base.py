"""The shared interface of the adaptation methods: one wrapper model, frozen base, trainable adapter.

Every method builds an :class:`AdaptedLiteMedSAM` from a pretrained LiteMedSAM. It keeps the attributes the
predictor uses (``image_encoder``, ``prompt_encoder``, ``mask_decoder``), so an adapted model drops into
:class:`medfoundry.inference.predictor.LiteMedSAMPredictor` unchanged. Base parameters are frozen; only the
parameters a method marks trainable (plus the buffers it adds, e.g. batch-norm statistics) go into adapter files.
"""

from __future__ import annotations

import types
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from medfoundry.errors import InputError


class AdaptedLiteMedSAM(nn.Module):
    """A LiteMedSAM whose base weights are frozen, with a method's trainable parts.

    ``forward(images, boxes, points=None, point_labels=None, modality=None)`` takes model-space inputs
    ((B, 3, 256, 256) images, (B, 1, 4) boxes, (B, P, 2) points) and returns a dict with ``logits``
    (B, 1, 256, 256) and, for methods with a modality head, ``modality_logits`` (B, K).
    """

    def __init__(self, base: nn.Module, method: str, config: dict[str, Any], base_ptrs: set[int]) -> None:
        super().__init__()
        self.image_encoder = base.image_encoder
        self.prompt_encoder = base.prompt_encoder
        self.mask_decoder = base.mask_decoder
        self.method = method
        self.config = dict(config)
        self._base_ptrs = set(base_ptrs)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Image embeddings (B, 256, 64, 64) of model-space images."""
        return self.image_encoder(images)

    def decode(
        self,
        embeddings: torch.Tensor,
        boxes: torch.Tensor | None,
        points: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
        modality: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Logits (B, 1, 256, 256) from embeddings and prompts (one prompt set per image), plus any extra
        outputs of the method (see :meth:`extra_outputs`)."""
        pts = None if points is None else (points, point_labels)
        sparse, dense = self.prompt_encoder(points=pts, boxes=boxes, masks=None)
        logits, _ = self.mask_decoder(
            image_embeddings=embeddings,
            image_pe=self.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
            **self.decoder_kwargs(modality),
        )
        return {"logits": logits, **self.extra_outputs()}

    def decoder_kwargs(self, modality: torch.Tensor | None) -> dict[str, Any]:
        """Extra keyword arguments a method's mask decoder takes (none for the plain decoder)."""
        return {}

    def extra_outputs(self) -> dict[str, torch.Tensor]:
        """Outputs beyond the logits that the last :meth:`decode` produced (none by default)."""
        return {}

    def forward(
        self,
        images: torch.Tensor,
        boxes: torch.Tensor | None,
        points: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
        modality: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        return self.decode(self.embed(images), boxes, points, point_labels, modality)

    @property
    def encoder_trainable(self) -> bool:
        """True when gradients must flow through the image encoder (embeddings cannot be cached)."""
        return any(p.requires_grad for p in self.image_encoder.parameters())

    def adapter_state(self) -> dict[str, torch.Tensor]:
        """The trained parameters and the buffers the method added: what an adapter file holds."""
        state = self.state_dict()
        trainable = {name for name, p in self.named_parameters() if p.requires_grad}
        return {
            k: v.detach().clone()
            for k, v in state.items()
            if k in trainable or (v.numel() and v.data_ptr() not in self._base_ptrs)
        }

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters that the optimiser updates."""
        return [p for p in self.parameters() if p.requires_grad]

    def count_parameters(self) -> tuple[int, int]:
        """(trainable, total) parameter counts."""
        total = sum(p.numel() for p in self.parameters())
        return sum(p.numel() for p in self.trainable_parameters()), total

    def train(self, mode: bool = True) -> AdaptedLiteMedSAM:
        """Train mode for the trainable parts only: frozen batch-norm layers keep their running statistics."""
        super().train(mode)
        if mode:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    own = list(module.parameters(recurse=False))
                    if not own or not any(p.requires_grad for p in own):
                        module.eval()
        return self

    def for_inference(self) -> nn.Module:
        """The model to hand to the predictor (methods may merge weights here)."""
        return self.eval()


def freeze(module: nn.Module) -> nn.Module:
    """Switch off gradients for every parameter of ``module``."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def _checkpointed_stage_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A TinyViT stage's forward that recomputes each block's activations in backward while training."""
    recompute = self.training and torch.is_grad_enabled()
    for block in self.blocks:
        x = checkpoint(block, x, use_reentrant=False) if recompute else block(x)
    return self.downsample(x) if self.downsample is not None else x


def checkpoint_stages(encoder: nn.Module, stages: Iterable[int]) -> None:
    """Gradient checkpointing for the given TinyViT ``encoder.layers`` stages: their activations are recomputed
    in backward instead of stored (less memory, one extra forward of those stages). Parameter names do not change.
    """
    layers = encoder.layers
    for stage in stages:
        if not 0 <= stage < len(layers):
            raise InputError(
                None, f"checkpoint stage {stage} does not exist; the encoder has stages 0..{len(layers) - 1}"
            )
        layer = layers[stage]
        layer.forward = types.MethodType(_checkpointed_stage_forward, layer)


def base_tensor_ptrs(base: nn.Module) -> set[int]:
    """Storage addresses of the base model's parameters and buffers (to tell adapter tensors apart)."""
    return {t.data_ptr() for t in base.state_dict().values() if t.numel()}
