"""Turn 2D samples into model-space training inputs with MedSAM's preprocessing and the augmentations:
flips (p = 0.5 each axis), box prompts drawn like the ones 3D inference gives, box jitter and random positive
points drawn from the mask.

Box prompts (:func:`prompt_box`), per sample, as ``medfoundry segment --box X0 Y0 Z0 X1 Y1 Z1`` prompts a
volume (the 3D box's in-plane extent on the middle slice, then each slice with the previous slice's mask box
plus the propagation margin): ``box3d`` the in-plane extent of the object's 3D bounding box, loosened half of
the time as a hand-drawn box would be (loose on slices away from the object's widest); ``neighbour`` the
object's box on an adjacent slice plus the propagation margin; ``exact`` the slice's own tight box. Volume
samples without the 3D context (2D files) always get ``exact``.

Box jitter follows MedSAM: 0 to ``jitter`` px added per side on its 1024-pixel input (``jitter = 20``), i.e. the
same share of the image on LiteMedSAM's 256-pixel input (0 to 5 px there, as in LiteMedSAM's own training). On
PET, jitter measured in 256-pixel units (four times larger) made the fine-tuned decoder worse than zero-shot on
exact boxes (docs/adaptation.md)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from medfoundry.data.slices2d import Sample2D
from medfoundry.inference.propagation import propagation_margin
from medfoundry.preprocessing.boxes import grow_box, loosen_box
from medfoundry.preprocessing.resize import IMAGE_SIZE, ResizeLongestSide, image_to_tensor

PROMPT_KINDS = ("exact", "box3d", "neighbour")


@dataclass
class Augment:
    """Augmentation settings; ``Augment.none()`` gives the plain validation inputs (exact boxes)."""

    flip_prob: float = 0.5
    jitter: float = 20.0  # px per side on MedSAM's 1024-pixel frame
    point_prob: float = 0.5
    points: int = 1
    box3d_prob: float = 0.0  # share of samples prompted with the 3D box's in-plane extent
    neighbour_prob: float = 0.0  # share prompted with an adjacent slice's box + the propagation margin

    @classmethod
    def none(cls) -> Augment:
        return cls(flip_prob=0.0, jitter=0, point_prob=0.0, points=0)


def prompt_kind(sample: Sample2D, rng: np.random.Generator, augment: Augment) -> str:
    """Which box prompt a sample gets (one of :data:`PROMPT_KINDS`), drawn with the ``augment`` shares; kinds
    the sample has no context for fall back to ``box3d`` (no neighbour) or ``exact`` (no 3D box)."""
    u = rng.random()
    kind = "exact"
    if u < augment.box3d_prob:
        kind = "box3d"
    elif u < augment.box3d_prob + augment.neighbour_prob:
        kind = "neighbour"
    if kind == "neighbour" and not sample.neighbour_boxes:
        kind = "box3d"
    if kind == "box3d" and sample.box3d is None:
        kind = "exact"
    return kind


def prompt_box(sample: Sample2D, kind: str, rng: np.random.Generator) -> np.ndarray:
    """The box ``[x0, y0, x1, y1]`` (original pixels) of prompt ``kind`` for a sample (see the module doc)."""
    size = tuple(sample.mask.shape[:2])
    if kind == "box3d":
        box = sample.box3d
        return loosen_box(box, rng, size) if rng.random() < 0.5 else np.asarray(box, dtype=np.float32)
    if kind == "neighbour":
        near = sample.neighbour_boxes[int(rng.integers(len(sample.neighbour_boxes)))]
        return grow_box(near, propagation_margin(size), size)
    return sample.box()


def flip_box(box: np.ndarray, code: int, size: tuple[int, int]) -> np.ndarray:
    """A box ``[x0, y0, x1, y1]`` on an (H, W) image flipped as ``code`` says (see :func:`flip_code`)."""
    h, w = size
    x0, y0, x1, y1 = np.asarray(box, dtype=np.float32).tolist()
    if code & 1:
        x0, x1 = w - 1 - x1, w - 1 - x0
    if code & 2:
        y0, y1 = h - 1 - y1, h - 1 - y0
    return np.array([x0, y0, x1, y1], dtype=np.float32)


def flip_code(rng: np.random.Generator, flip_prob: float) -> int:
    """0 = none, 1 = left-right, 2 = up-down, 3 = both."""
    return int(rng.random() < flip_prob) + 2 * int(rng.random() < flip_prob)


def apply_flip(array: np.ndarray, code: int) -> np.ndarray:
    """``array`` (H, W[, C]) flipped as ``code`` says."""
    if code & 1:
        array = array[:, ::-1]
    if code & 2:
        array = array[::-1]
    return np.ascontiguousarray(array)


def model_image(image: np.ndarray) -> torch.Tensor:
    """(H, W[, 3]) intensities in [0, 1] -> (3, 256, 256) model input (resize longest side, min-max, pad)."""
    tensor = image_to_tensor(image)
    return ResizeLongestSide(tuple(image.shape[:2])).apply_images(tensor)[0]


def model_images(samples: list[Sample2D], flips: list[int]) -> torch.Tensor:
    """(B, 3, 256, 256) model inputs of ``samples`` flipped as ``flips`` say."""
    return torch.stack([model_image(apply_flip(s.image, c)) for s, c in zip(samples, flips, strict=True)])


def model_mask(mask: np.ndarray) -> torch.Tensor:
    """(H, W) boolean mask -> (1, 256, 256) float target in model space (nearest resize, zero padding)."""
    t = ResizeLongestSide(tuple(mask.shape[:2]))
    h, w = t.resized_size
    m = torch.from_numpy(mask.astype(np.float32))[None, None]
    m = F.interpolate(m, size=(h, w), mode="nearest")
    return F.pad(m, (0, t.target - w, 0, t.target - h))[0]


MEDSAM_FRAME = 1024  # MedSAM's input size, the frame in which ``jitter`` is given


def jitter_box(box: np.ndarray, rng: np.random.Generator, jitter: float, limit: tuple[int, int]) -> np.ndarray:
    """Enlarge each side of a model-space box by a random 0..``jitter`` px of MedSAM's 1024-pixel frame,
    clipped to ``limit`` = (h, w) of the resized image."""
    if jitter <= 0:
        return box
    scale = IMAGE_SIZE / MEDSAM_FRAME
    shift = rng.uniform(0.0, jitter * scale, size=4).astype(np.float32)
    h, w = limit
    return np.array(
        [max(0, box[0] - shift[0]), max(0, box[1] - shift[1]), min(w - 1, box[2] + shift[2]),
         min(h - 1, box[3] + shift[3])],
        dtype=np.float32,
    )  # fmt: skip


def random_points(mask: torch.Tensor, rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` random positive points ``(x, y)`` inside a (1, H, W) mask."""
    ys, xs = torch.nonzero(mask[0] > 0.5, as_tuple=True)
    if len(ys) == 0:
        return np.zeros((n, 2), dtype=np.float32)
    idx = rng.integers(0, len(ys), size=n)
    return np.stack([xs[idx].numpy(), ys[idx].numpy()], -1).astype(np.float32)


