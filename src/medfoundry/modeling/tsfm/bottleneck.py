"""The transformer bottleneck of TSFM: ViT encoder layers over the voxels of the lowest-resolution map."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.blocks import TransformerBlock
from torch import nn
from torch.utils.checkpoint import checkpoint


class TransformerBottleneck(nn.Module):
    """Project (B, C, d, h, w) to tokens of ``hidden`` width, run ``layers`` ViT blocks, project back.

    A learnable position embedding is held for ``grid`` (the bottleneck size of the training patch) and
    trilinearly resized when the input grid differs, so the same weights serve other patch sizes.
    ``checkpointing``: recompute each ViT block in the backward pass instead of keeping its activations.
    """

    checkpointing = False

    def __init__(
        self,
        channels: int,
        hidden: int,
        layers: int,
        heads: int,
        mlp: int,
        grid: tuple[int, int, int],
        dropout: float = 0.0,
    ):
        super().__init__()
        self.grid = tuple(int(g) for g in grid)
        self.proj_in = nn.Conv3d(channels, hidden, 1)
        self.pos = nn.Parameter(torch.zeros(1, hidden, *self.grid))
        nn.init.trunc_normal_(self.pos, std=0.02)
        self.blocks = nn.ModuleList(
            TransformerBlock(hidden, mlp, heads, dropout_rate=dropout, qkv_bias=True) for _ in range(layers)
        )
        for block in self.blocks:  # MONAI builds this norm even without cross-attention; unused weights
            block.norm_cross_attn = nn.Identity()  # would stall DistributedDataParallel's gradient buckets
        self.norm = nn.LayerNorm(hidden)
        self.proj_out = nn.Conv3d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, d, h, w) -> (B, C, d, h, w), with a residual connection around the transformer."""
        b, _, d, h, w = x.shape
        pos = self.pos
        if tuple(pos.shape[2:]) != (d, h, w):
            pos = F.interpolate(pos, size=(d, h, w), mode="trilinear", align_corners=False)
        tokens = (self.proj_in(x) + pos).flatten(2).transpose(1, 2)  # (B, N, hidden)
        for block in self.blocks:
            if self.checkpointing and torch.is_grad_enabled():
                tokens = checkpoint(block, tokens, use_reentrant=False)
            else:
                tokens = block(tokens)
        tokens = self.norm(tokens).transpose(1, 2).reshape(b, -1, d, h, w)
        return x + self.proj_out(tokens)
