"""``lora``: low-rank adapters (peft LoRA) on the encoder attention projections and the mask decoder.

The TinyViT attention ``qkv`` / ``proj`` Linear layers and the mask decoder's attention ``q_proj`` / ``k_proj``
/ ``v_proj`` / ``out_proj`` get rank-``r`` bypasses; everything else stays frozen. For inference the bypasses are
merged into the base weights, so the adapted model is a plain LiteMedSAM (ONNX encoder backends work as is).

Gradients of the encoder LoRA layers flow back through the frozen encoder, so its activations are kept for
backward. ``checkpoint_stages`` (default: stage 2, the six 64x64 blocks, the most activation memory per FLOP)
recomputes those stages in backward instead: on a 2-core CPU with batch 2 this took peak memory from 0.52x to
0.41-0.43x of full fine-tuning; the step-time change stayed inside that machine's run-to-run noise
(docs/adaptation.md).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from medfoundry.errors import InputError
from medfoundry.modeling.adapters.base import AdaptedLiteMedSAM, checkpoint_stages

DEFAULTS: dict[str, Any] = {
    "rank": 4,
    "alpha": 8,
    "dropout": 0.0,
    "encoder": True,
    "decoder": True,
    "checkpoint_stages": [2],
}

ENCODER_PATTERN = r"image_encoder\.layers\.\d+\.blocks\.\d+\.attn\.(qkv|proj)"
DECODER_PATTERN = r"mask_decoder\.transformer\..*(q_proj|k_proj|v_proj|out_proj)"


def target_pattern(config: dict[str, Any]) -> str:
    """The peft ``target_modules`` regular expression for the configured parts."""
    parts = ([ENCODER_PATTERN] if config["encoder"] else []) + ([DECODER_PATTERN] if config["decoder"] else [])
    if not parts:
        raise InputError(None, "LoRA needs encoder=True and/or decoder=True")
    return "|".join(f"({p})" for p in parts)


class LoraLiteMedSAM(AdaptedLiteMedSAM):
    """LiteMedSAM with peft LoRA layers injected in place."""

    def for_inference(self) -> nn.Module:
        """Merge the low-rank updates into the base Linear layers and drop the LoRA modules."""
        from peft.tuners.lora import LoraLayer

        for parent in list(self.modules()):
            for child_name, child in list(parent.named_children()):
                if isinstance(child, LoraLayer):
                    child.merge()
                    setattr(parent, child_name, child.get_base_layer())
        return self.eval()


def build(base: nn.Module, config: dict[str, Any], base_ptrs: set[int]) -> AdaptedLiteMedSAM:
    """Inject LoRA (rank ``config['rank']``) into the frozen base; only the LoRA matrices train."""
    from peft import LoraConfig, inject_adapter_in_model

    lora_config = LoraConfig(
        r=int(config["rank"]),
        lora_alpha=float(config["alpha"]),
        lora_dropout=float(config["dropout"]),
        target_modules=target_pattern(config),
        bias="none",
    )
    base = inject_adapter_in_model(lora_config, base)
    for name, p in base.named_parameters():
        p.requires_grad_("lora_" in name)
    if config["encoder"]:
        checkpoint_stages(base.image_encoder, config["checkpoint_stages"])
    return LoraLiteMedSAM(base, "lora", config, base_ptrs)