def prepare_targets(
    samples: list[Sample2D], flips: list[int], rng: np.random.Generator, augment: Augment, with_points: bool
) -> dict[str, torch.Tensor | None]:
    """Targets and prompts for a batch whose images use ``flips``: (B, 1, 256, 256) targets, (B, 1, 4) boxes
    (kinds drawn by :func:`prompt_kind`, mapped to model space as the predictor maps them, then jittered) and,
    with ``with_points``, (B, P, 2) positive points with labels."""
    targets, boxes, points = [], [], []
    for sample, code in zip(samples, flips, strict=True):
        size = tuple(sample.mask.shape[:2])
        target = model_mask(apply_flip(sample.mask, code))
        t = ResizeLongestSide(size)
        targets.append(target)
        box = flip_box(prompt_box(sample, prompt_kind(sample, rng, augment), rng), code, size)
        boxes.append(jitter_box(t.apply_boxes(box)[0], rng, augment.jitter, t.resized_size))
        if with_points:
            points.append(random_points(target, rng, augment.points))
    out: dict[str, torch.Tensor | None] = {
        "targets": torch.stack(targets),
        "boxes": torch.from_numpy(np.stack(boxes))[:, None, :],
        "points": None,
        "point_labels": None,
    }
    if with_points:
        out["points"] = torch.from_numpy(np.stack(points))
        out["point_labels"] = torch.ones(out["points"].shape[:2], dtype=torch.long)
    return out
