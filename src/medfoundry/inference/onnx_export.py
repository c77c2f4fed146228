"""Export modules to ONNX once per set of weights and keep them in a cache folder (atomic writes).

Beside each exported graph, :func:`ort_session` keeps ONNX Runtime's optimised graph for this CPU
(``SessionOptions.optimized_model_filepath``), so later sessions load it with graph optimisation off and start
sooner.
"""

from __future__ import annotations

import hashlib
import os
import platform
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


def cpu_tag() -> str:
    """A short id of this CPU (architecture + instruction-set flags): ORT's optimised graphs are specific to it."""
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags = line
                break
    except OSError:
        pass
    return hashlib.sha256(f"{platform.machine()} {flags}".encode()).hexdigest()[:8]


def optimized_path(path: Path) -> Path:
    """Where :func:`ort_session` keeps ONNX Runtime's optimised graph of ``path`` for this CPU."""
    path = Path(path)
    return path.with_name(f"{path.stem}.opt-{cpu_tag()}.onnx")


def ort_session(path: Path, threads: int | None = None, cache_optimized: bool = True):
    """An ONNX Runtime CPU session with all graph optimisations and ``threads`` intra-op threads.

    With ``cache_optimized`` the optimised graph is written once beside ``path`` (atomically) and later sessions
    load it without optimising again; a cached file that cannot be loaded is rebuilt.
    """
    import onnxruntime as ort

    def options(level) -> ort.SessionOptions:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        opts.graph_optimization_level = level
        return opts

    providers = ["CPUExecutionProvider"]
    full = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if not cache_optimized:
        return ort.InferenceSession(str(path), options(full), providers=providers)
    optimized = optimized_path(path)
    if optimized.is_file():
        try:
            return ort.InferenceSession(
                str(optimized), options(ort.GraphOptimizationLevel.ORT_DISABLE_ALL), providers=providers
            )
        except Exception:  # noqa: BLE001 - a damaged or foreign cache file is rebuilt below
            optimized.unlink(missing_ok=True)
    try:
        with atomic_path(optimized, overwrite=True) as tmp:
            opts = options(full)
            opts.optimized_model_filepath = str(tmp)
            opts.log_severity_level = 3  # not the warning that the file is specific to this CPU: it is keyed by it
            session = ort.InferenceSession(str(path), opts, providers=providers)
        return session
    except OSError:  # read-only cache folder: run without the cache
        return ort.InferenceSession(str(path), options(full), providers=providers)
