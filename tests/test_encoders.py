"""Frozen-encoder registry: shapes, strides, freezing, local-only weights and clear weight errors."""

from __future__ import annotations

import hashlib

import pytest
import torch

from medfoundry.errors import InputError, WeightsError
from medfoundry.modeling.encoders import build_encoder, encoder_names

TINY = ["dinov2_small", "dinov2_base", "convnext_base", "resnet50", "rad_dino"]


@pytest.mark.parametrize("name", TINY)
def test_tiny_variants_embed_and_feature_maps(name):
    size = 64 if name in ("convnext_base", "resnet50") else 56  # divisible by the strides (32 or 14)
    enc = build_encoder(name, pretrained=False, tiny=True, input_size=size)
    x = enc.prepare(torch.rand(2, 40, 40))
    assert x.shape == (2, 3, size, size)
    with torch.inference_mode():
        emb = enc.embed(x)
        maps = enc.feature_maps(x)
    assert emb.shape == (2, enc.out_dim)
    assert torch.isfinite(emb).all()
    assert len(maps) == len(enc.strides) and list(enc.strides) == sorted(enc.strides)
    for fmap, stride in zip(maps, enc.strides, strict=True):
        assert fmap.shape[0] == 2 and fmap.shape[-1] == size // stride
    # frozen: no parameter takes gradients and .train() keeps eval mode
    assert not any(p.requires_grad for p in enc.parameters())
    enc.train()
    assert not enc.training and not any(m.training for m in enc.modules())
    assert len(enc.weights_id) == 64


def test_vit_embedding_is_the_class_token():
    enc = build_encoder("dinov2_small", pretrained=False, tiny=True, input_size=56)
    x = enc.prepare(torch.rand(1, 56, 56))
    with torch.inference_mode():
        tokens = enc.model.forward_features(x)  # (1, 1 + 16, D), normed
        assert torch.allclose(enc.embed(x), tokens[:, 0], atol=1e-5)


def test_prepare_maps_unit_range_to_the_encoder_input_range():
    enc = build_encoder("convnext_base", pretrained=False, tiny=True)
    ones = enc.prepare(torch.ones(1, 1, 224, 224))
    zeros = enc.prepare(torch.zeros(1, 224, 224))
    for c in range(3):
        assert ones[0, c].mean().item() == pytest.approx((1 - enc.mean[c]) / enc.std[c], rel=1e-5)
        assert zeros[0, c].mean().item() == pytest.approx(-enc.mean[c] / enc.std[c], rel=1e-5)


def test_missing_weights_say_which_file_to_put_where(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDFOUNDRY_WEIGHTS", str(tmp_path / "w"))
    for name, expected in [
        ("dinov2_small", "dinov2_small.safetensors"),
        ("convnext_base", "convnext_base.safetensors"),
        ("rad_dino", "rad_dino"),
    ]:
        with pytest.raises(WeightsError) as info:
            build_encoder(name)
        assert str(tmp_path / "w" / expected) in str(info.value)
    with pytest.raises(WeightsError, match="not found"):
        build_encoder("resnet50", weights=tmp_path / "nope.safetensors")
    with pytest.raises(InputError, match="unknown encoder"):
        build_encoder("vgg")
    assert set(TINY + ["litemedsam"]) <= set(encoder_names())


def test_timm_weights_load_from_a_local_file_and_from_the_default_folder(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    src = build_encoder("resnet50", pretrained=False, tiny=True, seed=3)
    state = {k: v.contiguous() for k, v in src.model.state_dict().items()}
    path = tmp_path / "resnet50.safetensors"
    save_file(state, str(path))
    loaded = build_encoder("resnet50", weights=path, tiny=True, seed=99)
    x = src.prepare(torch.rand(2, 64, 64))
    with torch.inference_mode():
        assert torch.allclose(src.embed(x), loaded.embed(x), atol=1e-6)
    assert loaded.weights_id == hashlib.sha256(path.read_bytes()).hexdigest()
    # a differently seeded random model really differs (so the check above is meaningful)
    other = build_encoder("resnet50", pretrained=False, tiny=True, seed=99)
    with torch.inference_mode():
        assert not torch.allclose(other.embed(x), src.embed(x))
    # found by name in the weights folder, no path given
    monkeypatch.setenv("MEDFOUNDRY_WEIGHTS", str(tmp_path))
    default = build_encoder("resnet50", layers=(1, 1, 1, 1), base_width=8)  # the tiny architecture, pretrained
    assert default.weights_id == loaded.weights_id
    # a file of another architecture is refused clearly
    with pytest.raises(WeightsError, match="cannot be loaded"):
        build_encoder("convnext_base", weights=path, tiny=True)


def test_rad_dino_loads_from_a_local_hugging_face_folder(tmp_path):
    src = build_encoder("rad_dino", tiny=True, input_size=56)
    folder = tmp_path / "rad-dino"
    src.model.save_pretrained(folder)
    loaded = build_encoder("rad_dino", weights=folder, input_size=56)
    x = src.prepare(torch.rand(1, 56, 56))
    with torch.inference_mode():
        assert torch.allclose(src.embed(x), loaded.embed(x), atol=1e-5)
    with pytest.raises(WeightsError, match="config.json"):
        build_encoder("rad_dino", weights=tmp_path / "no-such-folder")


def test_litemedsam_encoder_real_weights():
    from medfoundry.modeling.lite_medsam import WEIGHTS_SHA256

    enc = build_encoder("litemedsam")
    assert enc.weights_id == WEIGHTS_SHA256
    assert (enc.input_size, enc.out_dim) == (256, 256)
    x = enc.prepare(torch.rand(1, 224, 224))
    with torch.inference_mode():
        maps = enc.feature_maps(x)
        emb = enc.embed(x)
    assert [m.shape[1] for m in maps] == [128, 160, 256]
    assert [256 // m.shape[-1] for m in maps] == list(enc.strides)
    assert torch.allclose(emb, maps[-1].mean(dim=(2, 3)), atol=1e-4)


def test_dinov2_weights_at_another_resolution_are_resampled(tmp_path):
    from safetensors.torch import save_file

    big = build_encoder("dinov2_small", pretrained=False, tiny=True, input_size=70, seed=1)  # 5 x 5 patches
    path = tmp_path / "dino.safetensors"
    save_file({k: v.contiguous() for k, v in big.model.state_dict().items()}, str(path))
    small = build_encoder("dinov2_small", weights=path, tiny=True, input_size=56)  # 4 x 4 patches
    assert small.model.pos_embed.shape[1] == 1 + 16
    assert torch.equal(small.model.blocks[0].attn.qkv.weight, big.model.blocks[0].attn.qkv.weight)
