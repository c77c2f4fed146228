"""The two interfaces every runtime implements: an image encoder and LiteMedSAM's mask decoder.

:mod:`.encoder_backends` / :mod:`.decoder_backends` (eager PyTorch, ONNX Runtime) and :mod:`.openvino_backend`
subclass them; the factories in :mod:`.encoder_backends` pick OpenVINO only when asked, so the interfaces live
here, below both.
"""

from __future__ import annotations

import torch


class EncoderBackend:
    """Maps a (B, 3, S, S) float batch to the encoder's output (for LiteMedSAM: embeddings (B, 256, 64, 64))."""

    name = "base"

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class DecoderBackend:
    """Maps (embedding (1, 256, 64, 64), sparse (N, T, 256), dense (N, 256, 64, 64)) to logits (N, 1, 256, 256)."""

    name = "base"

    def __call__(self, embedding: torch.Tensor, sparse: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError
