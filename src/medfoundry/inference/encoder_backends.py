"""One CPU runtime for every image encoder: eager PyTorch, ONNX Runtime (fp32, int8) or OpenVINO (fp32, bf16).

* :class:`OnnxEncoder` runs any module with one ``(B, 3, S, S)`` input (LiteMedSAM's image encoder for
  ``segment``, a frozen encoder's ``embed`` for ``classify embed`` and the caches) through ONNX Runtime. The graph
  is exported once per set of weights and cached (:mod:`.onnx_export`), with ORT's optimised graph beside it.
* :func:`encoder_runtime` wraps a :class:`~medfoundry.modeling.encoders.FrozenEncoder` so that ``embed`` runs
  on the chosen backend; everything else (``prepare``, ``name``, ``weights_id``...) is the encoder's own.
* :func:`feature_map_runtime` runs one of a frozen encoder's ``feature_maps`` on the backend: the nnU-Net fusion
  networks' frozen forward (:attr:`~medfoundry.modeling.fusion.FusionUNet.feature_runtime`) on the CPU.

Backend names are the CLI's ``--backend``: ``torch``, ``onnx``, ``onnx-int8``, ``openvino`` (the same exported
graph on OpenVINO, fp32), ``openvino-bf16`` (OpenVINO in bfloat16 on CPUs with AMX / AVX-512 BF16: ~2.4x quicker
than fp32, masks within DSC 0.89-0.99 of fp32, opt-in) or ``fast``: the quickest that keeps masks within DSC 0.99
of eager fp32, i.e. ``openvino`` (a dependency; 1.2-1.5x ONNX Runtime's encoder speed with the same masks,
``bench/segment_speed.py``), or ``onnx`` where OpenVINO is not installed.
"""

from __future__ import annotations

import importlib.util
import warnings

import numpy as np
import torch

from medfoundry.errors import InputError, MedfoundryWarning
from medfoundry.inference.backend_base import EncoderBackend
from medfoundry.inference.onnx_export import cached_onnx, ort_session

BACKENDS = ("fast", "torch", "onnx", "onnx-int8", "openvino", "openvino-bf16")
# what ``fast`` stands for without OpenVINO; int8 weights are faster but move masks to DSC 0.95-0.99
FAST_BACKEND = "onnx"


def fast_backend() -> str:
    """What ``fast`` stands for here: ``openvino`` when the package is installed, else ``onnx``."""
    return "openvino" if importlib.util.find_spec("openvino") is not None else FAST_BACKEND


def resolve_backend(name: str) -> str:
    """``name`` checked, with ``fast`` replaced by the backend it stands for."""
    if name not in BACKENDS:
        raise InputError(None, f"unknown backend {name!r}; use one of {BACKENDS}")
    return fast_backend() if name == "fast" else name


class TorchEncoder(EncoderBackend):
    """The encoder in eager PyTorch fp32 under ``inference_mode`` (the reference numerics)."""

    name = "torch"

    def __init__(self, encoder: torch.nn.Module) -> None:
        self.encoder = encoder.eval()

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.encoder(batch)


def export_encoder(
    encoder: torch.nn.Module,
    int8: bool = False,
    input_size: int = 256,
    cache_name: str = "encoder",
    output_name: str = "embedding",
):
    """Path of ``encoder`` exported to ONNX at batch 1 (input ``image``), cached per set of weights."""

    def export(path):
        torch.onnx.export(
            encoder.eval(),
            (torch.zeros(1, 3, input_size, input_size),),
            str(path),
            input_names=["image"],
            output_names=[output_name],
            opset_version=17,
            dynamo=False,
        )

    return cached_onnx(encoder, cache_name, export, int8=int8)


class OnnxEncoder(EncoderBackend):
    """A module exported to ONNX at batch 1 and run with ONNX Runtime one image at a time (batching does not
    speed up ORT on CPU); ``int8`` quantises MatMul/Gemm weights per channel."""

    def __init__(
        self,
        encoder: torch.nn.Module,
        int8: bool = False,
        threads: int | None = None,
        input_size: int = 256,
        cache_name: str = "encoder",
        output_name: str = "embedding",
    ) -> None:
        self.name = "onnx-int8" if int8 else "onnx"
        self.path = export_encoder(encoder, int8, input_size, cache_name, output_name)
        self.session = ort_session(self.path, threads)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        arrays = batch.detach().cpu().float().numpy()
        out = [self.session.run(None, {"image": arrays[i : i + 1]})[0] for i in range(len(arrays))]
        return torch.from_numpy(np.concatenate(out))


def exported_encoder(module: torch.nn.Module, name: str, threads: int | None = None, **export_kw) -> EncoderBackend:
    """``module`` exported to ONNX and run on the resolved backend ``name`` (``onnx``, ``onnx-int8``,
    ``openvino`` or ``openvino-bf16``)."""
    if name.startswith("openvino"):
        from medfoundry.inference.openvino_backend import OpenVinoEncoder

        precision = "bf16" if name == "openvino-bf16" else "f32"
        return OpenVinoEncoder(export_encoder(module, **export_kw), threads, name=name, precision=precision)
    return OnnxEncoder(module, int8=name == "onnx-int8", threads=threads, **export_kw)


