"""Inference with a trained model of the run: nnU-Net's predictor, slice by slice, back to 3D masks.

Each volume is read with :func:`medfoundry.io.read_image`, preprocessed by nnU-Net exactly as in training (its
transpose, resampling to the plan's spacing, normalisation), predicted with nnU-Net's sliding-window predictor over
the 2D slices of the planned axis, resampled back to the input grid by nnU-Net, and written with the input's spacing,
origin and direction (:func:`medfoundry.io.write_mask`, atomic, refusing existing files unless ``overwrite``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from medfoundry.errors import InputError, OutputExistsError, WeightsError
from medfoundry.io.formats import VOLUME_SUFFIXES
from medfoundry.io.paths import split_suffix
from medfoundry.io.torchfile import load_torch_file
from medfoundry.modeling.fusion import FusionSpec
from medfoundry.training.nnunet.network import attach_feature_runtime, build_network
from medfoundry.training.nnunet.runtime import (
    CONFIGURATION,
    RunLayout,
    fraction_fold,
    nnunet_environment,
)
from medfoundry.training.nnunet.trainers import MODEL_INFO, model_folder, trainer_name

FILE_ENDING = ".nii.gz"


def load_predictor(
    run_dir: str | Path,
    variant: str,
    fraction: float,
    device: str = "cpu",
    mirroring: bool = False,
    checkpoint: str = "checkpoint_final.pth",
    tile_step_size: float = 0.5,
    encoder_backend: str = "fast",
):  # noqa: ANN201 - nnU-Net's nnUNetPredictor
    """nnU-Net's ``nnUNetPredictor`` holding the trained network (and its frozen encoder) of one model; on the CPU
    the frozen encoder runs on ``encoder_backend`` (``fast``: ONNX Runtime).

    The network is built here and handed to ``nnUNetPredictor.manual_initialization`` (the call nnU-Net's own
    trainer uses for its final validation) rather than loaded with ``initialize_from_trained_model_folder``,
    because that loader (nnunetv2 2.x) cannot do this job safely or at all:

    * it reads every checkpoint with ``torch.load(..., weights_only=False)``, which would run a pickled payload;
      here the file is read once, with ``weights_only=True`` (:func:`~medfoundry.io.torchfile.load_torch_file`);
    * it finds the trainer class by name under ``nnunetv2.training.nnUNetTrainer`` (or ``nnUNet_extTrainer``)
      and calls ``build_network_architecture`` on the class; the medfoundry trainers live in
      :mod:`.nnunet_trainers`, and a fusion network needs its frozen encoder (``medfoundry_model.json``'s fusion
      spec, checked against the weights it was trained with) and its CPU runtime, which a class call cannot give;
    * it reads ``plans.json`` / ``dataset.json`` from the model folder; here they come from :func:`.plan.load_plans`,
      which refuses plans that predate the run's current export, and the checkpoint's trainer must be ``variant``'s.

    Prediction itself (preprocessing, sliding window, resampling back) is nnU-Net's ``predict_single_npy_array``.
    """
    from medfoundry.training.nnunet.plan import load_plans

    manifest, plans, dataset_json = load_plans(run_dir)
    fold = fraction_fold(manifest, fraction)
    folder = model_folder(run_dir, manifest["dataset_name"], variant, fold)
    ckpt_path = folder / checkpoint
    if not ckpt_path.is_file():
        hint = " (training was interrupted; run train `resume`)" if (folder / "checkpoint_latest.pth").exists() else ""
        raise InputError(folder, f"no {checkpoint}: this variant/fraction is not trained yet{hint}")
    info = json.loads((folder / MODEL_INFO).read_text()) if (folder / MODEL_INFO).is_file() else {}
    dev = torch.device(device)
    with nnunet_environment(run_dir):
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
        from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

        checkpoint_data = load_torch_file(ckpt_path, "nnU-Net checkpoint", numpy_scalars=True)
        if not isinstance(checkpoint_data, dict) or "network_weights" not in checkpoint_data:
            raise InputError(ckpt_path, "not an nnU-Net checkpoint (no network_weights)")
        if checkpoint_data.get("trainer_name") != trainer_name(variant):
            raise InputError(ckpt_path, f"was written by {checkpoint_data.get('trainer_name')}, not {variant}")
        plans_manager = PlansManager(plans)
        cfg = plans_manager.get_configuration(CONFIGURATION)
        fusion = FusionSpec(**info["fusion"]) if info.get("fusion") else None
        network = build_network(
            plans_manager,
            cfg,
            determine_num_input_channels(plans_manager, cfg, dataset_json),
            plans_manager.get_label_manager(dataset_json).num_segmentation_heads,
            False,
            fusion,
        )
        if fusion is not None:
            expected = (info.get("encoder") or {}).get("weights_id")
            if expected and network.frozen.weights_id != expected:
                raise WeightsError(
                    f"{fusion.weights or fusion.encoder}: the frozen encoder's weights differ from the ones this "
                    f"model was trained with (sha256 {expected[:12]}...); pass the same `encoder_weights`"
                )
        network.load_state_dict(checkpoint_data["network_weights"])
        attach_feature_runtime(network, encoder_backend, dev)
        predictor = nnUNetPredictor(
            tile_step_size=tile_step_size,
            use_gaussian=True,
            use_mirroring=mirroring,
            perform_everything_on_device=dev.type == "cuda",
            device=dev,
            verbose=False,
            verbose_preprocessing=False,
            allow_tqdm=False,
        )
        predictor.manual_initialization(
            network.to(dev),
            plans_manager,
            cfg,
            [checkpoint_data["network_weights"]],
            dataset_json,
            trainer_name(variant),
            checkpoint_data.get("inference_allowed_mirroring_axes"),
        )
    return predictor


def held_out_inputs(run_dir: str | Path) -> list[tuple[str, Path]]:
    """(case, image) of the run's test split, from the exported raw dataset."""
    from medfoundry.training.nnunet.runtime import read_manifest

    manifest = read_manifest(run_dir)
    images = RunLayout(Path(run_dir).resolve()).dataset_raw(manifest["dataset_name"]) / "imagesTs"
    return [(case, images / f"{case}_0000{FILE_ENDING}") for case in manifest["test"]]


