"""LiteMedSAM's encoder and decoder on OpenVINO: fp32, bf16, or int8 (NNCF: ``pip install 'medfoundry[openvino]'``).

The graphs are the cached ONNX exports of :mod:`.encoder_backends` / :mod:`.decoder_backends`. int8 is NNCF's
post-training static quantisation, calibrated on slices the caller gives (``bench/runtime_int8.py`` measures
it against ONNX Runtime and fp32 eager per modality; it does not keep masks within DSC 0.99, so it is not a
backend). The fp32 encoder is ``--backend openvino`` and what ``fast`` means (OpenVINO is a dependency); compiled
graphs are cached in ``$MEDFOUNDRY_CACHE/openvino/<precision>`` so later processes start sooner. bf16
(``--backend openvino-bf16``) runs the encoder's matrix products in bfloat16 on CPUs with AMX / AVX-512 BF16: about
2.4x quicker than fp32, but its masks move (DSC 0.89-0.99 against fp32 on held-out slices), so it is opt-in.
"""

from __future__ import annotations

import faulthandler
import os
import warnings

import numpy as np
import torch

from medfoundry.errors import InputError, MedfoundryWarning
from medfoundry.inference.backend_base import DecoderBackend, EncoderBackend
from medfoundry.inference.onnx_export import cache_dir


def _openvino():
    try:
        import openvino
    except ImportError:
        raise InputError(None, "OpenVINO cannot be imported; pip install openvino (or use `backend` onnx)") from None
    return openvino


def cpu_has_bf16() -> bool:
    """Whether OpenVINO can run bf16 on this CPU (AMX or AVX-512 BF16); elsewhere a bf16 hint runs fp32."""
    return "BF16" in _openvino().Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def compile_model(model, threads: int | None = None, precision: str = "f32", properties: dict | None = None):
    """An OpenVINO CPU model (an ``openvino.Model`` or a graph file) compiled for latency with ``threads`` threads
    and ``precision`` (f32, bf16); a file's compiled blob is cached in ``$MEDFOUNDRY_CACHE/openvino/<precision>``
    (one folder per precision: OpenVINO's cache key leaves the precision out, and a blob compiled for one
    precision loaded with the other crashes the process). ``properties``: further OpenVINO properties added to
    these (e.g. ``{"PERF_COUNT": "YES"}`` to profile the runtime as it runs)."""
    ov = _openvino()
    if precision not in ("f32", "bf16"):
        raise InputError(None, f"OpenVINO precision {precision!r}: use f32 or bf16")
    if precision == "bf16" and not cpu_has_bf16():
        warnings.warn(
            "this CPU has no bf16 instructions (AMX / AVX-512 BF16); OpenVINO runs the encoder in fp32",
            MedfoundryWarning,
            stacklevel=2,
        )
    elif precision == "bf16" and faulthandler.is_enabled():
        warnings.warn(
            "bf16 with Python's faulthandler enabled (python -X faulthandler, pytest): once AMX has run, a signal "
            "handled on faulthandler's small alternate stack (e.g. a DataLoader worker's exit) can crash the process",
            MedfoundryWarning,
            stacklevel=2,
        )
    n_threads = int(threads or torch.get_num_threads())
    config = {
        "INFERENCE_NUM_THREADS": n_threads,
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": precision,
        # OpenVINO pins its threads to the first cores it may use; two processes of 1 thread each (Ray actors,
        # parallel jobs) then share core 0 and run at half speed. Pin only a process that has every core.
        "ENABLE_CPU_PINNING": n_threads >= len(os.sched_getaffinity(0)),
        **(properties or {}),
    }
    if not hasattr(model, "inputs"):  # a file: OpenVINO reads it and keeps the compiled blob for the next process
        folder = cache_dir() / "openvino" / precision
        try:
            folder.mkdir(parents=True, exist_ok=True)
            config["CACHE_DIR"] = str(folder)
        except OSError:  # read-only cache: compile every time
            pass
        model = str(model)
    try:
        return ov.Core().compile_model(model, "CPU", config)
    except RuntimeError:
        if "CACHE_DIR" not in config:
            raise
        config.pop("CACHE_DIR")  # a cache folder it cannot use (read-only, damaged blob): compile without it
        return ov.Core().compile_model(model, "CPU", config)


def quantize_int8(onnx_path, samples: list[dict[str, np.ndarray]], transformer: bool = True):
    """NNCF post-training int8 quantisation of an ONNX graph, calibrated statically on ``samples`` (input
    dicts); returns the OpenVINO model."""
    ov = _openvino()
    import nncf

    model = ov.Core().read_model(str(onnx_path))
    dataset = nncf.Dataset(samples)
    kwargs = {"model_type": nncf.ModelType.TRANSFORMER} if transformer else {}
    return nncf.quantize(model, dataset, subset_size=len(samples), **kwargs)


class OpenVinoEncoder(EncoderBackend):
    """An image encoder graph (input ``image`` (1, 3, S, S)) on OpenVINO in ``precision`` (f32, bf16), one image
    per run."""

    def __init__(
        self, model_or_path, threads: int | None = None, name: str = "openvino", precision: str = "f32"
    ) -> None:
        self.name = name
        self.precision = precision
        self.compiled = compile_model(model_or_path, threads, precision)
        self.request = self.compiled.create_infer_request()

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        arrays = batch.detach().cpu().float().numpy()
        out = [np.array(self.request.infer({"image": arrays[i : i + 1]})[0]) for i in range(len(arrays))]
        return torch.from_numpy(np.concatenate(out))


class OpenVinoDecoder(DecoderBackend):
    """The mask decoder graph of :class:`~.decoder_backends.OnnxDecoder` on OpenVINO, one prompt per run."""

    def __init__(self, model_or_path, threads: int | None = None, name: str = "openvino") -> None:
        self.name = name
        self.compiled = compile_model(model_or_path, threads)
        self.request = self.compiled.create_infer_request()

    def __call__(self, embedding, sparse, dense):
        emb = embedding.detach().cpu().float().numpy()
        sp, de = sparse.detach().cpu().float().numpy(), dense.detach().cpu().float().numpy()
        out = [
            np.array(self.request.infer({"embedding": emb, "sparse": sp[i : i + 1], "dense": de[i : i + 1]})[0])
            for i in range(len(sp))
        ]
        return torch.from_numpy(np.concatenate(out))
