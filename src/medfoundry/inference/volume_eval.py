"""Score a model the way users segment volumes: one 3D box per object (the reference's bounding box, and a
loose variant), the middle slice first, then propagation (:func:`medfoundry.inference.segment.segment_array`,
the code path of ``medfoundry segment --box X0 Y0 Z0 X1 Y1 Z1``); 3D DSC / NSD per patient. The 2D score
(each foreground slice with its own exact box) comes from the same embeddings as a second column.

Embeddings are fp32 for every model, so methods are compared at one precision: ONNX Runtime fp32 (``onnx``, what
``medfoundry segment`` runs by default; LoRA merged first, as loading an adapter does) or eager PyTorch
(``torch``); the two agree to ~3e-6 in the embedding. :func:`fp32_encoder` keeps them per slice (an
:class:`~medfoundry.inference.embedding_cache.EmbeddingMemo`, keyed by the model-space input's content): a frozen
encoder's embeddings serve every epoch and every model that shares it.
"""

from __future__ import annotations

import copy
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from medfoundry._deprecated import moved
from medfoundry.data.slices2d import case_name, find_pairs, read_pair
from medfoundry.errors import InputError
from medfoundry.evaluation import dice, nsd
from medfoundry.inference.decoder_backends import TorchDecoder
from medfoundry.inference.embedding_cache import EmbeddingMemo
from medfoundry.inference.encoder_backends import OnnxEncoder, TorchEncoder
from medfoundry.inference.predictor import LiteMedSAMPredictor
from medfoundry.inference.prompts import ObjectPrompt
from medfoundry.inference.segment import segment_array
from medfoundry.preprocessing.boxes import loosen_box, mask_box
from medfoundry.preprocessing.intensity import IntensityWindow, normalize_intensity

# the memoising encoder has one home now; the old name works for one more release
__getattr__ = moved(__name__, "medfoundry.inference.embedding_cache", {"MemoEncoder": "EmbeddingMemo"})


@dataclass
class Volume3D:
    """A labelled volume ready for the predictor: intensities in [0, 1] (Z, H, W), label map, spacing (z, y, x)."""

    case: str
    volume: np.ndarray
    labels: np.ndarray
    spacing: tuple[float, float, float]
    modality: str = "OTHER"
    source: str | None = None


def load_volumes(
    root: str | Path,
    *,
    image_glob: str | None = None,
    cases: Sequence[str] | None = None,
    modality: str | None = None,
    window: IntensityWindow | None = None,
) -> list[Volume3D]:
    """The labelled 3D volumes (with foreground) of a training folder, optionally only the listed ``cases``
    (2D files and empty masks are skipped, so the list may be shorter); intensities normalised as
    ``medfoundry segment`` does."""
    root = Path(root)
    wanted = None if cases is None else set(cases)
    out = []
    for image_path, mask_path in find_pairs(root, image_glob):
        case = case_name(image_path, root)
        if wanted is not None and case not in wanted:
            continue
        vol = read_volume(image_path, mask_path, case, modality=modality, window=window)
        if vol is not None:
            out.append(vol)
    return out


def read_volume(
    image_path: str | Path,
    mask_path: str | Path,
    case: str,
    *,
    modality: str | None = None,
    window: IntensityWindow | None = None,
) -> Volume3D | None:
    """One labelled volume from an image and its label map (any pair :func:`read_pair` reads, e.g. a BraTS
    ``*_flair`` / ``*_label`` pair or a MedSAM npz twice), windowed for its modality (``modality``, else what the
    file name says); ``None`` for a 2D image or an empty mask."""
    image, mask = read_pair(Path(image_path), Path(mask_path), modality)
    if image.spatial_ndim != 3 or not mask.array.any():
        return None
    return Volume3D(case, normalize_intensity(image, window), np.asarray(mask.array), image.spacing_zyx,
                    image.modality, str(image_path))  # fmt: skip


def fp32_encoder(model: torch.nn.Module, backend: str = "torch") -> EmbeddingMemo:
    """A memoising fp32 encoder of ``model``: eager PyTorch (``torch``) or ONNX Runtime (``onnx``; a model with
    unmerged LoRA layers is exported from a merged copy, so training goes on untouched)."""
    if backend == "torch":
        return EmbeddingMemo(TorchEncoder(model.image_encoder))
    if backend != "onnx":
        raise InputError(None, f"unknown evaluation backend {backend!r}; use 'torch' or 'onnx'")
    if any("lora_" in name for name, _ in model.named_parameters()):
        model = copy.deepcopy(model).for_inference()
    return EmbeddingMemo(OnnxEncoder(model.image_encoder))