def make_encoder_backend(
    module: torch.nn.Module, backend: str = "fast", threads: int | None = None, **export_kw
) -> EncoderBackend:
    """The runtime ``backend`` (a ``--backend`` name) for an encoder module."""
    name = resolve_backend(backend)
    if name == "torch":
        return TorchEncoder(module)
    return exported_encoder(module, name, threads, **export_kw)


class _Embed(torch.nn.Module):
    """A frozen encoder's ``embed`` as a module's forward (what gets exported)."""

    def __init__(self, encoder: torch.nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder.embed(x)


class EncoderRuntime:
    """A frozen encoder whose ``embed`` runs on one backend; other attributes are the encoder's.

    Used by ``classify embed`` / :func:`~medfoundry.inference.embedding_cache.embed_dataset` and
    :mod:`~medfoundry.inference.slice_classifier` in place of the encoder itself.
    """

    def __init__(self, encoder: torch.nn.Module, backend: EncoderBackend) -> None:
        self.encoder = encoder
        self.backend = backend

    def __getattr__(self, name: str):
        return getattr(self.__dict__["encoder"], name)

    @property
    def runtime(self) -> str:
        """The backend's name (``torch``, ``onnx``, ``onnx-int8``)."""
        return self.backend.name

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised ``(B, 3, S, S)`` -> ``(B, out_dim)`` on the backend."""
        return self.backend(x)

    def eval(self) -> EncoderRuntime:
        self.encoder.eval()
        return self

    def describe(self) -> dict:
        """The encoder's description plus the runtime that embedded."""
        return {**self.encoder.describe(), "runtime": self.runtime}


def _onnx_or_none(
    module: torch.nn.Module, encoder: torch.nn.Module, backend: str, threads: int | None, cache_name: str,
    output_name: str, what: str,
) -> EncoderBackend | None:  # fmt: skip
    """``module`` (a view of ``encoder``) exported and run on ``backend``, or ``None`` when it does not export and
    ``fast`` was asked for (a warning says ``what`` stays eager); with an exported backend asked for by name, a
    failure is an error."""
    name = resolve_backend(backend)
    try:
        return exported_encoder(
            module, name, threads, input_size=encoder.input_size, cache_name=cache_name, output_name=output_name
        )
    except Exception as exc:  # noqa: BLE001 - exporters fail in many ways; the eager path always works
        if backend != "fast":
            raise InputError(None, f"{encoder.name}: cannot run on {name} ({type(exc).__name__}: {exc})") from exc
        warnings.warn(
            f"{encoder.name}: ONNX export failed ({type(exc).__name__}); {what} in eager PyTorch",
            MedfoundryWarning,
            stacklevel=3,
        )
        return None


def encoder_runtime(encoder: torch.nn.Module, backend: str = "fast", threads: int | None = None) -> EncoderRuntime:
    """``encoder`` (a FrozenEncoder) with ``embed`` on ``backend``. A family that cannot be exported to ONNX
    falls back to eager PyTorch with a warning (``fast``) or fails (``onnx`` / ``onnx-int8`` asked for)."""
    if resolve_backend(backend) == "torch":
        return EncoderRuntime(encoder, TorchEncoder(_Embed(encoder)))
    onnx = _onnx_or_none(_Embed(encoder), encoder, backend, threads, f"embed-{encoder.name}", "embedding", "embedding")
    return EncoderRuntime(encoder, onnx or TorchEncoder(_Embed(encoder)))


class _FeatureMap(torch.nn.Module):
    """One of a frozen encoder's ``feature_maps`` as a module's forward (what gets exported)."""

    def __init__(self, encoder: torch.nn.Module, index: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.index = int(index)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder.feature_maps(x)[self.index]


class FeatureMapRuntime:
    """``prepared (B, 3, S, S)`` -> ``[feature map]`` of one encoder level, on a backend (a fusion network's
    ``feature_runtime``)."""

    def __init__(self, backend: EncoderBackend) -> None:
        self.backend = backend
        self.name = backend.name

    def __call__(self, prepared: torch.Tensor) -> list[torch.Tensor]:
        return [self.backend(prepared)]


def feature_map_runtime(
    encoder: torch.nn.Module,
    indices: list[int],
    backend: str = "fast",
    threads: int | None = None,
) -> FeatureMapRuntime | None:
    """A runtime for ``encoder.feature_maps(x)[i] for i in indices``, or ``None`` where eager PyTorch must do
    (``torch`` asked for, several maps, or ``fast`` with an encoder that does not export; ``onnx`` asked for
    and failing is an error)."""
    if resolve_backend(backend) == "torch" or len(indices) != 1:
        return None
    index = int(indices[0])
    cache_name = f"fmap{index}-{encoder.name}"
    onnx = _onnx_or_none(_FeatureMap(encoder, index), encoder, backend, threads, cache_name, "features", "features")
    return None if onnx is None else FeatureMapRuntime(onnx)
