"""What the verbs of :mod:`medfoundry.api` share: their options (one dataclass per verb or step, filled by the CLI
from its parsed arguments with ``medfoundry.cli.common.options_from_args``, or given by a notebook / a Ray worker
field by field), the device check and the no-contrast warning."""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from medfoundry.errors import InputError, MedfoundryWarning

if TYPE_CHECKING:
    from medfoundry.inference.predictor import LiteMedSAMPredictor

T = TypeVar("T")


def resolve_options(cls: type[T], options: T | None, fields: dict[str, Any]) -> T:
    """``options`` (an instance of ``cls``) with ``fields`` replaced, or ``cls(**fields)``: so that a verb is
    called either way, ``classify_embed(ClassifyEmbedOptions(dataset=...))`` or ``classify_embed(dataset=...)``."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(fields) - names)
    if unknown:
        raise InputError(None, f"{cls.__name__} has no option {', '.join(unknown)}")
    if options is None:
        return cls(**fields)
    if not isinstance(options, cls):
        raise InputError(None, f"expected {cls.__name__}, got {type(options).__name__}")
    return dataclasses.replace(options, **fields) if fields else options


@dataclass
class ModelFields:
    """The LiteMedSAM options of the verbs that run it (``--weights``, ``--adapter``, ``--backend``, ``--threads``).
    A verb whose options also have a ``predictor`` field takes a predictor or a factory of one instead (not a CLI
    option; a factory for Ray)."""

    weights: str | Path | None = None
    adapter: str | Path | None = None
    backend: str = "fast"
    threads: int | None = None

    def predictor_factory(self):
        """``predictor`` when given, else a factory (picklable, for Ray actors) that applies ``threads`` and builds
        the predictor the options describe: the model loads only when it is called."""
        if getattr(self, "predictor", None) is not None:
            return self.predictor
        from functools import partial

        return partial(build_predictor, self.weights, self.backend, self.adapter, self.threads)


def make_predictor(
    weights: str | Path | None = None, backend: str = "fast", adapter: str | Path | None = None
) -> LiteMedSAMPredictor:
    """A LiteMedSAM predictor on the real (or given) weights, optionally with a fine-tuned adapter."""
    from medfoundry.inference.predictor import LiteMedSAMPredictor

    if adapter is not None:
        from medfoundry.modeling.adapters.io import load_adapted_model  # noqa: PLC0415 - optional feature

        return LiteMedSAMPredictor(model=load_adapted_model(adapter, weights=weights), backend=backend)
    return LiteMedSAMPredictor(weights=None if weights is None else str(weights), backend=backend)


def build_predictor(weights=None, backend: str = "fast", adapter=None, threads: int | None = None):
    """``threads`` applied to torch (when given), then :func:`make_predictor` ``(weights, backend, adapter)``."""
    set_threads(threads)
    return make_predictor(weights=weights, backend=backend, adapter=adapter)


def set_threads(threads: int | None) -> None:
    """Apply a thread count (when given) to torch."""
    if threads:
        import torch

        torch.set_num_threads(threads)


@dataclass
class WindowFields:
    """The intensity options (``--modality``, ``--window`` preset or an ``IntensityWindow``, ``--level`` /
    ``--width``, ``--suv-range``, ``--percentiles``)."""

    modality: str | None = None
    window: Any = None
    level: float | None = None
    width: float | None = None
    suv_range: tuple[float, float] | None = None
    percentiles: tuple[float, float] | None = None

    def intensity_window(self):
        """The :class:`~medfoundry.preprocessing.IntensityWindow` the options describe (``window`` itself when it
        is one)."""
        from medfoundry.preprocessing import IntensityWindow

        if isinstance(self.window, IntensityWindow):
            return self.window
        return IntensityWindow(
            ct_window=self.window,
            level=self.level,
            width=self.width,
            suv_range=tuple(self.suv_range) if self.suv_range else None,
            percentiles=tuple(self.percentiles) if self.percentiles else None,
        )


def resolve_device(device: str | None) -> str:
    """``device`` checked against this machine; ``None`` means cuda when available, else cpu."""
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError("--device", f"{device} asked for, but no CUDA GPU is available here")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise InputError("--device", f"{device}: only {torch.cuda.device_count()} CUDA device(s) here")
    if device == "mps" and not torch.backends.mps.is_available():
        raise InputError("--device", "mps asked for, but it is not available here")
    return device


def warn_if_no_contrast(image) -> bool:
    """Warn (:class:`MedfoundryWarning`) when every voxel has the same value (all zero, one voxel, constant):
    the model then sees a blank picture and the mask says nothing about the image. Returns True if it warned."""
    array = image.array
    if array.size and float(array.max()) == float(array.min()):
        what = "one voxel" if array.size == 1 else f"every voxel is {float(array.flat[0]):g}"
        warnings.warn(
            f"{image.path or 'image'}: the image has no contrast ({what}); the mask will not reflect anything in it",
            MedfoundryWarning,
            stacklevel=3,
        )
        return True
    return False
