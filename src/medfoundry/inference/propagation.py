"""3D segmentation slice by slice: a box on the middle slice, then the previous slice's mask box up and down."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import numpy as np
import torch

from medfoundry.inference.predictor import LiteMedSAMPredictor, Prompts
from medfoundry.preprocessing.boxes import mask_box as tight_box

# margin added around the previous slice's mask box, in model pixels (MedSAM's bbox_shift)
BOX_MARGIN_MODEL_PX = 3.0


def mask_box(mask: np.ndarray, margin: float, size: tuple[int, int]) -> np.ndarray | None:
    """Bounding box ``[x0, y0, x1, y1]`` of a 2D mask grown by ``margin`` pixels and clipped; None if empty."""
    box = tight_box(mask)
    if box is None:
        return None
    h, w = size
    grown = box + np.array([-margin, -margin, margin, margin], dtype=np.float32)
    return np.clip(grown, 0.0, np.array([w - 1.0, h - 1.0, w - 1.0, h - 1.0], dtype=np.float32))


class SliceEmbeddings:
    """Embeddings of a volume's slices, computed on first use and kept (least recently used first out)."""

    def __init__(
        self,
        predictor: LiteMedSAMPredictor,
        volume: np.ndarray,
        max_slices: int = 128,
        on_compute: Callable[[int], None] | None = None,
    ) -> None:
        self.predictor = predictor
        self.volume = volume
        self.max_slices = max_slices
        self.on_compute = on_compute
        self._cache: OrderedDict[int, torch.Tensor] = OrderedDict()
        self.computed = 0

    def __getitem__(self, z: int) -> torch.Tensor:
        if z in self._cache:
            self._cache.move_to_end(z)
            return self._cache[z]
        embedding = self.predictor.embed([self.volume[z]])
        self.computed += 1
        if self.on_compute is not None:
            self.on_compute(z)
        self._cache[z] = embedding
        if len(self._cache) > self.max_slices:
            self._cache.popitem(last=False)
        return embedding


def segment_slice(
    predictor: LiteMedSAMPredictor,
    embeddings: SliceEmbeddings,
    z: int,
    prompts: Prompts,
    threshold: float = 0.5,
) -> np.ndarray:
    """Boolean masks (N, H, W) for the prompts on slice ``z``."""
    predictor.set_image(embeddings.volume[z], embedding=embeddings[z])
    return predictor.predict(prompts, threshold=threshold)


def propagate(
    predictor: LiteMedSAMPredictor,
    embeddings: SliceEmbeddings,
    start_z: int,
    start_mask: np.ndarray,
    z_range: tuple[int, int],
    out: np.ndarray,
    threshold: float = 0.5,
) -> None:
    """Fill ``out[z]`` beyond ``start_z`` (both ways, within ``z_range`` inclusive) until the mask vanishes.

    Each slice is prompted with the previous slice's mask box plus a margin of 3 model pixels.
    """
    size = start_mask.shape
    margin = BOX_MARGIN_MODEL_PX * max(size) / 256.0
    for step in (1, -1):
        previous = start_mask
        z = start_z + step
        while z_range[0] <= z <= z_range[1]:
            box = mask_box(previous, margin, size)
            if box is None:
                break
            mask = segment_slice(predictor, embeddings, z, Prompts(boxes=box[None]), threshold)[0]
            if not mask.any():
                break
            out[z] = mask
            previous = mask
            z += step
