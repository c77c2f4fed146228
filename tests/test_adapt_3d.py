"""Adaptation as users segment volumes: training prompts drawn like 3D inference gives them, and validation /
model selection through the 3D box + propagation path (issue 15)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medfoundry.cli.main import main
from medfoundry.data.slices2d import load_samples
from medfoundry.inference.propagation import propagation_margin
from medfoundry.inference.volume_eval import evaluate_volumes, fp32_encoder, load_volumes, loose_box, reference_box
from medfoundry.modeling.adapters.io import base_fingerprint, load_adapted_model, read_adapter
from medfoundry.modeling.lite_medsam import build_tiny_lite_medsam
from medfoundry.modeling.registry import build_adapter
from medfoundry.preprocessing.boxes import mask_box
from medfoundry.training.finetune import FinetuneConfig, finetune
from medfoundry.training.finetune.augment import (
    Augment,
    apply_flip,
    flip_box,
    prepare_targets,
    prompt_box,
    prompt_kind,
)

PET_GLOB = "*/PET_image.nii.gz"


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)


@pytest.fixture(scope="module")
def sts019(shared_data):
    """A small PET patient (15 tumour slices of 28 x 28): every foreground slice, and the volume."""
    samples = load_samples(shared_data / "pet-sts", image_glob=PET_GLOB, cases=["STS_019"], every=1, progress=False)
    (volume,) = load_volumes(shared_data / "pet-sts", image_glob=PET_GLOB, cases=["STS_019"])
    return samples, volume


def _contains(outer: np.ndarray, inner: np.ndarray) -> bool:
    return bool(outer[0] <= inner[0] and outer[1] <= inner[1] and outer[2] >= inner[2] and outer[3] >= inner[3])


def test_samples_carry_the_3d_context(sts019):
    samples, volume = sts019
    ref = volume.labels > 0
    zs = np.flatnonzero(ref.reshape(ref.shape[0], -1).any(axis=1))
    assert [s.slice_index for s in samples] == zs.tolist()  # every foreground slice, not every 5th
    box3d = reference_box(ref)[[0, 1, 3, 4]]
    for s in samples:
        np.testing.assert_array_equal(s.box3d, box3d)
        assert _contains(s.box3d, s.box())
        near = [mask_box(ref[n]) for n in (s.slice_index - 1, s.slice_index + 1) if 0 <= n < ref.shape[0]]
        expected = [b for b in near if b is not None]
        assert len(s.neighbour_boxes) == len(expected)
        for got, want in zip(s.neighbour_boxes, expected, strict=True):
            np.testing.assert_array_equal(got, want)
    # the end slices of the tumour have one neighbour that holds it, the inner ones two
    assert len(samples[0].neighbour_boxes) == 1 and len(samples[-1].neighbour_boxes) == 1
    assert all(len(s.neighbour_boxes) == 2 for s in samples[1:-1])
    # the 3D extent is loose on the slices away from the largest one
    areas = [(s.box()[2] - s.box()[0] + 1) * (s.box()[3] - s.box()[1] + 1) for s in samples]
    extent = (box3d[2] - box3d[0] + 1) * (box3d[3] - box3d[1] + 1)
    assert min(areas) < 0.5 * extent


def test_prompt_kinds_are_drawn_with_their_shares(sts019):
    samples, _ = sts019
    inner = samples[len(samples) // 2]
    rng = np.random.default_rng(0)
    aug = Augment(box3d_prob=0.3, neighbour_prob=0.4)
    kinds = [prompt_kind(inner, rng, aug) for _ in range(4000)]
    shares = {k: kinds.count(k) / len(kinds) for k in ("exact", "box3d", "neighbour")}
    assert abs(shares["box3d"] - 0.3) < 0.03 and abs(shares["neighbour"] - 0.4) < 0.03
    assert abs(shares["exact"] - 0.3) < 0.03
    # no context: a 2D sample always gets its exact box; validation inputs too
    flat = type(inner)(image=inner.image, mask=inner.mask, spacing=inner.spacing, case="x")
    assert {prompt_kind(flat, rng, aug) for _ in range(200)} == {"exact"}
    assert {prompt_kind(inner, rng, Augment.none()) for _ in range(200)} == {"exact"}


def test_prompt_boxes_match_what_3d_inference_gives(sts019):
    samples, _ = sts019
    rng = np.random.default_rng(1)
    s = samples[len(samples) // 2]
    size = s.mask.shape
    margin = propagation_margin(size)
    assert margin == pytest.approx(3.0 * max(size) / 256)
    np.testing.assert_array_equal(prompt_box(s, "exact", rng), s.box())
    grown = [prompt_box(s, "neighbour", rng) for _ in range(50)]
    options = [np.clip(b + np.array([-margin, -margin, margin, margin]), 0, [size[1] - 1, size[0] - 1] * 2)
               for b in s.neighbour_boxes]  # fmt: skip
    assert all(any(np.allclose(g, o) for o in options) for g in grown)
    assert {tuple(g) for g in grown} == {tuple(o.astype(np.float32)) for o in options}  # both neighbours used
    loose = [prompt_box(s, "box3d", rng) for _ in range(100)]
    assert all(_contains(b, s.box3d) for b in loose)
    assert any(np.array_equal(b, s.box3d) for b in loose) and any(not np.array_equal(b, s.box3d) for b in loose)
    assert all(b[0] >= 0 and b[1] >= 0 and b[2] <= size[1] - 1 and b[3] <= size[0] - 1 for b in loose)


def test_flipped_boxes_follow_the_flipped_mask(sts019):
    samples, _ = sts019
    s = samples[3]
    for code in range(4):
        np.testing.assert_array_equal(flip_box(s.box(), code, s.mask.shape), mask_box(apply_flip(s.mask, code)))


def test_prepared_neighbour_prompts_are_in_model_space(sts019):
    from medfoundry.preprocessing.resize import ResizeLongestSide

    samples, _ = sts019
    batch = samples[4:8]
    rng = np.random.default_rng(2)
    only_neighbour = Augment(flip_prob=0.0, jitter=0.0, point_prob=0.0, points=0, neighbour_prob=1.0)
    out = prepare_targets(batch, [0] * len(batch), rng, only_neighbour, with_points=False)
    assert out["boxes"].shape == (4, 1, 4) and out["points"] is None
    for s, box in zip(batch, out["boxes"][:, 0].numpy(), strict=True):
        t = ResizeLongestSide(s.mask.shape)
        margin = propagation_margin(s.mask.shape)
        h, w = s.mask.shape
        candidates = [t.apply_boxes(np.clip(b + [-margin, -margin, margin, margin], 0, [w - 1, h - 1] * 2))[0]
                      for b in s.neighbour_boxes]  # fmt: skip
        assert any(np.allclose(box, c, atol=1e-4) for c in candidates)


@pytest.mark.slow
def test_3d_evaluation_is_the_segment_path(sts019, real_model, tmp_path):
    from medfoundry.api import segment_image
    from medfoundry.evaluation import dice
    from medfoundry.inference.predictor import LiteMedSAMPredictor
    from medfoundry.inference.prompts import ObjectPrompt
    from medfoundry.io import read_image

    _, vol = sts019
    ref = vol.labels > 0
    memo = fp32_encoder(real_model, "torch")
    scores = evaluate_volumes(real_model, [vol], slices2d=True, memo=memo)
    assert set(scores["per_case"][0]) == {"case", "dsc", "nsd", "dsc_loose", "nsd_loose", "dsc2d", "nsd2d"}
    encoded = len(memo)
    assert ref.any(axis=(1, 2)).sum() <= encoded <= ref.shape[0]
    # the torch and ONNX fp32 encoders give the same scores
    onnx = evaluate_volumes(real_model, [vol], loose=False, memo=fp32_encoder(real_model, "onnx"))
    assert abs(onnx["dsc"] - scores["dsc"]) < 0.01
    # the same labels as 'medfoundry segment --box <3D box>' (API, torch backend) on the same file
    image = read_image(vol.source, modality="PET")
    for key, box in (("dsc", reference_box(ref)), ("dsc_loose", loose_box(ref, "STS_019:1"))):
        predictor = LiteMedSAMPredictor(real_model, backend=memo)  # the same embeddings, the API's path
        labels = segment_image(image, [ObjectPrompt(box=box)], predictor, progress=False).labels.array
        assert scores[key] == pytest.approx(dice(labels > 0, ref), abs=1e-6)
    # the loose box holds the exact one and stays in the image; it is the same box every time
    exact, loose = reference_box(ref), loose_box(ref, "STS_019:1")
    assert np.all(loose[:3] <= exact[:3]) and np.all(loose[3:] >= exact[3:]) and np.any(loose != exact)
    np.testing.assert_array_equal(loose, loose_box(ref, "STS_019:1"))
    assert 0 < scores["dsc"] <= 1 and 0 < scores["dsc2d"] <= 1
    again = evaluate_volumes(real_model, [vol], slices2d=True, memo=memo)
    assert len(memo) == encoded and again["dsc"] == scores["dsc"]  # frozen encoder: no new encoder work


def test_3d_validation_keeps_the_untrained_adapter_when_no_epoch_beats_it(sts019, shared_data, tmp_path):
    from medfoundry.errors import MedfoundryWarning

    samples, vol = sts019
    base = build_tiny_lite_medsam(seed=0)
    model = build_adapter(base, "decoder")
    cfg = FinetuneConfig(epochs=3, batch_size=2, steps_per_epoch=1, lr=0.0, patience=1, warmup_steps=1)
    with pytest.warns(MedfoundryWarning, match="no epoch of 3 beat the untrained adapter"):
        result = finetune(model, samples[:6], [], tmp_path / "run", config=cfg,
                          base_fingerprint=base_fingerprint(base), progress=False, val_volumes=[vol])  # fmt: skip
    saved = json.loads((tmp_path / "run" / "history.json").read_text())
    history = saved["epochs"]
    assert history[0]["epoch"] == -1 and history[0]["train_loss"] is None  # scored before training
    # lr 0: no epoch beats the untrained adapter; patience (1) does not stop such a run, it trains on to its last
    # epoch, and best.pt is the untrained adapter, said in history.json and the result
    assert [h["epoch"] for h in history] == [-1, 0, 1, 2]
    assert result.best_epoch == -1 and read_adapter(result.best)["meta"]["epoch"] == -1
    assert result.best_is_untrained and saved["best_is_untrained"] and saved["best_epoch"] == -1
    assert saved["notice"] == result.notice and "best.pt is the untrained adapter" in saved["notice"]
    assert saved["stopped"].startswith("3 epochs")
    assert len({h["val3d_dsc"] for h in history}) == 1
    for key in ("val3d_dsc", "val3d_dsc_loose", "val3d_nsd", "val_dsc"):
        assert 0.0 <= history[-1][key] <= 1.0
    assert set(history[-1]["val3d_per_case"]) == {"STS_019"} and history[-1]["seconds"] > 0
    assert read_adapter(result.best)["meta"]["val_cases"] == ["STS_019"]


def test_finetune_cli_defaults_validate_in_3d(shared_data, tmp_path, capsys):
    pet = shared_data / "pet-sts"
    out = tmp_path / "run"
    args = ["finetune", str(pet), str(out), "--image-glob", PET_GLOB, "--cases", "STS_012", "STS_019",
            "--val-cases", "STS_019", "--epochs", "2", "--steps-per-epoch", "1", "--batch-size", "2",
            "--tiny-model", "--threads", "2"]  # fmt: skip
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "validating on 1 volumes (3D box + propagation)" in text and "3D val DSC" in text
    history = json.loads((out / "history.json").read_text())["epochs"]
    assert [h["epoch"] for h in history][:2] == [-1, 0] and all("val3d_dsc_loose" in h for h in history)
    assert "epoch 1/2: loss" in text and "left:" in text and "stopped: 2 epochs" in text  # progress, time left
    cfg = read_adapter(out / "best.pt")["meta"]["train_config"]
    assert cfg["box3d_prob"] == 0.3 and cfg["neighbour_prob"] == 0.4 and cfg["patience"] == 3
    assert cfg["min_epochs"] == 6 and cfg["warmup_steps"] is None  # warm-up: one epoch
    # every foreground slice of the training patient is a sample
    n_slices = int((load_volumes(pet, image_glob=PET_GLOB, cases=["STS_012"])[0].labels > 0).any(axis=(1, 2)).sum())
    assert f"training on {n_slices} samples from 1 cases" in text
    model = load_adapted_model(out / "best.pt")
    assert isinstance(model, torch.nn.Module)
    assert main(args[:-2] + ["--box3d-prob", "0.8", "--neighbour-prob", "0.5", "--overwrite"]) == 2
    assert "must not exceed 1" in capsys.readouterr().err


def test_loose_box_of_a_2d_box_stays_in_the_image():
    from medfoundry.preprocessing.boxes import loosen_box

    rng = np.random.default_rng(0)
    box = np.array([2.0, 3.0, 10.0, 12.0], dtype=np.float32)
    for _ in range(200):
        b = loosen_box(box, rng, (14, 12))
        assert _contains(b, box) and b[2] <= 11 and b[3] <= 13 and b[0] >= 0 and b[1] >= 0
