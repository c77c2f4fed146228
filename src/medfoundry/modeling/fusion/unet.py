"""Frozen-encoder fusion for nnU-Net's 2D U-Net: nnSAM, nnConvNeXt1, nnConvNeXt2 and nnDINO.

A :class:`FusionUNet` wraps nnU-Net's own ``PlainConvUNet`` (built from the plans, unchanged) and a frozen encoder.
Each input slice is min-max scaled to [0, 1] (first channel), prepared by the encoder (resize to its input size,
grey to 3 channels, its mean/std), and the encoder's feature maps are interpolated to the size of an nnU-Net encoder
level and concatenated to that level's features; a learned 1x1 convolution + norm + non-linearity brings the
concatenation back to the level's channel count, so nnU-Net's decoder and skip connections stay as planned.

* ``sam``: LiteMedSAM's TinyViT neck (256 x 64 x 64 at 256 px; or MobileSAM's at 1024 px) at the bottleneck;
* ``convnext1``: ConvNeXt-Base deepest stage (stride 32) at the bottleneck;
* ``convnext2``: the four ConvNeXt stages (strides 4, 8, 16, 32), each at the nnU-Net level of the same stride
  relative to the patch (strides beyond the bottleneck go to the bottleneck);
* ``dino``: DINOv2-Base patch tokens (class token dropped) as a grid, at the bottleneck.

``feature_runtime`` (default ``None``: eager PyTorch) may be set to a callable mapping the prepared batch to the
selected feature maps, e.g. :func:`medfoundry.inference.encoder_backends.feature_map_runtime` (ONNX Runtime on the
CPU); the trainers and the predictor of the nnU-Net arm set it on the CPU.

The frozen encoder is not a registered sub-module: it is outside ``parameters()`` (so the optimiser never sees it)
and outside ``state_dict()`` (so checkpoints hold only nnU-Net's trained weights); it always runs in eval mode under
``torch.no_grad()``. Its identity (weights file and SHA-256) is recorded beside the checkpoint instead.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medfoundry.errors import InputError
from medfoundry.modeling.encoders.base import FrozenEncoder
from medfoundry.modeling.fusion.spec import FusionSpec


def _to_unit_range(x: torch.Tensor) -> torch.Tensor:
    """Per-slice min-max of the first channel to [0, 1] (constant slices become 0): ``(B, 1, H, W)``."""
    x = x[:, :1].float()
    flat = x.flatten(1)
    low = flat.min(dim=1).values.view(-1, 1, 1, 1)
    high = flat.max(dim=1).values.view(-1, 1, 1, 1)
    return torch.where(high > low, (x - low) / (high - low).clamp_min(1e-8), torch.zeros_like(x))


def level_strides(strides: list) -> list[int]:
    """Downsampling factor (largest axis) of each nnU-Net encoder level, from the plan's per-stage strides."""
    cumulative = np.cumprod(np.asarray(strides, dtype=np.int64).reshape(len(strides), -1), axis=0)
    return [int(c.max()) for c in cumulative]


def assign_levels(encoder_strides: list[int], unet_strides: list[int], placement: str) -> list[int]:
    """nnU-Net level for each frozen feature map: the bottleneck, or the level with the same stride."""
    bottleneck = len(unet_strides) - 1
    if placement == "bottleneck":
        return [bottleneck]
    levels = []
    for s in encoder_strides:
        same = [i for i, u in enumerate(unet_strides) if u == s]
        levels.append(same[0] if same else (bottleneck if s > unet_strides[-1] else 0))
    return levels


