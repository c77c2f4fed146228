"""``dbsam``: DB-SAM's dual-branch adapter on a frozen LiteMedSAM encoder (Qin et al., MICCAI 2024).

* ViT branch: the frozen TinyViT with a trainable channel-attention block after each attention block,
  ``F + Conv1x1(SE(DWConv3x3(LN(F))))`` (the 1x1 conv starts at zero, so training starts from the base model).
* Convolution branch: two 3x3 and three 1x1 convolutions (batch norm + ReLU after the first four) on the input
  resized to ``conv_size``, giving shallow features on the 64 x 64 embedding grid.
* Bilateral cross-attention: deformable attention (plain PyTorch, ``grid_sample``) with the ViT features as
  queries over the conv features and vice versa, each followed by a feed-forward layer, with residuals.
* Gated fusion: ``M = sigmoid(A_d + A_s)``, output ``F_d * M + F_s * (1 - M)``; ``A`` are per-token channel
  attentions (FC squeeze, GELU, FC restore). The gate starts near 1 (ViT features) so training starts close
  to the pretrained embedding.

Simplification (documented in docs/adaptation.md): the two branches meet once, on the 256 x 64 x 64 embedding,
rather than after every ViT stage, because TinyViT's stages have different widths and resolutions.
The mask decoder trains as well.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medfoundry.errors import InputError
from medfoundry.modeling.adapters.base import AdaptedLiteMedSAM

DEFAULTS: dict[str, Any] = {"conv_size": 128, "heads": 8, "points": 4, "se_ratio": 0.25, "gate_bias": 3.0}


class LayerNorm2d(nn.Module):
    """Layer norm over the channels of a (B, C, H, W) map."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return x * self.weight[:, None, None] + self.bias[:, None, None]


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation: channel gates from globally pooled features."""

    def __init__(self, channels: int, ratio: float) -> None:
        super().__init__()
        hidden = max(4, int(channels * ratio))
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean((2, 3), keepdim=True)))))
        return x * gate


class ChannelAttention(nn.Module):
    """``F + Conv1x1(SE(DWConv3x3(LN(F))))`` on a (B, C, H, W) map; the 1x1 conv starts at zero."""

    def __init__(self, channels: int, se_ratio: float) -> None:
        super().__init__()
        self.norm = LayerNorm2d(channels)
        self.dwconv = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)
        self.se = SqueezeExcite(channels, se_ratio)
        self.pwconv = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.pwconv.weight)
        nn.init.zeros_(self.pwconv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pwconv(self.se(self.dwconv(self.norm(x))))


class BlockWithChannelAttention(nn.Module):
    """A frozen TinyViT block (tokens (B, L, C)) followed by a trainable channel-attention block."""

    def __init__(self, block: nn.Module, se_ratio: float) -> None:
        super().__init__()
        self.block = block
        self.resolution = tuple(block.input_resolution)
        self.channel_attention = ChannelAttention(block.dim, se_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block(x)
        b, length, c = x.shape
        h, w = self.resolution
        grid = x.transpose(1, 2).reshape(b, c, h, w)
        return self.channel_attention(grid).reshape(b, c, length).transpose(1, 2)


class ConvBranch(nn.Module):
    """Two 3x3 and three 1x1 convolutions; batch norm + ReLU after the first four."""

    def __init__(self, out_channels: int, input_size: int, grid: int) -> None:
        super().__init__()
        stride = max(1, input_size // grid)
        self.input_size = input_size

        def cbr(cin: int, cout: int, k: int, s: int = 1) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, k, s, k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

        self.layers = nn.Sequential(
            cbr(3, 32, 3, stride),
            cbr(32, 64, 3),
            cbr(64, 64, 1),
            cbr(64, 128, 1),
            nn.Conv2d(128, out_channels, 1),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(images, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        return self.layers(x)


class DeformableAttention(nn.Module):
    """Single-scale deformable attention (Deformable DETR) in plain PyTorch: each query samples ``points``
    learned offsets around its own position in the key/value map per head, with ``grid_sample``."""

    def __init__(self, dim: int, heads: int, points: int) -> None:
        super().__init__()
        if dim % heads:
            raise InputError(None, f"dim {dim} is not divisible by {heads} heads")
        self.heads, self.points = heads, points
        self.offsets = nn.Linear(dim, heads * points * 2)
        self.weights = nn.Linear(dim, heads * points)
        self.value = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        nn.init.zeros_(self.offsets.weight)
        angles = torch.arange(heads, dtype=torch.float32) * (2 * math.pi / heads)
        init = torch.stack([angles.cos(), angles.sin()], -1)
        init = init / init.abs().max(-1, keepdim=True).values
        init = init[:, None, :].repeat(1, points, 1) * torch.arange(1, points + 1).view(1, -1, 1)
        with torch.no_grad():
            self.offsets.bias.copy_(init.flatten())
        nn.init.zeros_(self.weights.weight)
        nn.init.zeros_(self.weights.bias)

    def forward(self, query: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """``query`` (B, C, Hq, Wq) attends to ``source`` (B, C, Hs, Ws); returns (B, C, Hq, Wq)."""
        b, c, hq, wq = query.shape
        hs, ws = source.shape[-2:]
        heads, points = self.heads, self.points
        q = query.flatten(2).transpose(1, 2)  # (B, N, C)
        n = q.shape[1]
        value = self.value(source.flatten(2).transpose(1, 2))  # (B, Ns, C)
        value = value.transpose(1, 2).reshape(b * heads, c // heads, hs, ws)
        ys = (torch.arange(hq, dtype=q.dtype, device=q.device) + 0.5) / hq * 2 - 1
        xs = (torch.arange(wq, dtype=q.dtype, device=q.device) + 0.5) / wq * 2 - 1
        ref = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1).reshape(1, n, 1, 1, 2)
        scale = torch.tensor([2.0 / ws, 2.0 / hs], dtype=q.dtype, device=q.device)
        offsets = self.offsets(q).view(b, n, heads, points, 2) * scale
        grid = (ref + offsets).permute(0, 2, 1, 3, 4).reshape(b * heads, n, points, 2)
        attn = self.weights(q).view(b, n, heads, points).softmax(-1)
        attn = attn.permute(0, 2, 1, 3).reshape(b * heads, 1, n, points)
        sampled = F.grid_sample(value, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        out = (sampled * attn).sum(-1).reshape(b, c, n).transpose(1, 2)  # (B, N, C)
        return self.out(out).transpose(1, 2).reshape(b, c, hq, wq)


class CrossAttentionLayer(nn.Module):
    """``x + DeformAttn(LN(x), LN(y))`` then ``+ FFN(LN(.))`` (two linear layers around a GELU)."""

    def __init__(self, dim: int, heads: int, points: int, zero_init: bool) -> None:
        super().__init__()
        self.norm_q, self.norm_kv, self.norm_ffn = LayerNorm2d(dim), LayerNorm2d(dim), LayerNorm2d(dim)
        self.attn = DeformableAttention(dim, heads, points)
        self.ffn = nn.Sequential(nn.Conv2d(dim, dim, 1), nn.GELU(), nn.Conv2d(dim, dim, 1))
        if zero_init:
            for layer in (self.attn.out, self.ffn[2]):
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm_q(x), self.norm_kv(y))
        return x + self.ffn(self.norm_ffn(x))


class GatedFusion(nn.Module):
    """``M = sigmoid(A_d + A_s)``; ``F_d * M + F_s * (1 - M)`` with per-token channel attentions ``A``."""

    def __init__(self, dim: int, gate_bias: float) -> None:
        super().__init__()

        def squeeze_restore() -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(dim, dim // 4, 1), nn.GELU(), nn.Conv2d(dim // 4, dim, 1))

        self.attn_d, self.attn_s = squeeze_restore(), squeeze_restore()
        with torch.no_grad():
            self.attn_d[2].bias.fill_(gate_bias)

    def forward(self, f_d: torch.Tensor, f_s: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.attn_d(f_d) + self.attn_s(f_s))
        return f_d * gate + f_s * (1 - gate)


class DualBranchEncoder(nn.Module):
    """The DB-SAM image encoder: (B, 3, 256, 256) -> (B, 256, 64, 64), like the encoder it wraps."""

    def __init__(self, vit: nn.Module, config: dict[str, Any], dim: int = 256, grid: int = 64) -> None:
        super().__init__()
        for layer in vit.layers:
            blocks = getattr(layer, "blocks", None)
            if blocks is None or not hasattr(blocks[0], "input_resolution"):
                continue  # the MBConv stage has no attention blocks
            for i, block in enumerate(blocks):
                blocks[i] = BlockWithChannelAttention(block, config["se_ratio"])
        self.vit = vit
        self.conv = ConvBranch(dim, int(config["conv_size"]), grid)
        self.cross_d = CrossAttentionLayer(dim, config["heads"], config["points"], zero_init=True)
        self.cross_s = CrossAttentionLayer(dim, config["heads"], config["points"], zero_init=False)
        self.fusion = GatedFusion(dim, float(config["gate_bias"]))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        f_d = self.vit(images)
        f_s = self.conv(images)
        f_d, f_s = self.cross_d(f_d, f_s), self.cross_s(f_s, f_d)
        return self.fusion(f_d, f_s)


def build(base: nn.Module, config: dict[str, Any], base_ptrs: set[int]) -> AdaptedLiteMedSAM:
    """Wrap the frozen encoder in the dual-branch encoder; adapters and the mask decoder train."""
    base.image_encoder = DualBranchEncoder(base.image_encoder, config)
    for name, p in base.image_encoder.named_parameters():
        p.requires_grad_(not name.startswith("vit.") or ".channel_attention." in name)
    for p in base.mask_decoder.parameters():
        p.requires_grad_(True)
    return AdaptedLiteMedSAM(base, "dbsam", config, base_ptrs)
