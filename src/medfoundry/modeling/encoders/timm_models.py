"""timm backbones (DINOv2 ViT-S/14 and ViT-B/14, ConvNeXt-Base, ResNet-50) as frozen encoders.

Models are created with ``pretrained=False`` and the weights come only from a local file the user names
(``.safetensors``, ``.bin``, ``.pth``/``.pt``) or a local Hugging Face cache folder holding one; timm's own
checkpoint filter adapts them (e.g. resamples DINOv2's 518-pixel position embedding to 224).
"""

from __future__ import annotations

from pathlib import Path

import torch

from medfoundry.errors import WeightsError
from medfoundry.io.torchfile import load_weights_file
from medfoundry.modeling.encoders.base import FrozenEncoder, missing_weights, weights_dir

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")

# registry name -> (timm model name, Hugging Face repo of the weights, is a ViT, tiny-variant kwargs)
SPECS: dict[str, tuple[str, str, bool, dict]] = {
    "dinov2_small": (
        "vit_small_patch14_dinov2",
        "timm/vit_small_patch14_dinov2.lvd142m",
        True,
        {"depth": 2, "embed_dim": 48, "num_heads": 2},
    ),
    "dinov2_base": (
        "vit_base_patch14_dinov2",
        "timm/vit_base_patch14_dinov2.lvd142m",
        True,
        {"depth": 2, "embed_dim": 64, "num_heads": 2},
    ),
    "convnext_base": (
        "convnext_base",
        "timm/convnext_base.fb_in22k_ft_in1k",
        False,
        {"depths": (1, 1, 1, 1), "dims": (8, 16, 32, 64)},
    ),
    "resnet50": ("resnet50", "timm/resnet50.a1_in1k", False, {"layers": (1, 1, 1, 1), "base_width": 8}),
}


def find_weights_file(path: str | Path) -> Path:
    """A weights file itself, or the one weights file inside a local (Hugging Face cache) folder."""
    path = Path(path).expanduser()
    if path.is_file():
        if not path.name.endswith(WEIGHT_SUFFIXES):
            raise WeightsError(f"{path}: not a weights file; expected one of {', '.join(WEIGHT_SUFFIXES)}")
        return path
    if path.is_dir():
        for suffix in WEIGHT_SUFFIXES:  # safetensors first
            found = sorted(p for p in path.rglob(f"*{suffix}") if p.is_file() or p.is_symlink())
            if found:
                return found[0]
        raise WeightsError(f"{path}: folder holds no {'/'.join(WEIGHT_SUFFIXES)} weights file")
    raise WeightsError(f"{path}: weights file or folder not found")


CLASSIFIER_PREFIXES = ("head.", "fc.", "classifier.", "head_dist.")


def read_state_dict(file: Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` / ``.bin`` / ``.pth`` file (``state_dict`` / ``model`` wrappers unpacked)."""
    if file.name.endswith(".safetensors"):
        from safetensors.torch import load_file

        try:
            state = load_file(str(file))
        except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same message
            raise WeightsError(f"{file}: cannot be read as a weights file ({exc.__class__.__name__})") from exc
    else:
        state = load_weights_file(file, "weights file")
    for key in ("state_dict", "model", "module"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise WeightsError(f"{file}: holds no state dict")
    return state


def _load_strict(model: torch.nn.Module, file: Path, timm_name: str) -> None:
    """Load ``file`` through timm's checkpoint filter; every backbone tensor must be present and fit."""
    import importlib

    state = read_state_dict(file)
    filter_fn = getattr(importlib.import_module(type(model).__module__), "checkpoint_filter_fn", None)
    if filter_fn is not None:
        try:
            state = filter_fn(state, model)
        except Exception as exc:  # noqa: BLE001 - a foreign checkpoint can fail in many ways inside the filter
            raise WeightsError(f"{file}: cannot be loaded into {timm_name} ({exc.__class__.__name__}: {exc})") from exc
    state = {k: v for k, v in state.items() if not k.startswith(CLASSIFIER_PREFIXES)}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        first = (str(exc).splitlines()[1:2] or [str(exc)[:200]])[0].strip()
        raise WeightsError(f"{file}: cannot be loaded into {timm_name} ({first})") from exc
    if missing or unexpected:
        raise WeightsError(
            f"{file}: cannot be loaded into {timm_name} ({len(missing)} tensors missing, e.g. "
            f"{missing[:2]}; {len(unexpected)} unexpected, e.g. {unexpected[:2]}); is it the right model?"
        )


class TimmEncoder(FrozenEncoder):
    """A timm model without its classifier: class token (ViT) or pooled penultimate layer (CNN)."""

    def __init__(self, name: str, model: torch.nn.Module, is_vit: bool, input_size: int) -> None:
        super().__init__()
        self.name = name
        self.model = model
        self.is_vit = is_vit
        self.input_size = input_size
        cfg = getattr(model, "pretrained_cfg", {}) or {}
        self.mean = tuple(cfg.get("mean", self.mean))
        self.std = tuple(cfg.get("std", self.std))
        self.out_dim = int(model.num_features)
        if is_vit:
            self.strides = (int(model.patch_embed.patch_size[0]),)
        else:
            self.strides = tuple(int(info["reduction"]) for info in model.feature_info)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """ViT: normalised class token; CNN: global-average-pooled last stage (``num_classes=0`` head)."""
        return self.model(x)

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """CNN: every stage's output (strides 2/4..32); ViT: the last block's patch grid (stride 14)."""
        if self.is_vit:
            return [self.model.forward_intermediates(x, indices=1, intermediates_only=True)[-1]]
        return list(self.model.forward_intermediates(x, intermediates_only=True))


def build(
    name: str,
    weights: str | Path | None = None,
    pretrained: bool = True,
    tiny: bool = False,
    input_size: int = 224,
    seed: int = 0,
    **kw: object,
) -> TimmEncoder:
    """A frozen timm encoder; weights from ``weights`` (file or folder), else ``weights_dir()/NAME.*``."""
    import timm

    from medfoundry.modeling.lite_medsam import file_sha256

    timm_name, source, is_vit, tiny_kw = SPECS[name]
    model_kw: dict = dict(kw)
    if tiny:
        model_kw = {**tiny_kw, **model_kw}
        if weights is None:
            pretrained = False
    if is_vit:
        model_kw.setdefault("img_size", input_size)
    file: Path | None = None
    if weights is not None:
        file = find_weights_file(weights)
    elif pretrained:
        candidates = [weights_dir() / f"{name}{suffix}" for suffix in WEIGHT_SUFFIXES]
        file = next((c for c in candidates if c.is_file()), None)
        if file is None:
            raise missing_weights(name, f"'model.safetensors' of {source}", f"{name}.safetensors")
    torch.manual_seed(seed)
    model = timm.create_model(timm_name, pretrained=False, num_classes=0, **model_kw)
    weights_id = None
    if file is not None:
        _load_strict(model, file, timm_name)
        weights_id = file_sha256(file)
    encoder = TimmEncoder(name, model, is_vit, input_size)
    return encoder.freeze(weights_id)
