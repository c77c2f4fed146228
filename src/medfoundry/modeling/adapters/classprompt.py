"""``classprompt``: class-prompt TinyViT (a modality head and a learned class prompt; after the paper
"Class-prompt Tiny-VIT" in the MedSAM-on-laptop challenge).

A 3-layer MLP (256 -> 256 -> 256 -> K, ReLU) on the globally pooled image embedding predicts the modality; the
learned embedding of a modality is added to the sparse prompt embedding (the box tokens) before the mask
decoder. Head, class embeddings and mask decoder train jointly (segmentation loss + modality cross-entropy),
with the true modality as the prompt during training. At inference the prompt is the modality the user gives
(:meth:`ClassPromptLiteMedSAM.set_modality_prompt`) or, by default, the head's choice. Everything lives in the
mask-decoder wrapper, so the encoder (and its ONNX export) is the base model's.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from medfoundry.errors import InputError
from medfoundry.io.image import MODALITIES
from medfoundry.modeling.adapters.base import AdaptedLiteMedSAM

DEFAULTS: dict[str, Any] = {"modalities": list(MODALITIES), "hidden": 256, "modality_weight": 1.0}


class ClassPromptDecoder(nn.Module):
    """The mask decoder with a modality head and class prompts; same call signature as SAM's MaskDecoder."""

    def __init__(self, decoder: nn.Module, modalities: list[str], hidden: int, dim: int = 256) -> None:
        super().__init__()
        self.decoder = decoder
        self.modalities = list(modalities)
        k = len(self.modalities)
        self.head = nn.Sequential(
            nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, k)
        )
        self.class_embed = nn.Embedding(k, dim)
        nn.init.zeros_(self.class_embed.weight)
        # fixed class prompt at inference (-1: the head chooses); a buffer, so exported graphs see it
        self.register_buffer("prompt_modality", torch.tensor(-1, dtype=torch.long))
        self.last_modality_logits: torch.Tensor | None = None

    def modality_logits(self, image_embeddings: torch.Tensor) -> torch.Tensor:
        """The head's (B, K) modality logits for (B, 256, H, W) image embeddings or their (B, 256) spatial means."""
        pooled = image_embeddings.mean(dim=(2, 3)) if image_embeddings.ndim == 4 else image_embeddings
        return self.head(pooled)

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
        modality: torch.Tensor | None = None,
    ):
        logits = self.modality_logits(image_embeddings)
        self.last_modality_logits = logits
        if modality is None:
            chosen = logits.argmax(dim=1)
            modality = torch.where(self.prompt_modality >= 0, self.prompt_modality.expand_as(chosen), chosen)
        prompt = self.class_embed(modality.to(logits.device))[:, None, :]
        if prompt.shape[0] != sparse_prompt_embeddings.shape[0] and prompt.shape[0] != 1:
            raise ValueError("one modality per image or per prompt set")
        return self.decoder(
            image_embeddings=image_embeddings,
            image_pe=image_pe,
            sparse_prompt_embeddings=sparse_prompt_embeddings + prompt,
            dense_prompt_embeddings=dense_prompt_embeddings,
            multimask_output=multimask_output,
        )


class ClassPromptLiteMedSAM(AdaptedLiteMedSAM):
    """LiteMedSAM with a modality head and class prompts in front of its mask decoder."""

    @property
    def modalities(self) -> list[str]:
        """The modality names the head predicts, in class-index order."""
        return self.mask_decoder.modalities

    def modality_index(self, name: str) -> int:
        """Class index of a modality name; unknown names raise :class:`InputError`."""
        name = name.upper()
        if name not in self.modalities:
            raise InputError(None, f"modality {name!r} is not one this adapter knows ({', '.join(self.modalities)})")
        return self.modalities.index(name)

    def set_modality_prompt(self, name: str | None) -> None:
        """Use modality ``name`` as the class prompt at inference (``None``: let the head choose)."""
        self.mask_decoder.prompt_modality.fill_(-1 if name is None else self.modality_index(name))

    @torch.no_grad()
    def predict_modality(self, image_embeddings: torch.Tensor) -> list[str]:
        """The modality the head picks for each image: (B, 256, H, W) embeddings or their (B, 256) means."""
        logits = self.mask_decoder.modality_logits(image_embeddings)
        return [self.modalities[int(i)] for i in logits.argmax(dim=1)]

    def decoder_kwargs(self, modality: torch.Tensor | None) -> dict[str, Any]:
        return {"modality": modality}

    def extra_outputs(self) -> dict[str, torch.Tensor]:
        return {"modality_logits": self.mask_decoder.last_modality_logits}


def build(base: nn.Module, config: dict[str, Any], base_ptrs: set[int]) -> AdaptedLiteMedSAM:
    """Put the modality head and class prompts in front of the (trainable) mask decoder."""
    modalities = [m.upper() for m in config["modalities"]]
    if len(set(modalities)) != len(modalities) or len(modalities) < 1:
        raise InputError(None, f"modalities must be distinct names, got {modalities}")
    config["modalities"] = modalities
    for p in base.mask_decoder.parameters():
        p.requires_grad_(True)
    base.mask_decoder = ClassPromptDecoder(base.mask_decoder, modalities, int(config["hidden"]))
    return ClassPromptLiteMedSAM(base, "classprompt", config, base_ptrs)
