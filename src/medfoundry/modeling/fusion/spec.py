"""Which frozen encoder each fusion variant uses, where its weights are and how big it runs."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from medfoundry.errors import InputError, WeightsError
from medfoundry.modeling.encoders.base import FrozenEncoder
from medfoundry.modeling.registry import FUSION_VARIANTS, NNUNET_VARIANTS, build_encoder

VARIANTS = NNUNET_VARIANTS
# variant -> (default encoder, encoders it accepts, where its features go)
VARIANT_ENCODERS = FUSION_VARIANTS
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
                "mobilesam: the MobileSAM encoder needs its weights file; pass `encoder_weights` PATH/mobile_sam.pt "
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
        if self.encoder == "litemedsam" and self.tiny:  # a small random TinyViT with LiteMedSAM's 256 px input
            from medfoundry.modeling.encoders.sam_tinyvit import build_sam_tinyvit

            return build_sam_tinyvit("litemedsam", None, tiny=True, seed=self.seed)
        kwargs: dict = {"tiny": self.tiny, "seed": self.seed}
        if self.encoder != "litemedsam":
            kwargs["input_size"] = self.resolved_input_size()
        return build_encoder(self.encoder, weights=self.weights, pretrained=True, **kwargs)
