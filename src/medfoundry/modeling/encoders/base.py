"""The common frozen-encoder interface shared by every encoder family.

An encoder takes a batch ``(B, 3, S, S)`` with ``S = input_size`` that is already normalised with its own
``mean`` / ``std`` (:meth:`FrozenEncoder.prepare` does that from ``[0, 1]`` slices), and gives

* :meth:`FrozenEncoder.embed` -> ``(B, out_dim)``: the class token for ViTs, the pooled penultimate layer for
  CNNs, the pooled neck output for LiteMedSAM;
* :meth:`FrozenEncoder.feature_maps` -> ``[(B, C_i, H_i, W_i), ...]`` at non-decreasing strides
  (listed in ``strides``).

Parameters never require gradients and the module stays in eval mode even inside a model that is trained.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from medfoundry.errors import WeightsError
from medfoundry.modeling.fingerprint import state_digest

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def weights_dir() -> Path:
    """Folder searched for weights: ``$MEDFOUNDRY_WEIGHTS`` or ``~/.cache/medfoundry/weights``."""
    env = os.environ.get("MEDFOUNDRY_WEIGHTS")
    return Path(env) if env else Path.home() / ".cache" / "medfoundry" / "weights"


def missing_weights(name: str, source: str, filename: str) -> WeightsError:
    """The error for a pretrained encoder without a local weights file: says which file to put where."""
    target = weights_dir() / filename
    return WeightsError(
        f"{name}: pretrained weights not found; download {source} and put it at {target} "
        f"(or set MEDFOUNDRY_WEIGHTS to its folder), or pass `weights` PATH; medfoundry never downloads"
    )


class FrozenEncoder(nn.Module):
    """Base class: a pretrained backbone with frozen weights and the attributes the pipeline needs."""

    name: str = "encoder"
    input_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    out_dim: int = 0
    strides: tuple[int, ...] = ()

    def __init__(self) -> None:
        super().__init__()
        self.weights_id = ""  # sha256 of the weights file, or of the random initial state
        self.build_kwargs: dict = {}  # extra arguments given to build_encoder (tiny, input_size, seed...)

    def freeze(self, weights_id: str | None = None) -> FrozenEncoder:
        """Turn off gradients, switch to eval mode and record the weights' identity."""
        for param in self.parameters():
            param.requires_grad_(False)
        self.weights_id = weights_id or state_digest(self)
        return self.eval()

    def train(self, mode: bool = True) -> FrozenEncoder:  # noqa: ARG002 - a frozen encoder never trains
        """Stay in eval mode (batch-norm statistics and dropout frozen) whatever the caller asks."""
        return super().train(False)

    def prepare(self, slices: torch.Tensor) -> torch.Tensor:
        """``(B, H, W)``, ``(B, 1, H, W)`` or ``(B, 3, H, W)`` in ``[0, 1]`` -> normalised ``(B, 3, S, S)``.

        Resized to ``input_size`` (bilinear), grey replicated to 3 channels, then ``(x - mean) / std``.
        """
        x = slices.float()
        if x.ndim == 3:
            x = x[:, None]
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"expected (B, H, W), (B, 1, H, W) or (B, 3, H, W) slices, got {tuple(x.shape)}")
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised ``(B, 3, S, S)`` -> ``(B, out_dim)``."""
        raise NotImplementedError

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Normalised ``(B, 3, S, S)`` -> feature maps at the strides in ``strides``."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`embed`."""
        return self.embed(x)

    def describe(self) -> dict:
        """Name, sizes and weights identity, as stored in cache manifests and model bundles."""
        return {
            "name": self.name,
            "input_size": self.input_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "out_dim": self.out_dim,
            "weights_id": self.weights_id,
            "build_kwargs": dict(self.build_kwargs),
        }
