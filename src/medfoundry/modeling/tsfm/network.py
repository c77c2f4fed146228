"""The TSFM network: residual 3D U-Net with a transformer bottleneck."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from medfoundry.errors import InputError
from medfoundry.modeling.tsfm.blocks import DownBlock, PreActResBlock, ResStage, UpBlock, _norm
from medfoundry.modeling.tsfm.bottleneck import TransformerBottleneck
from medfoundry.modeling.tsfm.presets import TSFMConfig, get_preset

HEAD_PREFIX = "head."


class TSFM(nn.Module):
    """Residual U-Net (pre-activation blocks, strided down-sampling, interpolation up-sampling, skip
    connections) with a ViT bottleneck; returns per-class logits (sigmoid per class, partial labels).
    ``checkpointing`` (:func:`set_activation_checkpointing`): the output block is recomputed in the backward pass.
    """

    checkpointing = False

    def __init__(self, config: TSFMConfig):
        super().__init__()
        self.config = config
        ch = config.channels
        self.stem = nn.Conv3d(config.in_channels, ch[0], 3, padding=1, bias=False)
        self.encoder = nn.ModuleList([ResStage(ch[0], ch[0], config.depths[0])])
        self.encoder.extend(DownBlock(ch[i - 1], config.depths[i]) for i in range(1, len(ch)))
        self.bottleneck = TransformerBottleneck(
            ch[-1], config.vit_hidden, config.vit_layers, config.vit_heads, config.vit_mlp, config.grid
        )
        # decoder stage i (0 = top) up-samples ch[i+1] -> ch[i], concatenates the skip, then resblocks
        self.ups = nn.ModuleList(UpBlock(ch[i + 1]) for i in range(len(ch) - 1))
        self.decoder = nn.ModuleList(ResStage(2 * ch[i], ch[i], config.decoder_depths[i]) for i in range(len(ch) - 1))
        self.head = nn.Sequential(_norm(ch[0]), nn.LeakyReLU(0.01), nn.Conv3d(ch[0], config.num_classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, D, H, W) -> logits (B, num_classes, D, H, W); sizes divisible by the stride."""
        stride = self.config.stride
        if any(s % stride for s in x.shape[2:]):
            raise InputError(None, f"TSFM input size {tuple(x.shape[2:])} must be divisible by {stride}")
        skips = []
        x = self.stem(x)
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        x = self.bottleneck(skips.pop())
        for i in reversed(range(len(self.ups))):
            skip = skips[i]
            x = self.ups[i](x, skip.shape[2:])
            x = self.decoder[i](torch.cat([x, skip], dim=1))
        if self.checkpointing and torch.is_grad_enabled():
            return checkpoint(self.head, x, use_reentrant=False)
        return self.head(x)


def build_tsfm(preset: str | TSFMConfig = "tiny", device: str | torch.device | None = None, **overrides) -> TSFM:
    """A TSFM network from a preset name (or config) with optional overrides; ``device='meta'`` allocates
    nothing (for counting parameters of the large presets)."""
    config = preset if isinstance(preset, TSFMConfig) else get_preset(preset, **overrides)
    if device is None:
        return TSFM(config)
    with torch.device(device):
        return TSFM(config)


def set_activation_checkpointing(model: nn.Module, on: bool = True) -> nn.Module:
    """Activation (gradient) checkpointing: every residual block, up-sampling block and ViT block of ``model`` and
    its output block keep only their input during training and recompute the rest in the backward pass (one more
    forward pass, a fraction of the activation memory; docs/tsfm.md). No effect on the weights, the outputs or
    inference."""
    for module in model.modules():
        if isinstance(module, (TSFM, PreActResBlock, UpBlock, TransformerBottleneck)):
            module.checkpointing = on
    return model


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (works on the meta device)."""
    return sum(p.numel() for p in model.parameters())
