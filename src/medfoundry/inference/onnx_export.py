"""Export modules to ONNX once per set of weights and keep them in a cache folder (atomic writes)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from medfoundry.io.atomic import atomic_path
from medfoundry.modeling.fingerprint import module_fingerprint


def cache_dir() -> Path:
    """Folder for exported models: ``$MEDFOUNDRY_CACHE`` or ``~/.cache/medfoundry``."""
    root = os.environ.get("MEDFOUNDRY_CACHE") or Path.home() / ".cache" / "medfoundry"
    return Path(root)


def cached_onnx(module: torch.nn.Module, name: str, export: Callable[[Path], None], int8: bool = False) -> Path:
    """Path of ``module`` exported to ONNX (``export(path)`` writes it), optionally int8-quantised; cached by
    weights, torch and onnxruntime versions."""
    import onnxruntime

    key = f"{name}-{module_fingerprint(module)}-torch{torch.__version__.split('+')[0]}-ort{onnxruntime.__version__}"
    fp32_path = cache_dir() / "onnx" / f"{key}.onnx"
    target = fp32_path.with_name(f"{key}-int8pc.onnx") if int8 else fp32_path
    if target.exists():
        return target
    if not fp32_path.exists():
        with atomic_path(fp32_path, overwrite=True) as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            export(tmp)
    if int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        with atomic_path(target, overwrite=True) as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_dynamic(
                str(fp32_path),
                str(tmp),
                weight_type=QuantType.QInt8,
                per_channel=True,
                op_types_to_quantize=["MatMul", "Gemm"],
            )
    return target


def ort_session(path: Path, threads: int | None = None):
    """An ONNX Runtime CPU session with all graph optimisations and ``threads`` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