def case_name(path: Path) -> str:
    """Case id of an input file: the name without its format suffix (and nnU-Net's ``_0000`` channel tag)."""
    name = split_suffix(path)[0]
    return name[:-5] if name.endswith("_0000") else name


def predict_volumes(
    predictor,  # noqa: ANN001 - nnU-Net's nnUNetPredictor from load_predictor
    inputs: Sequence[tuple[str, str | Path]],
    out_dir: str | Path,
    modality: str | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Predict each (case, image) and write ``out_dir/CASE.nii.gz`` on the image's grid."""
    from medfoundry.io import read_image, write_mask

    out_dir = Path(out_dir)
    targets = [out_dir / f"{case}{FILE_ENDING}" for case, _ in inputs]
    if not overwrite:
        for t in targets:
            if t.exists():
                raise OutputExistsError(t)
    written = []
    for (_case, path), target in tqdm(list(zip(inputs, targets, strict=True)), desc="nnU-Net predict", unit="volume"):
        image = read_image(path, modality=modality)
        if image.spatial_ndim != 3 or image.is_rgb:
            raise InputError(path, f"expected a 3D volume, got shape {image.array.shape}")
        data = image.array.astype(np.float32)[None]
        seg = predictor.predict_single_npy_array(data, {"spacing": [float(s) for s in image.spacing_zyx]})
        seg = np.asarray(seg)
        if seg.shape != image.spatial_shape:
            raise InputError(path, f"nnU-Net returned shape {seg.shape}, expected {image.spatial_shape}")
        written.append(write_mask(image.with_array(seg.astype(np.uint8)), target, overwrite=overwrite))
    return written


def predict(
    run_dir: str | Path,
    variant: str,
    fraction: float,
    inputs: Sequence[str | Path] | None = None,
    out_dir: str | Path | None = None,
    device: str = "cpu",
    mirroring: bool = False,
    overwrite: bool = False,
    encoder_backend: str = "fast",
) -> list[Path]:
    """Predict the run's test cases (or ``inputs``: files or folders of volumes) with one trained model."""
    from medfoundry.training.nnunet.runtime import read_manifest

    manifest = read_manifest(run_dir)
    if inputs:
        pairs = []
        for item in inputs:
            item = Path(item)
            if item.is_dir():
                files = sorted(p for p in item.iterdir() if p.is_file() and split_suffix(p)[1] in VOLUME_SUFFIXES)
                if not files:
                    raise InputError(item, "folder holds no image volumes")
                pairs += [(case_name(p), p) for p in files]
            elif item.exists():
                pairs.append((case_name(item), item))
            else:
                raise InputError(item, "no such file or folder")
    else:
        pairs = held_out_inputs(run_dir)
        if not pairs:
            raise InputError(run_dir, "this run has no test cases; pass input volumes")
    out = Path(out_dir) if out_dir is not None else RunLayout(Path(run_dir).resolve()).prediction_dir(variant, fraction)
    predictor = load_predictor(
        run_dir, variant, fraction, device=device, mirroring=mirroring, encoder_backend=encoder_backend
    )
    return predict_volumes(predictor, pairs, out, modality=manifest.get("modality"), overwrite=overwrite)
