"""Convolutional blocks of TSFM: pre-activation residual blocks, down-sampling and up-sampling blocks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


def _norm(channels: int) -> nn.InstanceNorm3d:
    return nn.InstanceNorm3d(channels, eps=1e-5, affine=True)


class PreActResBlock(nn.Module):
    """Two 3x3x3 (InstanceNorm, LeakyReLU, Conv) layers with a residual connection (pre-activation).

    ``stride=2`` halves the spatial size (the down-sampling block); a 1x1x1 convolution projects the
    residual path whenever the shape changes. With ``checkpointing`` (set by
    :func:`~medfoundry.modeling.tsfm.network.set_activation_checkpointing`) training keeps only the block's input
    and recomputes its inside during the backward pass.
    """

    checkpointing = False

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, negative_slope: float = 0.01):
        super().__init__()
        self.norm1 = _norm(in_channels)
        self.conv1 = nn.Conv3d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.norm2 = _norm(out_channels)
        self.conv2 = nn.Conv3d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.act = nn.LeakyReLU(negative_slope, inplace=False)
        self.skip: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.skip = nn.Conv3d(in_channels, out_channels, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, Cin, D, H, W) -> (B, Cout, D/stride, H/stride, W/stride)."""
        if self.checkpointing and torch.is_grad_enabled():
            return checkpoint(self._forward, x, use_reentrant=False)
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.act(self.norm1(x)))
        out = self.conv2(self.act(self.norm2(out)))
        return out + self.skip(x)


class ResStage(nn.Sequential):
    """A stack of ``depth`` residual blocks; the first one may change channels and stride."""

    def __init__(self, in_channels: int, out_channels: int, depth: int, stride: int = 1):
        blocks = [PreActResBlock(in_channels, out_channels, stride=stride)]
        blocks += [PreActResBlock(out_channels, out_channels) for _ in range(depth - 1)]
        super().__init__(*blocks)


class DownBlock(ResStage):
    """Down-sampling stage: a strided residual block halving the size and doubling the channels, then more."""

    def __init__(self, in_channels: int, depth: int):
        super().__init__(in_channels, in_channels * 2, depth, stride=2)


class UpBlock(nn.Module):
    """Interpolation up-sampling (x2) followed by a 1x1x1 convolution halving the channels (``checkpointing``:
    recomputed in the backward pass)."""

    checkpointing = False

    def __init__(self, in_channels: int, mode: str = "trilinear"):
        super().__init__()
        self.mode = mode
        self.proj = nn.Conv3d(in_channels, in_channels // 2, 1, bias=False)

    def forward(self, x: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
        """Up-sample ``x`` to ``size`` (the skip's spatial size) and halve its channels."""
        if self.checkpointing and torch.is_grad_enabled():
            return checkpoint(self._forward, x, tuple(size), use_reentrant=False)
        return self._forward(x, size)

    def _forward(self, x: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
        align = False if self.mode in ("trilinear", "linear") else None
        return self.proj(F.interpolate(x, size=size, mode=self.mode, align_corners=align))
