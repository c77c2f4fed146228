"""3D segmentation slice by slice: a box on the middle slice, then the previous slice's mask box up and down."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from medfoundry.inference.embedding_cache import EmbeddingMemo
from medfoundry.inference.predictor import LiteMedSAMPredictor, Prompts
from medfoundry.preprocessing.boxes import mask_box

# margin added around the previous slice's mask box, in model pixels (MedSAM's bbox_shift)
BOX_MARGIN_MODEL_PX = 3.0


def propagation_margin(size: tuple[int, int]) -> float:
    """The margin (original pixels) added around the previous slice's mask box on an (H, W) slice."""
    return BOX_MARGIN_MODEL_PX * max(size) / 256.0


class SliceEmbeddings:
    """Embeddings of a volume's slices, computed on first use and kept (least recently used first out): an
    :class:`~medfoundry.inference.embedding_cache.EmbeddingMemo` of the predictor's encoder keyed by slice index
    (one view per volume and predictor, so the index names the slice's content and preprocessing)."""

    def __init__(
        self,
        predictor: LiteMedSAMPredictor,
        volume: np.ndarray,
        max_slices: int = 128,
        on_compute: Callable[[int], None] | None = None,
    ) -> None:
        self.predictor = predictor
        self.volume = volume
        self.memo = EmbeddingMemo(max_items=max_slices, on_compute=on_compute)

    def __getitem__(self, z: int) -> torch.Tensor:
        return self.memo.get_one(z, lambda: self.predictor.embed([self.volume[z]]))

    def __len__(self) -> int:
        """How many slices' embeddings are held now."""
        return len(self.memo)

    @property
    def computed(self) -> int:
        """How many slices the encoder has embedded."""
        return self.memo.computed


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


def interpolate_masks(a: np.ndarray, b: np.ndarray, n: int) -> list[np.ndarray]:
    """``n`` masks evenly between 2D masks ``a`` and ``b`` (exclusive), by shape-based interpolation: the weighted
    mean of the two signed distance maps (positive inside), thresholded at 0."""
    from scipy.ndimage import distance_transform_edt as edt

    def signed(m: np.ndarray) -> np.ndarray:
        return edt(m) - edt(~m)

    da, db = signed(a), signed(b)
    return [((1 - t) * da + t * db) > 0 for t in (np.arange(1, n + 1) / (n + 1))]


def _walk(predictor, embeddings, z: int, previous: np.ndarray, step: int, stop: int, out, margin, threshold) -> None:
    """Slice by slice from ``z + step`` up to ``stop`` (inclusive), each prompted with the previous mask's box plus
    ``margin``, until the mask vanishes."""
    z += step
    while (z <= stop) if step > 0 else (z >= stop):
        box = mask_box(previous, margin)
        if box is None:
            return
        mask = segment_slice(predictor, embeddings, z, Prompts(boxes=box[None]), threshold)[0]
        if not mask.any():
            return
        out[z] = mask
        previous = mask
        z += step


def propagate(
    predictor: LiteMedSAMPredictor,
    embeddings: SliceEmbeddings,
    start_z: int,
    start_mask: np.ndarray,
    z_range: tuple[int, int],
    out: np.ndarray,
    threshold: float = 0.5,
    slice_step: int = 1,
) -> None:
    """Fill ``out[z]`` beyond ``start_z`` (both ways, within ``z_range`` inclusive) until the mask vanishes.

    Each slice is prompted with the previous slice's mask box plus a margin of 3 model pixels. With ``slice_step``
    k > 1 (opt-in, fewer encoder calls) only every k-th slice is segmented, prompted with the mask k slices back
    (margin x k); the slices between get the shape-based interpolation of the two masks, and where the mask
    vanishes the last k slices are walked one by one, so the object's ends are found as without it.
    """
    if not start_mask.any():
        return
    size = start_mask.shape
    margin = propagation_margin(size)
    for step in (1, -1):
        stop = z_range[1] if step > 0 else z_range[0]
        if slice_step <= 1:
            _walk(predictor, embeddings, start_z, start_mask, step, stop, out, margin, threshold)
            continue
        z, previous = start_z, start_mask
        while z != stop:
            nxt = min(z + slice_step, stop) if step > 0 else max(z - slice_step, stop)
            box = mask_box(previous, margin * abs(nxt - z))
            mask = segment_slice(predictor, embeddings, nxt, Prompts(boxes=box[None]), threshold)[0]
            if not mask.any():  # the object ends in between: one slice at a time from the last mask
                _walk(predictor, embeddings, z, previous, step, nxt - step, out, margin, threshold)
                break
            between = range(z + step, nxt, step)
            for zi, m in zip(between, interpolate_masks(previous, mask, len(between)), strict=True):
                out[zi] = m
            out[nxt] = mask
            z, previous = nxt, mask