def volume_predictor(model: torch.nn.Module, memo: EmbeddingMemo | None = None) -> LiteMedSAMPredictor:
    """A predictor on ``model`` (an adapted model as it trains, or a loaded one) with an fp32 encoder and the eager
    decoder; ``memo`` lends the embeddings of a frozen encoder computed before (default: eager PyTorch)."""
    encoder = memo if memo is not None else fp32_encoder(model)
    return LiteMedSAMPredictor(model=model, backend=encoder, decoder=TorchDecoder(model))


def reference_box(mask: np.ndarray) -> np.ndarray:
    """The 3D box ``[x0, y0, z0, x1, y1, z1]`` of a non-empty (Z, H, W) mask: what a user gives for the object."""
    box = mask_box(mask)
    if box is None:
        raise InputError(None, "empty mask has no box")
    return box


def loose_box(mask: np.ndarray, case: str, seed: int = 0) -> np.ndarray:
    """A loose 3D box for ``mask`` (in-plane sides out by 0-10 % of the size + 0-1 voxel, z by 0-1 slice),
    seeded by ``seed`` and the case name, so a patient gets the same box in every run and split."""
    rng = np.random.default_rng([seed, zlib.crc32(case.encode())])
    return loosen_box(reference_box(mask), rng, mask.shape)


def score_volume(
    predictor: LiteMedSAMPredictor,
    vol: Volume3D,
    *,
    tolerance_mm: float = 2.0,
    loose: bool = True,
    slices2d: bool = False,
    seed: int = 0,
) -> dict[str, float]:
    """3D DSC / NSD of one volume from the reference 3D box (``dsc``, ``nsd``) and, with ``loose``, a loose box
    (``dsc_loose``, ``nsd_loose``); with ``slices2d`` also ``dsc2d`` / ``nsd2d``, the mean over foreground
    slices of each slice segmented with its own exact box. Objects (label values) are averaged."""
    scores: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        scores.setdefault(key, []).append(value)

    for value in [int(v) for v in np.unique(vol.labels) if v > 0]:
        ref = vol.labels == value
        boxes = {"": reference_box(ref)}
        if loose:
            boxes["_loose"] = loose_box(ref, f"{vol.case}:{value}", seed)
        for suffix, box in boxes.items():
            pred = segment_array(predictor, vol.volume, [ObjectPrompt(box=box)], is_3d=True, path=vol.source) > 0
            add("dsc" + suffix, dice(pred, ref))
            add("nsd" + suffix, nsd(pred, ref, vol.spacing, tolerance_mm))
        if slices2d:
            zs = np.flatnonzero(ref.reshape(ref.shape[0], -1).any(axis=1))
            per_slice = {int(z): mask_box(ref[z]) for z in zs}
            pred = segment_array(predictor, vol.volume, [ObjectPrompt(slice_boxes=per_slice)], is_3d=True) > 0
            add("dsc2d", float(np.mean([dice(pred[z], ref[z]) for z in zs])))
            add("nsd2d", float(np.mean([nsd(pred[z], ref[z], vol.spacing[1:], tolerance_mm) for z in zs])))
    return {k: float(np.mean(v)) for k, v in scores.items()}


@torch.no_grad()
def evaluate_volumes(
    model: torch.nn.Module,
    volumes: Sequence[Volume3D],
    *,
    tolerance_mm: float = 2.0,
    loose: bool = True,
    slices2d: bool = False,
    memo: EmbeddingMemo | None = None,
    seed: int = 0,
    progress: bool = False,
) -> dict:
    """Score ``model`` on ``volumes`` through the 3D path (:func:`score_volume`): the mean of each score
    (``dsc``, ``nsd``, ``dsc_loose``, ...) and ``per_case``, one dict per volume with its ``case``."""
    if not volumes:
        raise InputError(None, "no volumes to evaluate")
    was_training = model.training
    predictor = volume_predictor(model, memo)
    per_case = []
    for vol in tqdm(volumes, desc="3D validation", unit="volume", disable=not progress, leave=False):
        per_case.append({"case": vol.case, **score_volume(predictor, vol, tolerance_mm=tolerance_mm, loose=loose,
                                                          slices2d=slices2d, seed=seed)})  # fmt: skip
    model.train(was_training)
    keys = [k for k in per_case[0] if k != "case"]
    return {**{k: float(np.mean([c[k] for c in per_case])) for k in keys}, "per_case": per_case}