class FusionUNet(nn.Module):
    """nnU-Net's U-Net with a frozen encoder's features concatenated at one or several encoder levels."""

    def __init__(self, unet: nn.Module, encoder: FrozenEncoder, placement: str, unet_strides: list) -> None:
        super().__init__()
        self.unet = unet
        object.__setattr__(self, "frozen", encoder)  # deliberately unregistered: not trained, not saved
        self.feature_runtime = None  # optional faster runtime of the frozen forward (see the module docstring)
        encoder.requires_grad_(False).eval()
        self.placement = placement
        with torch.no_grad():
            probe = torch.zeros(1, 3, encoder.input_size, encoder.input_size)
            shapes = [f.shape for f in encoder.feature_maps(probe)]
        if placement == "bottleneck":
            self.feature_index = [len(shapes) - 1]
        else:
            self.feature_index = list(range(len(shapes)))
        enc_strides = [encoder.input_size // int(shapes[i][-1]) for i in self.feature_index]
        self.levels = assign_levels(enc_strides, level_strides(unet_strides), placement)
        skip_channels = list(unet.encoder.output_channels)
        conv_op = unet.encoder.conv_op
        norm_op, norm_kwargs = unet.encoder.norm_op, unet.encoder.norm_op_kwargs or {}
        nonlin, nonlin_kwargs = unet.encoder.nonlin, unet.encoder.nonlin_kwargs or {}
        fuse = {}
        for level in sorted(set(self.levels)):
            extra = sum(int(shapes[i][1]) for i, lv in zip(self.feature_index, self.levels, strict=True) if lv == level)
            channels = skip_channels[level]
            layers = [conv_op(channels + extra, channels, kernel_size=1, bias=True)]
            if norm_op is not None:
                layers.append(norm_op(channels, **norm_kwargs))
            if nonlin is not None:
                layers.append(nonlin(**nonlin_kwargs))
            fuse[str(level)] = nn.Sequential(*layers)
        self.fuse = nn.ModuleDict(fuse)

    @property
    def decoder(self) -> nn.Module:
        """nnU-Net's decoder (the trainer toggles its deep supervision)."""
        return self.unet.decoder

    @property
    def encoder(self) -> nn.Module:
        return self.unet.encoder

    def _apply(self, fn, recurse: bool = True):  # noqa: ANN001 - torch's signature
        super()._apply(fn, recurse)
        self.frozen._apply(fn)  # follow .to(device) / .float() with the unregistered encoder
        return self

    def train(self, mode: bool = True) -> FusionUNet:
        super().train(mode)
        self.frozen.eval()
        return self

    def frozen_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The frozen encoder's feature maps for a batch of nnU-Net inputs, without autograd history."""
        with torch.no_grad():
            param = next(self.frozen.parameters(), None)
            prepared = self.frozen.prepare(_to_unit_range(x))
            if self.feature_runtime is not None:
                maps = self.feature_runtime(prepared.float())
                return [m.to(x.device).float() for m in maps]
            maps = self.frozen.feature_maps(prepared if param is None else prepared.to(param.dtype))
        return [maps[i].detach().float() for i in self.feature_index]

    def forward(self, x: torch.Tensor):  # noqa: ANN201 - a tensor, or a list with deep supervision
        skips = list(self.unet.encoder(x))
        features = self.frozen_features(x)
        for level_key, block in self.fuse.items():
            level = int(level_key)
            size = skips[level].shape[2:]
            parts = [skips[level]]
            for feat, lv in zip(features, self.levels, strict=True):
                if lv == level:
                    feat = feat.to(skips[level].dtype)
                    parts.append(F.interpolate(feat, size=size, mode="bilinear", align_corners=False, antialias=True))
            skips[level] = block(torch.cat(parts, dim=1))
        return self.unet.decoder(skips)


def build_fusion_network(unet: nn.Module, spec: FusionSpec, unet_strides: list) -> FusionUNet:
    """Wrap nnU-Net's network with the frozen encoder named by ``spec``."""
    if not getattr(unet.encoder, "return_skips", False):
        raise InputError(None, "fusion needs nnU-Net's U-Net encoder with skips (PlainConvUNet / ResEnc U-Net)")
    return FusionUNet(unet, spec.build_encoder(), spec.placement, unet_strides)
