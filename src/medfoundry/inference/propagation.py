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


def propagation_margin(size: tuple[int, int]) -> float:
    """The margin (original pixels) added around the previous slice's mask box on an (H, W) slice."""
    return BOX_MARGIN_MODEL_PX * max(size) / 256.0


def grow_box(box: np.ndarray, margin: float, size: tuple[int, int]) -> np.ndarray:
    """A box ``[x0, y0, x1, y1]`` grown by ``margin`` pixels on every side and clipped to an (H, W) image."""
    h, w = size
    grown = np.asarray(box, dtype=np.float32) + np.array([-margin, -margin, margin, margin], dtype=np.float32)
    return np.clip(grown, 0.0, np.array([w - 1.0, h - 1.0, w - 1.0, h - 1.0], dtype=np.float32))


def mask_box(mask: np.ndarray, margin: float, size: tuple[int, int]) -> np.ndarray | None:
    """Bounding box ``[x0, y0, x1, y1]`` of a 2D mask grown by ``margin`` pixels and clipped; None if empty."""
    box = tight_box(mask)
    return None if box is None else grow_box(box, margin, size)


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
    margin = propagation_margin(size)
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
