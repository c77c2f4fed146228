"""Adapter files: the trained parameters of one method plus its config and the identity of its base model.

An adapter file is a ``torch.save`` dict (read with ``weights_only=True``)::

    {"format": "medfoundry-adapter", "version": 1, "method": ..., "config": {...},
     "base_fingerprint": ..., "base_name": ..., "state": {name: tensor}, "meta": {...}}

Training checkpoints (``last.pt``) are adapter files with an extra ``train_state`` entry (optimiser, schedule,
history) used to resume. Loading checks the method and the base model, and refuses a mismatch with a message
that names the file.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medfoundry.errors import InputError
from medfoundry.io.atomic import atomic_path
from medfoundry.io.torchfile import load_torch_file, plain
from medfoundry.modeling.adapters.base import AdaptedLiteMedSAM
from medfoundry.modeling.fingerprint import module_fingerprint
from medfoundry.modeling.registry import ADAPTERS, adapter_module, build_adapter

FORMAT = "medfoundry-adapter"
VERSION = 1


def base_fingerprint(model: nn.Module) -> str:
    """A short hash of a base model's weights (names, shapes and values)."""
    return module_fingerprint(model)


def save_adapter(
    model: AdaptedLiteMedSAM,
    path: str | Path,
    *,
    base_fingerprint: str,
    base_name: str = "lite_medsam",
    meta: dict[str, Any] | None = None,
    train_state: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``model``'s adapter (trained parameters + config) to ``path`` atomically."""
    payload: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "method": model.method,
        "config": dict(model.config),
        "base_fingerprint": base_fingerprint,
        "base_name": base_name,
        "state": model.adapter_state(),
        "meta": dict(meta or {}),
    }
    if train_state is not None:
        payload["train_state"] = train_state
    with atomic_path(path, overwrite=overwrite) as tmp:
        torch.save(plain(payload), tmp)  # tensors and plain values only: read back with weights_only=True
    return Path(path)


def read_adapter(path: str | Path) -> dict[str, Any]:
    """The contents of an adapter file, checked to be one."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "adapter file not found")
    payload = load_torch_file(path, "adapter file")
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise InputError(path, "not a medfoundry adapter file (write one with 'medfoundry finetune')")
    if payload.get("version", 0) > VERSION:
        raise InputError(path, f"adapter format version {payload['version']} is newer than this medfoundry")
    if payload.get("method") not in ADAPTERS:
        raise InputError(path, f"unknown adaptation method {payload.get('method')!r}")
    check_adapter_config(payload["method"], payload.get("config"), path)
    return payload


def _same_kind(value: Any, default: Any) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, int):
        return isinstance(value, int)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and math.isfinite(value)
    if isinstance(default, list):
        return isinstance(value, (list, tuple)) and (not default or all(_same_kind(v, default[0]) for v in value))
    return isinstance(value, type(default))


def check_adapter_config(method: str, config: Any, path: str | Path | None = None) -> None:
    """Refuse an adapter config whose keys or value types differ from the method's defaults (e.g. a string
    ``rank``), or whose sizes are not positive, before any model is built."""
    defaults = adapter_module(method).DEFAULTS
    if not isinstance(config, dict):
        raise InputError(path, f"adapter config must be a mapping, got {type(config).__name__}")
    for key, value in config.items():
        if key not in defaults:
            raise InputError(path, f"adapter config: unknown key {key!r} for method {method!r}")
        default = defaults[key]
        if not _same_kind(value, default):
            raise InputError(
                path, f"adapter config: {key!r} must be like {default!r} ({type(default).__name__}), got {value!r}"
            )
        if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "gate_bias" and value < 0:
            raise InputError(path, f"adapter config: {key!r} must not be negative, got {value!r}")
        if key in ("rank", "hidden", "conv_size", "heads", "points") and value < 1:
            raise InputError(path, f"adapter config: {key!r} must be at least 1, got {value!r}")


def load_adapter_into(
    payload: dict[str, Any], base: nn.Module, path: str | Path | None = None, method: str | None = None
) -> AdaptedLiteMedSAM:
    """Build the adapted model for ``payload`` around ``base`` (consumed) and load the trained tensors."""
    if method is not None and payload["method"] != method:
        raise InputError(
            path,
            f"this adapter was trained with method {payload['method']!r}, not {method!r}; "
            f"use `method` {payload['method']} or another adapter",
        )
    found = base_fingerprint(base)
    if payload["base_fingerprint"] != found:
        raise InputError(
            path,
            f"this adapter was trained on another base model ({payload.get('base_name')}, weights fingerprint "
            f"{payload['base_fingerprint']}); the given weights have fingerprint {found}. "
            "Pass the `weights` it was trained on",
        )
    model = build_adapter(base, payload["method"], payload["config"])
    expected = set(model.adapter_state())
    state = payload["state"]
    if set(state) != expected:
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        raise InputError(
            path,
            f"adapter tensors do not fit the {payload['method']} model (missing {missing[:3]}, unexpected "
            f"{extra[:3]}); the file is damaged or from another version",
        )
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        line = str(exc).splitlines()[1:2] or [str(exc)[:200]]
        raise InputError(path, f"adapter tensors do not fit the model ({line[0].strip()})") from exc
    return model


def load_adapted_model(
    adapter: str | Path,
    weights: str | Path | None = None,
    *,
    base_model: nn.Module | None = None,
    method: str | None = None,
    merge: bool = True,
) -> nn.Module:
    """The base LiteMedSAM (real or given ``weights``, or ``base_model``) with the adapter in ``adapter``
    loaded, ready for :class:`~medfoundry.inference.predictor.LiteMedSAMPredictor` (LoRA merged when
    ``merge``). ``method`` refuses an adapter of another method."""
    payload = read_adapter(adapter)
    if base_model is None:
        from medfoundry.modeling.lite_medsam import build_lite_medsam, build_tiny_lite_medsam

        name = str(payload.get("base_name", ""))
        if weights is None and name.startswith("tiny-lite-medsam:"):
            base_model = build_tiny_lite_medsam(seed=int(name.split(":")[1]))  # test-only base
        else:
            base_model = build_lite_medsam(weights=weights)
    model = load_adapter_into(payload, base_model, adapter, method)
    return model.for_inference() if merge else model.eval()
