"""Which modality the head of a class-prompt model (:mod:`medfoundry.modeling.adapters.classprompt`) picks on
whole volumes: per slice, on evenly spaced slices that are not blank, and per volume (the majority of its slices),
against the modality the volume was read as. The head sees only the spatial mean of a slice's image embedding,
so the means are computed once (:func:`probe_volumes`) and serve every model on the same frozen encoder."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from medfoundry.errors import InputError
from medfoundry.inference.decoder_backends import TorchDecoder
from medfoundry.inference.encoder_backends import EncoderBackend, OnnxEncoder
from medfoundry.inference.predictor import LiteMedSAMPredictor
from medfoundry.inference.volume_eval import Volume3D
from medfoundry.modeling.adapters.classprompt import ClassPromptLiteMedSAM


@dataclass
class VolumeProbe:
    """A volume's probe slices and their pooled image embeddings (n, 256), with the modality it was read as."""

    case: str
    modality: str
    slices: list[int]
    pooled: torch.Tensor


def probe_slices(volume: np.ndarray, limit: int = 24) -> list[int]:
    """Up to ``limit`` evenly spaced slices of a (Z, H, W) volume, skipping blank (constant) slices."""
    live = [z for z in range(volume.shape[0]) if np.ptp(volume[z]) > 0]
    if len(live) <= limit:
        return live
    return [live[i] for i in np.linspace(0, len(live) - 1, limit).round().astype(int)]


def probe_volumes(
    model: torch.nn.Module,
    volumes: Sequence[Volume3D],
    *,
    encoder: EncoderBackend | None = None,
    limit: int = 24,
) -> list[VolumeProbe]:
    """Pooled embeddings of each volume's :func:`probe_slices` from ``model``'s encoder (``encoder``: a backend of
    it; default ONNX Runtime fp32), one slice at a time, as the segmentation path embeds them."""
    predictor = LiteMedSAMPredictor(model=model, backend=encoder or OnnxEncoder(model.image_encoder),
                                    decoder=TorchDecoder(model))  # fmt: skip
    probes = []
    for vol in volumes:
        slices = probe_slices(vol.volume, limit)
        if not slices:
            raise InputError(vol.source, f"{vol.case}: every slice is blank; nothing for the modality head to see")
        pooled = torch.cat([predictor.embed([vol.volume[z]]).mean(dim=(2, 3)) for z in slices])
        probes.append(VolumeProbe(vol.case, vol.modality, slices, pooled))
    return probes


def head_report(model: ClassPromptLiteMedSAM, probes: Sequence[VolumeProbe]) -> list[dict]:
    """Per volume: the true ``modality``, the head's majority pick ``picked`` (ties: the first in the head's class
    order), ``correct``, ``slice_accuracy`` (share of probe slices picked right), ``votes`` and ``slices``."""
    rows = []
    for probe in probes:
        picks = model.predict_modality(probe.pooled)
        votes = {m: picks.count(m) for m in model.modalities if m in picks}
        picked = max(votes, key=lambda m: (votes[m], -model.modalities.index(m)))
        rows.append({"case": probe.case, "modality": probe.modality, "picked": picked,
                     "correct": picked == probe.modality, "slice_accuracy": picks.count(probe.modality) / len(picks),
                     "votes": votes, "slices": len(picks)})  # fmt: skip
    return rows
