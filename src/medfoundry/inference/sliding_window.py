"""Sliding-window 3D inference of TSFM with MONAI's inferer; outputs on the input image's grid."""

from __future__ import annotations

import numpy as np
import torch
from monai.inferers import sliding_window_inference

from medfoundry.data.preprocess3d import CTStats, normalise, target_shape
from medfoundry.errors import InputError
from medfoundry.io.image import MedicalImage
from medfoundry.modeling.tsfm.network import TSFM
from medfoundry.preprocessing.resample import resample_channels


@torch.no_grad()
def predict_probabilities(
    model: TSFM,
    image: MedicalImage,
    preprocessing: dict,
    overlap: float = 0.5,
    sw_batch_size: int = 1,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> np.ndarray:
    """Per-class probabilities (K, z, y, x) on ``image``'s own grid.

    The image is normalised and resampled like the training pool (``preprocessing`` from the checkpoint),
    segmented window by window (Gaussian-weighted, MONAI ``sliding_window_inference``), and the logits are
    resampled back to the input shape before the sigmoid.
    """
    if image.spatial_ndim != 3:
        raise InputError(image.path, f"TSFM segments 3D volumes; got an image of shape {image.array.shape}")
    ct = CTStats(**preprocessing["ct_stats"]) if preprocessing.get("ct_stats") else None
    target_zyx = tuple(reversed(preprocessing["spacing_xyz_mm"]))
    arr = normalise(image.array, image.modality, ct)
    shape = target_shape(arr.shape, image.spacing_zyx, target_zyx)
    x = resample_channels(torch.from_numpy(arr)[None].to(device), shape)[None]
    roi = tuple(model.config.patch_size)
    model = model.to(device).eval()
    logits = sliding_window_inference(x, roi, sw_batch_size, model, overlap=overlap, mode="gaussian", progress=progress)
    logits = resample_channels(logits[0], image.spatial_shape)[None]
    return torch.sigmoid(logits)[0].cpu().numpy()


def probabilities_to_labels(probs: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Label map (ids 1..K): the most probable class among those above ``threshold``, else 0."""
    best = probs.argmax(0)
    keep = probs.max(0) > threshold
    dtype = np.uint8 if probs.shape[0] < 255 else np.uint16
    return np.where(keep, best + 1, 0).astype(dtype)


def predict_labels(
    model: TSFM, image: MedicalImage, preprocessing: dict, threshold: float = 0.5, **kwargs
) -> MedicalImage:
    """Label map of ``image`` as a :class:`MedicalImage` with the input geometry (spacing, origin, direction)."""
    probs = predict_probabilities(model, image, preprocessing, **kwargs)
    return image.with_array(probabilities_to_labels(probs, threshold), modality="OTHER")
