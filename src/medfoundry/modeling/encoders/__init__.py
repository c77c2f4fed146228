"""Frozen pretrained encoders behind one registry.

``build_encoder(name, weights=None, pretrained=True, **kw)`` returns a :class:`FrozenEncoder` with
``.embed(x) -> (B, D)``, ``.feature_maps(x) -> [(B, C, H, W), ...]`` (non-decreasing strides), ``.prepare``,
``.input_size``, ``.mean``, ``.std``, ``.out_dim`` and ``.weights_id``. ``tiny=True`` builds a small random
variant of the same family (for tests). Weights are read from local files only.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from medfoundry.errors import InputError
from medfoundry.modeling.encoders.base import FrozenEncoder, weights_dir

# name -> (module of the family, extra builder arguments)
ENCODERS: dict[str, tuple[str, dict]] = {
    "litemedsam": ("medfoundry.modeling.encoders.lite_medsam", {}),
    "dinov2_small": ("medfoundry.modeling.encoders.timm_models", {"name": "dinov2_small"}),
    "dinov2_base": ("medfoundry.modeling.encoders.timm_models", {"name": "dinov2_base"}),
    "convnext_base": ("medfoundry.modeling.encoders.timm_models", {"name": "convnext_base"}),
    "resnet50": ("medfoundry.modeling.encoders.timm_models", {"name": "resnet50"}),
    "rad_dino": ("medfoundry.modeling.encoders.rad_dino", {}),
}


def encoder_names() -> list[str]:
    """The registered encoder names."""
    return list(ENCODERS)


def build_encoder(name: str, weights: str | Path | None = None, pretrained: bool = True, **kw: object) -> FrozenEncoder:
    """A frozen encoder by registry name (see :data:`ENCODERS`); ``tiny=True`` for a small random variant."""
    if name not in ENCODERS:
        raise InputError(None, f"unknown encoder {name!r}; choose one of {', '.join(ENCODERS)}")
    module_name, fixed = ENCODERS[name]
    module = importlib.import_module(module_name)
    encoder = module.build(weights=weights, pretrained=pretrained, **fixed, **kw)
    encoder.build_kwargs = {k: v for k, v in kw.items() if isinstance(v, (bool, int, float, str))}
    return encoder


__all__ = ["ENCODERS", "FrozenEncoder", "build_encoder", "encoder_names", "weights_dir"]
