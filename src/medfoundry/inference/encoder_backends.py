"""Ways to run the LiteMedSAM image encoder on CPU: eager PyTorch, or ONNX Runtime in fp32 or int8.

The ONNX graphs are exported once per set of encoder weights and cached on disk (``$MEDFOUNDRY_CACHE`` or
``~/.cache/medfoundry``), so later runs start at once. ``fast`` picks the quickest backend that keeps masks
within DSC 0.99 of fp32 PyTorch (see ``bench/segment_speed.py``).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from medfoundry.io.atomic import atomic_path

BACKENDS = ("torch", "onnx", "onnx-int8", "fast")
FAST_BACKEND = "onnx-int8"


def cache_dir() -> Path:
    """Folder for exported models: ``$MEDFOUNDRY_CACHE`` or ``~/.cache/medfoundry``."""
    root = os.environ.get("MEDFOUNDRY_CACHE") or Path.home() / ".cache" / "medfoundry"
    return Path(root)


def module_fingerprint(module: torch.nn.Module) -> str:
    """SHA-256 (first 16 hex digits) over a module's parameter and buffer names, shapes and values."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


class EncoderBackend:
    """Maps a (B, 3, 256, 256) float batch in [0, 1] to image embeddings (B, 256, 64, 64)."""

    name = "base"

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class TorchEncoder(EncoderBackend):
    """The encoder in eager PyTorch fp32 (the reference numerics)."""

    name = "torch"

    def __init__(self, encoder: torch.nn.Module) -> None:
        self.encoder = encoder.eval()

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.encoder(batch)


class OnnxEncoder(EncoderBackend):
    """The encoder exported to ONNX (batch 1) and run with ONNX Runtime; ``int8`` quantises MatMul/Gemm weights."""

    def __init__(self, encoder: torch.nn.Module, int8: bool = False, threads: int | None = None) -> None:
        import onnxruntime as ort

        self.name = "onnx-int8" if int8 else "onnx"
        self.path = self.export(encoder, int8)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])

    @staticmethod
    def export(encoder: torch.nn.Module, int8: bool) -> Path:
        """Path of the cached ONNX encoder for these weights, exporting (and quantising) it if absent."""
        import onnxruntime

        key = f"{module_fingerprint(encoder)}-torch{torch.__version__.split('+')[0]}-ort{onnxruntime.__version__}"
        fp32_path = cache_dir() / "onnx" / f"encoder-{key}.onnx"
        target = fp32_path.with_name(f"encoder-{key}-int8.onnx") if int8 else fp32_path
        if target.exists():
            return target
        if not fp32_path.exists():
            with atomic_path(fp32_path, overwrite=True) as tmp, warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    encoder.eval(),
                    (torch.zeros(1, 3, 256, 256),),
                    str(tmp),
                    input_names=["image"],
                    output_names=["embedding"],
                    opset_version=17,
                    dynamo=False,
                )
        if int8:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            with atomic_path(target, overwrite=True) as tmp:
                quantize_dynamic(
                    str(fp32_path),
                    str(tmp),
                    weight_type=QuantType.QInt8,
                    op_types_to_quantize=["MatMul", "Gemm"],
                )
        return target

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        arrays = batch.detach().cpu().float().numpy()
        out = [self.session.run(None, {"image": arrays[i : i + 1]})[0] for i in range(len(arrays))]
        return torch.from_numpy(np.concatenate(out))


def make_encoder_backend(model: torch.nn.Module, name: str = "fast") -> EncoderBackend:
    """The encoder backend called ``name`` (one of :data:`BACKENDS`) for ``model.image_encoder``."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; use one of {BACKENDS}")
    if name == "fast":
        name = FAST_BACKEND
    if name == "torch":
        return TorchEncoder(model.image_encoder)
    return OnnxEncoder(model.image_encoder, int8=name == "onnx-int8")
