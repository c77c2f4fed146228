"""TSFM checkpoints: weights plus model config, label table and preprocessing; loading for transfer."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from medfoundry.errors import InputError
from medfoundry.io.atomic import atomic_path
from medfoundry.io.torchfile import load_torch_file, plain
from medfoundry.modeling.tsfm.network import HEAD_PREFIX, TSFM
from medfoundry.modeling.tsfm.presets import TSFMConfig

CHECKPOINT_FORMAT = "medfoundry-tsfm/1"


def save_checkpoint(path: str | Path, payload: dict, overwrite: bool = True) -> Path:
    """Write ``payload`` (see :func:`make_payload`) atomically."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def make_payload(
    model: TSFM, classes: list[str], preprocessing: dict, weights: dict[str, torch.Tensor] | None = None, **extra
) -> dict:
    """The checkpoint dict: format tag, model config, class names (label ids 1..K), preprocessing, weights
    (``model``'s own, or the full ``weights`` gathered from a sharded model).

    Everything but the tensors is stored as plain dicts / lists / str / int / float, so the file loads with
    ``torch.load(..., weights_only=True)``.
    """
    return {
        "format": CHECKPOINT_FORMAT,
        "config": plain(model.config.to_dict()),
        "classes": [str(c) for c in classes],
        "preprocessing": plain(dict(preprocessing)),
        "model": {k: v.detach().cpu() for k, v in (model.state_dict() if weights is None else weights).items()},
        **plain(extra),
    }


def load_checkpoint(path: str | Path) -> dict:
    """Read a TSFM checkpoint; :class:`InputError` if it is missing, unreadable or not a TSFM checkpoint."""
    path = Path(path)
    ckpt = load_torch_file(path, "TSFM checkpoint")
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise InputError(path, "not a medfoundry TSFM checkpoint")
    return ckpt


def check_preset(ckpt: dict, preset: str | None, path: str | Path | None = None) -> TSFMConfig:
    """The checkpoint's config; :class:`InputError` if ``preset`` is given and differs from it."""
    config = TSFMConfig.from_dict(ckpt["config"])
    if preset is not None and preset != config.preset:
        raise InputError(path, f"checkpoint preset {config.preset!r} does not match the requested preset {preset!r}")
    return config


def _fit_position(pos: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
    if tuple(pos.shape[2:]) == tuple(grid):
        return pos
    return F.interpolate(pos, size=tuple(grid), mode="trilinear", align_corners=False)


def _load_state(model: TSFM, state: dict, path, skip_head: bool) -> None:
    own = model.state_dict()
    state = dict(state)
    key = "bottleneck.pos"
    if key in state and key in own:
        state[key] = _fit_position(state[key], tuple(own[key].shape[2:]))
    wanted = {k for k in own if not (skip_head and k.startswith(HEAD_PREFIX + "2."))}
    missing = sorted(wanted - set(state))
    bad = [k for k in wanted & set(state) if tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or bad:
        raise InputError(
            path,
            f"weights do not fit the {model.config.preset!r} network (missing {missing[:3]}, shape {bad[:3]})",
        )
    model.load_state_dict({k: state[k] for k in wanted}, strict=not skip_head)


def model_from_checkpoint(ckpt: dict, path: str | Path | None = None, preset: str | None = None) -> TSFM:
    """The trained network of a checkpoint (eval mode)."""
    config = check_preset(ckpt, preset, path)
    model = TSFM(config)
    _load_state(model, ckpt["model"], path, skip_head=False)
    return model.eval()


def model_for_transfer(
    ckpt: dict,
    num_classes: int,
    path: str | Path | None = None,
    preset: str | None = None,
    patch_size: tuple[int, int, int] | None = None,
) -> TSFM:
    """A network with the checkpoint's backbone and a freshly initialised head for ``num_classes`` classes.

    The bottleneck position embedding is resized when ``patch_size`` gives a different token grid.
    """
    config = check_preset(ckpt, preset, path)
    overrides = {"num_classes": num_classes}
    if patch_size is not None:
        overrides["patch_size"] = tuple(patch_size)
    from dataclasses import replace

    model = TSFM(replace(config, **overrides))
    _load_state(model, ckpt["model"], path, skip_head=True)
    return model
