"""No code runs from a file: every loader refuses a pickle with a payload, before the payload runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from medfoundry.errors import MedfoundryError


class _Payload:
    """Unpickling this calls ``open(marker, "w")``: the file appears only if the pickle ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def evil(tmp_path: Path) -> tuple[Path, Path]:
    """(evil.pt, marker): a checkpoint-shaped dict whose pickle would create ``marker``."""
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pt"
    torch.save({"format": "medfoundry-tsfm/1", "model": {"w": torch.zeros(2)}, "x": _Payload(marker)}, path)
    assert not marker.exists()
    return path, marker


def _loaders():
    from medfoundry.inference.slice_classifier import load_bundle
    from medfoundry.io.torchfile import load_torch_file
    from medfoundry.modeling.adapters.io import load_adapted_model, read_adapter
    from medfoundry.modeling.encoders.sam_tinyvit import build_sam_tinyvit
    from medfoundry.modeling.encoders.timm_models import read_state_dict
    from medfoundry.modeling.lite_medsam import build_lite_medsam
    from medfoundry.modeling.tsfm.checkpoint import load_checkpoint

    return {
        "adapter": read_adapter,
        "adapted model": lambda p: load_adapted_model(p),
        "tsfm checkpoint": load_checkpoint,
        "classify bundle": load_bundle,
        "litemedsam weights": lambda p: build_lite_medsam(weights=p),
        "encoder weights": lambda p: read_state_dict(Path(p)),
        "fusion encoder weights": lambda p: build_sam_tinyvit("litemedsam", str(p), tiny=True),
        "nnunet checkpoint file": lambda p: load_torch_file(p, "nnU-Net checkpoint", numpy_scalars=True),
    }


@pytest.mark.parametrize("name", list(_loaders()))
def test_every_loader_refuses_a_payload(name, evil):
    path, marker = evil
    with pytest.raises(MedfoundryError) as info:
        _loaders()[name](path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    assert not marker.exists(), f"{name} ran the pickle"


def test_nnunet_predictor_refuses_a_payload(evil, tmp_path, monkeypatch):
    """The nnU-Net predictor path (checkpoint_final.pth of a trained model) refuses the file before nnU-Net."""
    from medfoundry.training.nnunet import plan, predict

    path, marker = evil
    folder = tmp_path / "fold_0"
    folder.mkdir()
    ckpt = folder / "checkpoint_final.pth"
    os.replace(path, ckpt)
    monkeypatch.setattr(plan, "load_plans", lambda run_dir: ({"dataset_name": "Dataset001_X", "folds": {}}, {}, {}))
    monkeypatch.setattr(predict, "fraction_fold", lambda manifest, fraction: 0)
    monkeypatch.setattr(predict, "model_folder", lambda *a: folder)
    with pytest.raises(MedfoundryError, match="refused") as info:
        predict.load_predictor(tmp_path, "baseline", 100.0)
    assert str(ckpt) in str(info.value)
    assert not marker.exists()


def test_new_tsfm_checkpoints_load_with_weights_only(tmp_path):
    """The saver writes only tensors and plain values, so the safe loader reads it back (numpy values included)."""
    import numpy as np

    from medfoundry.modeling.tsfm.checkpoint import (
        load_checkpoint,
        make_payload,
        model_from_checkpoint,
        save_checkpoint,
    )
    from medfoundry.modeling.tsfm.network import build_tsfm

    model = build_tsfm("tiny", num_classes=2, patch_size=(16, 16, 16))
    payload = make_payload(
        model, ["a", "b"], {"spacing": np.array([1.0, 1.0, 2.0]), "modalities": ["CT"]}, epoch=np.int64(3),
        history=[{"loss": np.float32(0.5)}], info={"pool": Path("x")},
    )  # fmt: skip
    path = save_checkpoint(tmp_path / "m.pt", payload)
    ckpt = load_checkpoint(path)
    assert ckpt["epoch"] == 3 and ckpt["preprocessing"]["spacing"] == [1.0, 1.0, 2.0]
    assert ckpt["info"]["pool"] == "x" and abs(ckpt["history"][0]["loss"] - 0.5) < 1e-6
    again = model_from_checkpoint(ckpt, path)
    for key, value in model.state_dict().items():
        assert torch.equal(value, again.state_dict()[key])


@pytest.mark.parametrize(
    "argv",
    [
        ["transfer", "--predict", "{tmp}/ct.nii.gz", "--model", "{evil}", "--out-dir", "{tmp}/out"],
        ["transfer", "--init", "{evil}", "--pool", "{tmp}/pool", "--out", "{tmp}/out"],
        ["segment", "{tmp}/img.png", "--box", "1", "1", "5", "5", "--out", "{tmp}/o.png", "--adapter", "{evil}"],
        ["segment", "{tmp}/img.png", "--box", "1", "1", "5", "5", "--out", "{tmp}/o.png", "--weights", "{evil}"],
        ["classify", "predict", "{tmp}/ct.nii.gz", "--model", "{evil}", "--out", "{tmp}/out"],
    ],
    ids=["transfer-model", "transfer-init", "segment-adapter", "segment-weights", "classify-model"],
)
def test_cli_refuses_a_payload(argv, evil, tmp_path, capsys):
    import numpy as np

    from medfoundry.cli.main import main
    from medfoundry.io import MedicalImage, write_image
    from medfoundry.io.raster2d import write_png

    path, marker = evil
    write_image(
        MedicalImage(np.random.default_rng(0).random((4, 8, 8)).astype(np.float32), spacing=(1.0, 1.0, 1.0)),
        tmp_path / "ct.nii.gz",
    )
    write_png((np.arange(64).reshape(8, 8) * 4).astype(np.uint8), tmp_path / "img.png")
    before = sorted(p.name for p in tmp_path.iterdir())
    code = main([a.format(evil=path, tmp=tmp_path) for a in argv])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and str(path) in err and "Traceback" not in err
    assert not marker.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_nnunet_checkpoint_with_numpy_log_values_loads(tmp_path):
    """nnU-Net's own checkpoints log numpy floats and hold a torch.device: data, read without running code."""
    import numpy as np

    from medfoundry.io.torchfile import load_torch_file

    path = tmp_path / "checkpoint_final.pth"
    ckpt = {
        "network_weights": {"w": torch.ones(2)},
        "logging": {"mean_fg_dice": [np.float64(0.5), np.float32(0.25)], "epoch": [np.int64(3)]},
        "init_args": {"device": torch.device("cpu"), "fold": 0},
        "inference_allowed_mirroring_axes": (0, 1),
    }
    torch.save(ckpt, path)
    loaded = load_torch_file(path, "nnU-Net checkpoint", numpy_scalars=True)
    assert loaded["logging"]["mean_fg_dice"] == [0.5, 0.25] and loaded["init_args"]["device"] == torch.device("cpu")
    assert torch.equal(loaded["network_weights"]["w"], torch.ones(2))
    with pytest.raises(MedfoundryError, match="numpy"):  # without the numpy allowance the same file is refused
        load_torch_file(path, "checkpoint")
