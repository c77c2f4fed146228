"""A segment-anything style predictor for LiteMedSAM: embed an image once, decode many prompts in one batch."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from medfoundry.errors import InputError
from medfoundry.inference.decoder_backends import DecoderBackend, OnnxDecoder, TorchDecoder
from medfoundry.inference.encoder_backends import (
    BACKENDS,
    FAST_BACKEND,
    EncoderBackend,
    make_encoder_backend,
    resolve_backend,
)
from medfoundry.modeling.lite_medsam import build_lite_medsam
from medfoundry.preprocessing.resize import ResizeLongestSide, image_to_tensor


@dataclass
class Prompts:
    """Prompts for one or more objects on one 2D image, in original pixel coordinates.

    ``boxes``: (N, 4) ``[x0, y0, x1, y1]``; ``points``: (N, P, 2) ``(x, y)`` with ``point_labels`` (N, P),
    1 = positive, 0 = negative. Give boxes, points or both (then with the same N).
    """

    boxes: np.ndarray | None = None
    points: np.ndarray | None = None
    point_labels: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.boxes is not None:
            self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        if self.points is not None:
            self.points = np.asarray(self.points, dtype=np.float32)
            if self.points.ndim == 2:
                self.points = self.points[None]
            if self.point_labels is None:
                self.point_labels = np.ones(self.points.shape[:2], dtype=np.int64)
            self.point_labels = np.asarray(self.point_labels, dtype=np.int64).reshape(self.points.shape[:2])
        if self.boxes is None and self.points is None:
            raise InputError(None, "give at least one box or point prompt")
        if self.boxes is not None and self.points is not None and len(self.boxes) != len(self.points):
            raise InputError(None, f"{len(self.boxes)} boxes but {len(self.points)} point sets: give one per object")

    def __len__(self) -> int:
        return len(self.boxes) if self.boxes is not None else len(self.points)

    def validate(self, size: tuple[int, int], path: str | None = None) -> None:
        """Raise :class:`InputError` for a box with x1 < x0 / y1 < y0, or a prompt outside an (H, W) image."""
        h, w = size
        if self.boxes is not None:
            for box in self.boxes:
                x0, y0, x1, y1 = box.tolist()
                if x1 < x0 or y1 < y0:
                    raise InputError(path, f"box {fmt_box(box)} has x1 < x0 or y1 < y0")
                if x1 < 0 or y1 < 0 or x0 > w - 1 or y0 > h - 1:
                    raise InputError(path, f"box {fmt_box(box)} lies outside the {w} x {h} (x by y) image")
        if self.points is not None:
            xy = self.points.reshape(-1, 2)
            bad = (xy[:, 0] < 0) | (xy[:, 1] < 0) | (xy[:, 0] > w - 1) | (xy[:, 1] > h - 1)
            if bad.any():
                raise InputError(path, f"point {xy[bad][0].tolist()} lies outside the {w} x {h} (x by y) image")


__all__ = ["BACKENDS", "FAST_BACKEND", "LiteMedSAMPredictor", "Prompts", "make_backends"]


def make_backends(model: torch.nn.Module, name: str = "fast") -> tuple[EncoderBackend, DecoderBackend]:
    """Encoder and decoder runtimes for ``name``: ``torch`` (fp32 eager), ``onnx`` (ONNX Runtime fp32),
    ``onnx-int8`` (int8 per-channel encoder weights, fp32 decoder), ``openvino`` (the exported encoder on OpenVINO
    fp32, ONNX Runtime decoder: the two decoders run at the same speed), ``openvino-bf16`` (the encoder on OpenVINO
    in bfloat16, fp32 ONNX Runtime decoder; opt-in, masks move) or ``fast`` (the quickest that keeps DSC >= 0.99
    against fp32 PyTorch: ``openvino`` where installed, else ``onnx``)."""
    name = resolve_backend(name)
    encoder = make_encoder_backend(model.image_encoder, name)
    return encoder, TorchDecoder(model) if name == "torch" else OnnxDecoder(model)


def fmt_box(box) -> str:
    """A box as ``[x0, y0, x1, y1]`` with compact numbers, for messages."""
    return "[" + ", ".join(f"{v:g}" for v in np.asarray(box).tolist()) + "]"


class LiteMedSAMPredictor:
    """LiteMedSAM on one 2D image at a time.

    ``set_image`` runs the image encoder once; ``predict`` decodes any number of box and/or point prompts for that
    image in one batch. Images are grey ``(H, W)`` or colour ``(H, W, 3)`` arrays already mapped to [0, 1] by
    :func:`medfoundry.preprocessing.normalize_intensity`.
    """

    def __init__(
        self,
        model: torch.nn.Module | None = None,
        weights: str | None = None,
        backend: str | EncoderBackend = "fast",
        decoder: DecoderBackend | None = None,
    ) -> None:
        self.model = model if model is not None else build_lite_medsam(weights=weights)
        self.model.eval()
        if isinstance(backend, EncoderBackend):
            self.encoder, self.decoder = backend, decoder or TorchDecoder(self.model)
        else:
            self.encoder, self.decoder = make_backends(self.model, backend)
        self.reset_image()

    def reset_image(self) -> None:
        """Forget the current image and its embedding."""
        self.embedding: torch.Tensor | None = None
        self.transform: ResizeLongestSide | None = None

    to_tensor = staticmethod(image_to_tensor)

    def embed(self, images: list[np.ndarray]) -> torch.Tensor:
        """Image embeddings (B, 256, 64, 64) for a list of same-size 2D images."""
        batch = torch.cat([self.to_tensor(im) for im in images])
        transform = ResizeLongestSide(tuple(batch.shape[-2:]))
        with torch.inference_mode():
            return self.encoder(transform.apply_images(batch))

    def set_image(self, image: np.ndarray, embedding: torch.Tensor | None = None) -> None:
        """Compute (or take) the embedding of one 2D image for the prompts that follow."""
        image = np.asarray(image)
        size = tuple(image.shape[:2])
        self.transform = ResizeLongestSide(size)  # type: ignore[arg-type]
        self.embedding = embedding if embedding is not None else self.embed([image])

    def predict_logits(self, prompts: Prompts) -> torch.Tensor:
        """Low-resolution (256 x 256, padded model space) logits (N, 1, 256, 256) for the current image."""
        if self.embedding is None or self.transform is None:
            raise RuntimeError("call set_image() before predict()")
        t = self.transform
        boxes = None if prompts.boxes is None else torch.from_numpy(t.apply_boxes(prompts.boxes))[:, None, :]
        points = None
        if prompts.points is not None:
            points = (
                torch.from_numpy(t.apply_coords(prompts.points)),
                torch.from_numpy(prompts.point_labels),
            )
        with torch.inference_mode():
            sparse, dense = self.model.prompt_encoder(points=points, boxes=boxes, masks=None)
            return self.decoder(self.embedding, sparse, dense)

    def predict(
        self,
        prompts: Prompts | None = None,
        *,
        boxes=None,
        points=None,
        point_labels=None,
        threshold: float = 0.5,
    ) -> np.ndarray:
        """Boolean masks (N, H, W), one per object, on the original image grid (sigmoid > ``threshold``)."""
        if prompts is None:
            prompts = Prompts(boxes=boxes, points=points, point_labels=point_labels)
        if self.transform is None:
            raise RuntimeError("call set_image() before predict()")
        prompts.validate(self.transform.original_size)
        logits = self.predict_logits(prompts)
        with torch.inference_mode():
            probs = torch.sigmoid(self.transform.logits_to_original(logits))
        return (probs[:, 0] > threshold).numpy()
