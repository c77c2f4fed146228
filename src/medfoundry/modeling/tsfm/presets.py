"""Size presets of TSFM, from ``tiny`` (CPU tests) to ``huge`` (the paper's 1.6-billion-parameter model)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from medfoundry.errors import InputError


@dataclass(frozen=True)
class TSFMConfig:
    """Everything needed to rebuild a TSFM network (stored in every checkpoint)."""

    preset: str
    width: int  # channels of the first stage; each down-sampling block doubles them
    depths: tuple[int, ...]  # residual blocks per encoder stage (the last stage feeds the bottleneck)
    vit_hidden: int
    vit_layers: int
    vit_heads: int
    vit_mlp: int
    patch_size: tuple[int, int, int] = (64, 64, 64)  # (z, y, x) training patch; sets the position grid
    in_channels: int = 1
    num_classes: int = 1
    decoder_depths: tuple[int, ...] = field(default=())  # per decoder stage, top to bottom; default = depths

    def __post_init__(self) -> None:
        object.__setattr__(self, "depths", tuple(int(d) for d in self.depths))
        object.__setattr__(self, "patch_size", tuple(int(p) for p in self.patch_size))
        dec = tuple(int(d) for d in self.decoder_depths) or self.depths[:-1]
        object.__setattr__(self, "decoder_depths", dec)
        if len(self.depths) < 2 or len(dec) != len(self.depths) - 1:
            raise InputError(None, f"TSFM preset {self.preset!r}: needs >=2 stages and one decoder depth each")
        if self.vit_hidden % self.vit_heads:
            raise InputError(None, f"TSFM preset {self.preset!r}: vit_hidden must divide by vit_heads")
        if len(self.patch_size) != 3 or any(p % self.stride or p <= 0 for p in self.patch_size):
            raise InputError(None, f"patch size {self.patch_size} must be 3 positive sizes divisible by {self.stride}")

    @property
    def stride(self) -> int:
        """Total down-sampling factor of the encoder (patch sizes must be multiples of it)."""
        return 2 ** (len(self.depths) - 1)

    @property
    def channels(self) -> tuple[int, ...]:
        """Channels of each encoder stage."""
        return tuple(self.width * 2**i for i in range(len(self.depths)))

    @property
    def grid(self) -> tuple[int, int, int]:
        """Bottleneck size (tokens per axis) for the training patch."""
        return tuple(p // self.stride for p in self.patch_size)

    def to_dict(self) -> dict:
        """A JSON-friendly dict (lists for tuples)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> TSFMConfig:
        """Inverse of :meth:`to_dict`."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


# ViT-base (12 layers, 768 wide, 12 heads) is the paper's bottleneck; smaller presets shrink it for CPUs.
PRESETS: dict[str, TSFMConfig] = {
    "tiny": TSFMConfig("tiny", 8, (1, 1, 1, 1), 64, 2, 4, 128, patch_size=(32, 32, 32)),
    "small": TSFMConfig("small", 16, (1, 1, 1, 1, 1), 192, 4, 4, 384, patch_size=(64, 64, 64)),
    "base": TSFMConfig("base", 32, (1, 2, 2, 2, 2), 768, 12, 12, 3072, patch_size=(96, 128, 128)),
    "large": TSFMConfig("large", 48, (2, 2, 2, 2, 2), 768, 12, 12, 3072, patch_size=(112, 160, 192)),
    "huge": TSFMConfig("huge", 150, (2, 3, 3, 3, 3), 768, 12, 12, 3072, patch_size=(112, 160, 192)),
}


def get_preset(name: str, **overrides) -> TSFMConfig:
    """The named preset with ``overrides`` (e.g. ``num_classes=5, patch_size=(48, 96, 96)``)."""
    if name not in PRESETS:
        raise InputError(None, f"unknown TSFM preset {name!r}; choose one of {sorted(PRESETS)}")
    return replace(PRESETS[name], **overrides)
