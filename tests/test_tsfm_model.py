"""TSFM network: presets (the 1.6B one counted on the meta device), blocks, checkpoints and transfer loading."""

from __future__ import annotations

import pytest
import torch

from medfoundry.errors import InputError
from medfoundry.modeling.tsfm import (
    PRESETS,
    build_tsfm,
    count_parameters,
    load_checkpoint,
    make_payload,
    model_for_transfer,
    model_from_checkpoint,
    save_checkpoint,
)
from medfoundry.modeling.tsfm.blocks import DownBlock, PreActResBlock, UpBlock


def test_huge_preset_has_1_6_billion_parameters_on_meta_device():
    model = build_tsfm("huge", device="meta")
    assert next(model.parameters()).device.type == "meta"
    n = count_parameters(model)
    assert 1.55e9 < n < 1.65e9, n
    # the bottleneck is ViT-base: 12 layers of width 768
    assert len(model.bottleneck.blocks) == 12
    assert model.bottleneck.proj_in.out_channels == 768


def test_presets_grow_and_base_has_12_transformer_layers():
    counts = [count_parameters(build_tsfm(name, device="meta")) for name in ("tiny", "small", "base", "large", "huge")]
    assert counts == sorted(counts) and len(set(counts)) == 5
    assert PRESETS["base"].vit_layers == 12 and PRESETS["base"].vit_hidden == 768
    assert counts[0] < 1e6  # tiny is for CPU tests


def test_preact_block_normalises_before_each_conv_and_keeps_identity_path():
    block = PreActResBlock(4, 4).eval()
    # zero the second conv: a pre-activation residual block is then exactly the identity
    torch.nn.init.zeros_(block.conv2.weight)
    x = torch.randn(1, 4, 6, 6, 6)
    assert torch.equal(block(x), x)
    names = [n for n, _ in block.named_children()]
    assert names.index("norm1") < names.index("conv1") < names.index("norm2") < names.index("conv2")
    assert block.conv1.kernel_size == (3, 3, 3) and isinstance(block.norm1, torch.nn.InstanceNorm3d)


def test_down_block_halves_size_doubles_channels_and_up_block_reverses():
    x = torch.randn(1, 8, 8, 12, 16)
    down = DownBlock(8, depth=2)(x)
    assert down.shape == (1, 16, 4, 6, 8)
    up = UpBlock(16)(down, (8, 12, 16))
    assert up.shape == (1, 8, 8, 12, 16)
    assert UpBlock(16).proj.kernel_size == (1, 1, 1)


def test_tiny_forward_backward_and_other_patch_sizes():
    model = build_tsfm("tiny", num_classes=3)
    x = torch.randn(1, 1, 32, 32, 32)
    y = model(x)
    assert y.shape == (1, 3, 32, 32, 32)
    y.mean().backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []  # DDP needs every weight used
    assert model.bottleneck.pos.grad is not None and model.stem.weight.grad.abs().sum() > 0
    with torch.no_grad():  # the position embedding is resized for another grid
        assert model(torch.randn(1, 1, 16, 48, 24)).shape == (1, 3, 16, 48, 24)
    with pytest.raises(ValueError, match="divisible"):
        model(torch.randn(1, 1, 20, 32, 32))


def test_checkpoint_round_trip_preset_check_and_transfer(tmp_path):
    torch.manual_seed(0)
    model = build_tsfm("tiny", num_classes=5)
    path = save_checkpoint(tmp_path / "m.pt", make_payload(model, list("abcde"), {"spacing_xyz_mm": [1, 1, 1]}))
    ckpt = load_checkpoint(path)
    again = model_from_checkpoint(ckpt, path)
    for k, v in model.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k
    with pytest.raises(InputError, match="preset 'tiny' does not match.*'small'"):
        model_from_checkpoint(ckpt, path, preset="small")

    new = model_for_transfer(ckpt, num_classes=2, path=path, patch_size=(32, 64, 64))
    assert new.head[-1].out_channels == 2 and new.config.num_classes == 2
    sd_old, sd_new = model.state_dict(), new.state_dict()
    assert torch.equal(sd_new["encoder.2.0.conv1.weight"], sd_old["encoder.2.0.conv1.weight"])
    assert torch.equal(
        sd_new["bottleneck.blocks.0.mlp.linear1.weight"], sd_old["bottleneck.blocks.0.mlp.linear1.weight"]
    )
    assert sd_new["bottleneck.pos"].shape[2:] == (4, 8, 8)  # resized from the 4x4x4 grid of a 32^3 patch

    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="bad.pt"):
        load_checkpoint(tmp_path / "bad.pt")
    torch.save(
        {
            "format": "medfoundry-tsfm/1",
            "config": build_tsfm("small", device="meta").config.to_dict(),
            "model": model.state_dict(),
        },
        tmp_path / "mismatch.pt",
    )
    with pytest.raises(InputError, match="do not fit"):
        model_from_checkpoint(load_checkpoint(tmp_path / "mismatch.pt"), tmp_path / "mismatch.pt")


def test_sliding_window_prediction_keeps_the_input_grid_even_below_patch_size():
    import numpy as np

    from medfoundry.inference.sliding_window import predict_labels, predict_probabilities
    from medfoundry.io import MedicalImage

    torch.manual_seed(0)
    model = build_tsfm("tiny", num_classes=2, patch_size=(16, 16, 16))
    img = MedicalImage(
        np.random.default_rng(0).normal(size=(7, 13, 40)).astype(np.float32),
        (0.8, 1.2, 5.0),
        (1.0, 2.0, 3.0),
        (0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0),
        modality="PET",
    )
    prep = {"spacing_xyz_mm": [2.0, 2.0, 2.0]}
    probs = predict_probabilities(model, img, prep)
    assert probs.shape == (2, 7, 13, 40) and 0 <= probs.min() and probs.max() <= 1
    labels = predict_labels(model, img, prep, threshold=0.0)  # every voxel goes to its most probable class
    assert labels.same_grid(img) and labels.array.shape == img.array.shape
    assert np.array_equal(labels.array, probs.argmax(0) + 1)
    with pytest.raises(InputError, match="3D volumes"):
        predict_labels(model, MedicalImage(np.zeros((8, 8), np.float32), (1.0, 1.0)), prep)
