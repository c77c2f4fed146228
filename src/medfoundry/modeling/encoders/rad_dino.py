"""RAD-DINO (microsoft/rad-dino, a DINOv2 ViT-B/14 trained on chest X-rays) in its Hugging Face format.

Loaded with ``transformers`` from a local folder only (``local_files_only=True``); never downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from medfoundry.errors import WeightsError
from medfoundry.modeling.encoders.base import FrozenEncoder, missing_weights, state_digest, weights_dir

SOURCE = "the Hugging Face repository microsoft/rad-dino (config.json, model.safetensors, preprocessor_config.json)"


def _config_folder(path: Path) -> Path:
    """The folder holding ``config.json``: ``path`` itself or a snapshot folder inside an HF cache folder."""
    if (path / "config.json").is_file():
        return path
    found = sorted(path.rglob("config.json"))
    if not found:
        raise WeightsError(f"{path}: no config.json found; expected a local copy of {SOURCE}")
    return found[0].parent


class RadDinoEncoder(FrozenEncoder):
    """Hugging Face ``Dinov2Model``: embedding = layer-normed class token (``pooler_output``)."""

    name = "rad_dino"

    def __init__(self, model: torch.nn.Module, input_size: int, mean: tuple, std: tuple) -> None:
        super().__init__()
        self.model = model
        self.input_size = input_size
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.out_dim = int(model.config.hidden_size)
        self.strides = (int(model.config.patch_size),)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Class token after the final layer norm: ``(B, hidden_size)``."""
        return self.model(pixel_values=x).pooler_output

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The last layer's patch tokens as one ``(B, hidden, S/14, S/14)`` map."""
        tokens = self.model(pixel_values=x).last_hidden_state[:, 1:]
        side = x.shape[-1] // self.strides[0]
        return [tokens.transpose(1, 2).reshape(x.shape[0], -1, side, side)]


def build(
    weights: str | Path | None = None,
    pretrained: bool = True,
    tiny: bool = False,
    input_size: int = 224,
    seed: int = 0,
    **_: object,
) -> RadDinoEncoder:
    """RAD-DINO from a local folder (``weights`` or ``weights_dir()/rad_dino``); ``tiny``: small random."""
    from transformers import AutoModel, Dinov2Config, Dinov2Model

    mean, std = (0.5307, 0.5307, 0.5307), (0.2583, 0.2583, 0.2583)  # rad-dino's preprocessor_config.json
    if tiny and weights is None:
        torch.manual_seed(seed)
        config = Dinov2Config(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            image_size=input_size,
            patch_size=14,
        )
        return RadDinoEncoder(Dinov2Model(config), input_size, mean, std).freeze()
    if weights is None:
        default = weights_dir() / "rad_dino"
        if not pretrained:
            raise WeightsError("rad_dino: a random model needs tiny=True; the full model is built from a folder")
        if not default.is_dir():
            raise missing_weights("rad_dino", SOURCE + " as a folder", "rad_dino/")
        weights = default
    folder = _config_folder(Path(weights).expanduser())
    processor = folder / "preprocessor_config.json"
    if processor.is_file():
        cfg = json.loads(processor.read_text())
        mean = tuple(cfg.get("image_mean", mean))
        std = tuple(cfg.get("image_std", std))
    try:
        model = AutoModel.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, RuntimeError) as exc:
        first = (str(exc).splitlines() or [exc.__class__.__name__])[0][:200]
        raise WeightsError(f"{folder}: cannot load a Hugging Face model from this folder ({first})") from exc
    if not isinstance(model, Dinov2Model):
        raise WeightsError(f"{folder}: holds a {type(model).__name__}, not the Dinov2Model of RAD-DINO")
    encoder = RadDinoEncoder(model, input_size, mean, std)
    return encoder.freeze(state_digest(model))
