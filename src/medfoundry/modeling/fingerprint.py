"""Hashes of a module's weights, used to recognise a model again (adapter files, ONNX cache, encoder ids).

Both hash parameter and buffer names, shapes and values; they differ in order and byte view and are kept
apart because their values are stored in existing files (adapter ``base_fingerprint``, bundle ``weights_id``).
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn


def module_fingerprint(module: torch.nn.Module) -> str:
    """SHA-256 (first 16 hex digits) over a module's parameter and buffer names, shapes and values."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def state_digest(module: nn.Module) -> str:
    """SHA-256 over a module's parameters and buffers (names, shapes and values)."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
