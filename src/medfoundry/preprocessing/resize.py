"""MedSAM's geometric transform to model space and its exact inverse.

An (H, W) slice is resized so that its longest side is 256 (aspect ratio kept), min-max normalised to [0, 1],
and zero-padded at the bottom and right to 256 x 256. Boxes and points are scaled by the same factor. Logits come
back by cropping the padded area and resizing bilinearly to (H, W).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from medfoundry.errors import InputError

IMAGE_SIZE = 256  # LiteMedSAM's input side, in pixels


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W) or (H, W, 3) array -> (1, C, H, W) float tensor."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 2:
        return torch.from_numpy(image)[None, None]
    if image.ndim == 3 and image.shape[-1] in (3, 4):
        return torch.from_numpy(np.ascontiguousarray(image[..., :3].transpose(2, 0, 1)))[None]
    raise InputError(None, f"expected an (H, W) or (H, W, 3) image, got shape {image.shape}")


@dataclass(frozen=True)
class ResizeLongestSide:
    """The transform for one original size ``(H, W)`` to a ``target`` x ``target`` model input."""

    original_size: tuple[int, int]
    target: int = IMAGE_SIZE

    @property
    def scale(self) -> float:
        """Factor from original pixel coordinates to model coordinates."""
        return self.target / max(self.original_size)

    @property
    def resized_size(self) -> tuple[int, int]:
        """(h, w) of the resized image before padding."""
        h, w = self.original_size
        return int(h * self.scale + 0.5), int(w * self.scale + 0.5)

    def apply_images(self, slices: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) float slices -> (B, 3, target, target) model input, min-max normalised per slice."""
        if slices.shape[-2:] != self.original_size:
            raise ValueError(f"expected slices of size {self.original_size}, got {tuple(slices.shape[-2:])}")
        x = slices.float()
        if x.shape[-2:] != self.resized_size:
            x = F.interpolate(x, size=self.resized_size, mode="bilinear", align_corners=False, antialias=True)
        flat = x.reshape(x.shape[0], -1)
        low = flat.min(dim=1).values.view(-1, 1, 1, 1)
        high = flat.max(dim=1).values.view(-1, 1, 1, 1)
        x = (x - low) / torch.clamp(high - low, min=1e-8)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        h, w = self.resized_size
        return F.pad(x, (0, self.target - w, 0, self.target - h)).contiguous()

    def apply_boxes(self, boxes: np.ndarray) -> np.ndarray:
        """(N, 4) boxes ``[x0, y0, x1, y1]`` of inclusive pixel indices (a mask's bounding box) -> model coordinates.

        The far edges map to the last model pixel that the pixel ``x1`` / ``y1`` covers, ``(x1 + 1) * s - 1``, which
        is the box MedSAM computes from a mask resized to 256; near edges map to ``x0 * s``.
        """
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4) * self.scale
        far = boxes[:, 2:] + (self.scale - 1.0)
        boxes[:, 2:] = np.maximum(far, boxes[:, :2])
        return boxes

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        """(..., 2) points ``(x, y)`` in original pixels -> model coordinates."""
        return np.asarray(coords, dtype=np.float32) * self.scale

    def logits_to_original(self, logits: torch.Tensor) -> torch.Tensor:
        """(N, 1, target, target) logits -> (N, 1, H, W): crop the padding, resize bilinearly."""
        h, w = self.resized_size
        logits = logits[..., :h, :w]
        return F.interpolate(logits, size=self.original_size, mode="bilinear", align_corners=False)
