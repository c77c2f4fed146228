"""Training engine (resume), training data checks, exemplar synthesis and the finetune / synthesize / segment
CLIs on tiny runs with real PET slices; the defaults that do not depend on the validation patients (issue 30):
learning-rate warm-up over the first epoch, early stopping counted after a minimum number of epochs, training on
while the untrained adapter is the best and saying so when no epoch beats it, the time left; and the validation
triplets of bench/adapt_cli.py --splits."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medfoundry.cli.main import main
from medfoundry.data.slices2d import load_samples, split_cases
from medfoundry.data.synthesis import Slice2D, SynthesisConfig, synthesize_one
from medfoundry.errors import InputError
from medfoundry.io import MedicalImage, read_image, read_mask, write_image, write_mask
from medfoundry.modeling.adapters.io import base_fingerprint, load_adapted_model, read_adapter
from medfoundry.modeling.lite_medsam import build_tiny_lite_medsam
from medfoundry.modeling.registry import build_adapter
from medfoundry.training.finetune import FinetuneConfig, finetune
from medfoundry.training.finetune.schedules import make_scheduler
from medfoundry.training.finetune.stopping import StopRule, format_duration, time_left

PET_GLOB = "*/PET_image.nii.gz"
BENCH = Path(__file__).resolve().parents[1] / "bench" / "adapt_cli.py"


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)


@pytest.fixture(scope="module")
def pet_samples(shared_data):
    return load_samples(shared_data / "pet-sts", image_glob=PET_GLOB, cases=["STS_001", "STS_002"], every=20,
                        progress=False)  # fmt: skip


def _run(samples, out, epochs, resume=False, on_epoch_end=None):
    base = build_tiny_lite_medsam(seed=0)
    fp = base_fingerprint(base)
    model = build_adapter(base, "decoder")
    cfg = FinetuneConfig(epochs=epochs, batch_size=1, steps_per_epoch=1, flip_prob=0.0, warmup_steps=1, lr=1e-3)
    train, val = samples[:1], samples[-1:]
    return finetune(model, train, val, out, config=cfg, base_fingerprint=fp, resume=resume, progress=False,
                    on_epoch_end=on_epoch_end)  # fmt: skip


def test_interrupted_run_resumes_to_the_same_adapter(pet_samples, tmp_path):
    full = _run(pet_samples, tmp_path / "full", epochs=2)

    def stop(epoch, record):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(pet_samples, tmp_path / "cut", epochs=2, on_epoch_end=stop)
    assert read_adapter(tmp_path / "cut" / "last.pt")["train_state"]["epoch"] == 0
    with pytest.raises(InputError, match="`resume`"):
        _run(pet_samples, tmp_path / "cut", epochs=2)
    resumed = _run(pet_samples, tmp_path / "cut", epochs=2, resume=True)
    assert [h["epoch"] for h in resumed.history] == [0, 1]
    a, b = read_adapter(full.last)["state"], read_adapter(resumed.last)["state"]
    assert set(a) == set(b)
    for key in a:
        torch.testing.assert_close(a[key], b[key])
    assert (tmp_path / "cut" / "curves.png").stat().st_size > 1000
    hist = json.loads((tmp_path / "cut" / "history.json").read_text())["epochs"]
    # the recorded validation scores are those of the saved last adapter on the validation slice
    from medfoundry.training.finetune import evaluate_samples

    last = load_adapted_model(tmp_path / "cut" / "last.pt", base_model=build_tiny_lite_medsam(seed=0), merge=False)
    check = evaluate_samples(last, pet_samples[-1:])
    assert hist[-1]["val_dsc"] == pytest.approx(check["dsc"], abs=0.02)  # float16 cache vs float32 embeddings
    assert hist[-1]["val_nsd"] == pytest.approx(check["nsd"], abs=0.02)


def _pair(tmp_path, name, image, mask, spacing=(2.0, 2.0)):
    img = MedicalImage(image.astype(np.float32), spacing, modality="PET")
    write_image(img, tmp_path / f"{name}_image.nii.gz")
    write_mask(mask.astype(np.uint8), tmp_path / f"{name}_mask.nii.gz", reference=img)


def test_training_folder_checks(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    _pair(empty, "a", np.random.rand(32, 32), np.zeros((32, 32)))
    with pytest.raises(InputError, match="no foreground"):
        load_samples(empty, progress=False)
    bad = tmp_path / "bad"
    bad.mkdir()
    img = MedicalImage(np.random.rand(32, 32).astype(np.float32), (2.0, 2.0), modality="PET")
    write_image(img, bad / "a_image.nii.gz")
    other = MedicalImage(np.ones((30, 32), np.uint8), (2.0, 2.0))
    write_mask(other, bad / "a_mask.nii.gz")
    with pytest.raises(InputError, match="a_mask"):
        load_samples(bad, progress=False)
    with pytest.raises(InputError, match="no image/mask pairs"):
        load_samples(tmp_path / "empty", image_glob="*.png", progress=False)


def test_synthesis_labels_and_positions(shared_data):
    root = shared_data / "pet-sts" / "STS_003"
    image = read_image(root / "PET_image.nii.gz", modality="PET")
    mask = read_mask(root / "PET_mask.nii.gz", reference=image)
    z = int(np.argmax(mask.array.reshape(mask.array.shape[0], -1).sum(1)))
    labels = mask.array[z].astype(np.uint8)
    ys, xs = np.nonzero(labels)
    labels[(labels > 0) & (np.arange(labels.shape[1])[None, :] > np.median(xs))] = 2  # two classes
    exemplar = Slice2D(image.array[z], labels, (1.0, 1.0), "STS_003")
    bg_z = int(np.flatnonzero(~mask.array.reshape(mask.array.shape[0], -1).any(1))[0])
    background = Slice2D(image.array[bg_z], np.zeros_like(labels), (1.0, 1.0), "STS_003")
    cfg = SynthesisConfig()
    rng = np.random.default_rng(0)
    h, w = labels.shape
    for _ in range(5):
        synth, synth_labels = synthesize_one(exemplar, background, rng, cfg)
        assert synth.shape == background.image.shape and synth_labels.shape == labels.shape
        assert set(np.unique(synth_labels)) <= {0, 1, 2} and (synth_labels > 0).any()
        # pasted pixels come from the (scaled) exemplar object, not from the background
        inside = synth_labels > 0
        assert not np.allclose(synth[inside], background.image[inside] * 1.0)
        # each object lands near its exemplar position (relative coordinates)
        for value in (1, 2):
            if not (synth_labels == value).any():
                continue
            ey, ex = np.argwhere(labels == value).mean(0)
            sy, sx = np.argwhere(synth_labels == value).mean(0)
            assert abs(sy - ey) / h < 0.2 and abs(sx - ex) / w < 0.2


@pytest.mark.slow  # CI time (>15 s on 2 cores): python -m pytest -m slow
def test_cli_synthesize_finetune_segment(shared_data, tmp_path, capsys):
    pet = shared_data / "pet-sts"
    syn = tmp_path / "syn"
    assert main(["synthesize", str(pet), str(syn), "--image-glob", PET_GLOB, "--n-exemplars", "2", "--count", "3"]) == 0
    manifest = json.loads((syn / "dataset.json").read_text())
    assert manifest["modality"] == "PET" and len(manifest["pairs"]) == 3
    assert manifest["exemplar_cases"] == ["STS_001", "STS_002"]
    assert (syn / "synthesis.png").is_file()
    assert main(["synthesize", str(pet), str(syn), "--image-glob", PET_GLOB, "--count", "3"]) == 2  # exists
    assert main(["synthesize", str(pet), str(tmp_path / "s2"), "--image-glob", PET_GLOB,
                 "--n-exemplars", "99"]) == 2  # fmt: skip
    assert "only 30 cases" in capsys.readouterr().err
    assert not (tmp_path / "s2").exists()

    out = tmp_path / "run"
    args = ["finetune", str(pet), str(out), "--image-glob", PET_GLOB, "--cases", "STS_001", "STS_002",
            "--every", "30", "--extra", str(syn), "--method", "lora", "--epochs", "1", "--batch-size", "1",
            "--steps-per-epoch", "1", "--tiny-model", "--threads", "2"]  # fmt: skip
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "lora:" in text and "trainable of" in text and "%" in text
    payload = read_adapter(out / "best.pt")
    assert payload["method"] == "lora" and payload["config"]["rank"] == 4
    assert all("lora_" in k for k in payload["state"])
    assert main(args) == 2  # a previous run is never clobbered
    assert "--resume" in capsys.readouterr().err

    # the adapter drives 'medfoundry segment' and refuses another base model
    image = read_image(pet / "STS_001" / "PET_image.nii.gz", modality="PET")
    mask = read_mask(pet / "STS_001" / "PET_mask.nii.gz", reference=image)
    z = int(np.argmax(mask.array.reshape(mask.array.shape[0], -1).sum(1)))
    slice_path = tmp_path / "slice.nii.gz"
    write_image(MedicalImage(image.array[z], image.spacing[:2], modality="PET"), slice_path)
    ys, xs = np.nonzero(mask.array[z])
    box = [str(v) for v in (xs.min(), ys.min(), xs.max(), ys.max())]
    seg = tmp_path / "seg.nii.gz"
    code = main(["segment", str(slice_path), "--box", *box, "--out", str(seg), "--adapter", str(out / "best.pt"),
                 "--backend", "torch", "--modality", "PET", "--no-progress"])  # fmt: skip
    assert code == 0 and read_mask(seg).array.shape == mask.array[z].shape
    # the same labels as the API with that adapter (so the CLI loaded and used it)
    from medfoundry.api import make_predictor, segment_image
    from medfoundry.inference.prompts import ObjectPrompt

    expected = segment_image(
        read_image(slice_path, modality="PET"),
        [ObjectPrompt(box=[float(v) for v in box])],
        make_predictor(backend="torch", adapter=out / "best.pt"),
        progress=False,
    )
    np.testing.assert_array_equal(read_mask(seg).array, expected.labels.array)
    from medfoundry.modeling.lite_medsam import packaged_weights_path

    code = main(["segment", str(slice_path), "--box", *box, "--out", str(tmp_path / "seg2.nii.gz"),
                 "--adapter", str(out / "best.pt"), "--weights", str(packaged_weights_path()),
                 "--backend", "torch", "--no-progress"])  # fmt: skip
    assert code == 2 and "another base model" in capsys.readouterr().err
    assert not (tmp_path / "seg2.nii.gz").exists()


def test_box_jitter_is_medsams_share_of_the_image():
    from medfoundry.training.finetune.augment import jitter_box

    rng = np.random.default_rng(0)
    box = np.array([100.0, 80.0, 140.0, 120.0], dtype=np.float32)
    shifts = np.stack([jitter_box(box, rng, 20, (256, 256)) - box for _ in range(2000)])
    grow = shifts * np.array([-1, -1, 1, 1])  # every side moves outwards
    assert grow.min() >= 0
    # 0-20 px on MedSAM's 1024-pixel input is 0-5 px on the 256-pixel model input, spread over the range
    assert grow.max() <= 5.0 and grow.max() > 4.5 and 2.0 < grow.mean() < 3.0
    np.testing.assert_array_equal(jitter_box(box, rng, 0, (256, 256)), box)
    edge = jitter_box(np.array([0.0, 0.0, 255.0, 200.0], dtype=np.float32), rng, 20, (201, 256))
    assert edge[0] == 0 and edge[1] == 0 and edge[2] == 255 and edge[3] == 200


def test_shared_cache_and_loose_box_evaluation(pet_samples):
    from medfoundry.training.finetune import evaluate_samples
    from medfoundry.training.finetune.engine import MemoryEmbeddingCache

    model = build_adapter(build_tiny_lite_medsam(seed=0), "decoder")
    cache = MemoryEmbeddingCache(model)
    samples = pet_samples[:3]
    exact = evaluate_samples(model, samples, cache=cache, loose_jitter=0.0)
    assert len(cache.memo) == 3 and exact["dsc_loose"] == exact["dsc"] and exact["nsd_loose"] == exact["nsd"]
    loose = evaluate_samples(model, samples, cache=cache, loose_jitter=20.0)
    assert len(cache.memo) == 3 and cache.memo.computed == 3  # second call: no new encoder work
    assert loose["dsc"] == exact["dsc"] and set(loose) == {"dsc", "nsd", "dsc_loose", "nsd_loose"}
    uncached = evaluate_samples(model, samples)
    assert abs(uncached["dsc"] - exact["dsc"]) < 0.02  # float16 cache vs float32 embeddings
    assert set(uncached) == {"dsc", "nsd"}


@pytest.mark.parametrize("method", ["lora", "dbsam"])
def test_decoder_warmup_trains_the_decoder_side_first_then_the_encoder(pet_samples, tmp_path, method):
    from medfoundry.training.finetune.engine import MemoryEmbeddingCache, encoder_side_parameters

    base = build_tiny_lite_medsam(seed=0)
    fp = base_fingerprint(base)
    model = build_adapter(base, method)
    enc_names = {n for n, p in model.image_encoder.named_parameters() if p.requires_grad}
    dec_names = {n for n, p in model.named_parameters() if p.requires_grad and not n.startswith("image_encoder.")}
    assert enc_names and dec_names
    start = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    lent = MemoryEmbeddingCache(build_adapter(build_tiny_lite_medsam(seed=0), "decoder"))  # the base's embeddings
    seen = []

    def snapshot(epoch, record):
        grads = {n: p.requires_grad for n, p in model.named_parameters() if n in start}
        seen.append((epoch, {n: not torch.equal(p.detach(), start[n]) for n, p in model.named_parameters()
                             if n in start}, grads))  # fmt: skip

    cfg = FinetuneConfig(epochs=3, batch_size=1, steps_per_epoch=2, flip_prob=0.0, warmup_steps=1, lr=1e-3,
                         decoder_warmup_epochs=2)  # fmt: skip
    result = finetune(model, pet_samples[:4], pet_samples[:2], tmp_path / "run", config=cfg, base_fingerprint=fp,
                      progress=False, on_epoch_end=snapshot, cache=lent)  # fmt: skip
    assert [e for e, _, _ in seen] == [0, 1, 2]
    for epoch, changed, grads in seen[:2]:  # warm-up: the encoder side held still, the decoder side trains
        assert not any(changed[n] for n in start if n.removeprefix("image_encoder.") in enc_names), epoch
        assert any(changed[n] for n in start if n.removeprefix("image_encoder.") not in enc_names), epoch
        assert not any(grads[f"image_encoder.{n}"] for n in enc_names)
    _, changed, grads = seen[2]  # then the encoder's adapters train too
    assert any(changed[f"image_encoder.{n}"] for n in enc_names) and all(grads.values())
    assert {n for n, p in model.image_encoder.named_parameters() if p.requires_grad} == enc_names
    assert len(encoder_side_parameters(model)) == len(enc_names) and result.trainable == sum(
        p.numel() for p in model.parameters() if p.requires_grad
    )
    # LoRA's untrained encoder is the base, so the lent cache served the warm-up; DB-SAM's is not (its fusion gate
    # mixes the conv branch in from the start), so it made its own
    assert (len(lent.memo) > 0) == (method == "lora")
    # the adapter file holds the encoder-side tensors trained after the warm-up
    reloaded = load_adapted_model(result.last, base_model=build_tiny_lite_medsam(seed=0), merge=False)
    now = dict(model.named_parameters())
    for n, p in reloaded.named_parameters():
        if n in start:
            assert torch.equal(p.detach(), now[n].detach()), n


def _lrs(warmup: int, decay: float, steps: int) -> list[float]:
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([param], lr=1.0)
    sched = make_scheduler(opt, "warmup-exp", warmup, decay)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])  # the rate of this step
        opt.step()
        sched.step()
    return out


def test_learning_rate_rises_linearly_then_decays():
    assert _lrs(4, 0.5, 7) == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 0.5, 0.25])
    assert _lrs(0, 0.5, 3) == pytest.approx([1.0, 1.0, 0.5])  # no warm-up


@pytest.fixture(scope="module")
def cache():
    """The tiny base's embeddings, shared by the decoder runs below (one encoder export)."""
    from medfoundry.training.finetune.engine import MemoryEmbeddingCache

    return MemoryEmbeddingCache(build_adapter(build_tiny_lite_medsam(seed=0), "decoder"))


def _run_decoder(samples, out, cache, **cfg):
    base = build_tiny_lite_medsam(seed=0)
    model = build_adapter(base, "decoder")
    config = FinetuneConfig(batch_size=1, flip_prob=0.0, **cfg)
    return finetune(model, samples[:2], samples[-1:], out, config=config, base_fingerprint=base_fingerprint(base),
                    progress=False, cache=cache)  # fmt: skip


def test_warmup_defaults_to_one_epoch(pet_samples, tmp_path, cache):
    # after one epoch of 3 steps the rate has just reached its peak with the one-epoch warm-up; with a 10-step warm-up
    # it is at 4 / 10 of it (the rate recorded is the next step's)
    kw = {"epochs": 1, "steps_per_epoch": 3, "lr": 1e-3}
    one_epoch = _run_decoder(pet_samples, tmp_path / "a", cache, warmup_steps=None, **kw)
    ten = _run_decoder(pet_samples, tmp_path / "b", cache, warmup_steps=10, **kw)
    assert one_epoch.history[-1]["lr"] == pytest.approx(1e-3)
    assert ten.history[-1]["lr"] == pytest.approx(4e-4)


def test_stop_rule_counts_patience_after_min_epochs_and_never_stops_on_the_untrained():
    rule = StopRule(max_epochs=12, patience=3, min_epochs=6)
    assert rule.first_stop == 6
    # best at epoch 1 (0-based): the old rule stopped after 5 epochs; now not before 6
    assert not rule.should_stop(5, 1) and rule.should_stop(6, 1)
    assert not rule.should_stop(7, 4) and rule.should_stop(8, 4)  # 3 epochs without a better one after epoch 5
    # the untrained adapter still the best: train on, whatever the patience
    assert not any(rule.should_stop(n, -1) for n in range(12)) and rule.should_stop(12, -1)
    assert not StopRule(12, patience=0).should_stop(11, 0)  # patience 0: never early
    # a decoder warm-up of 4 epochs: at least one epoch through the encoder, as before
    warm = StopRule(8, patience=1, min_epochs=0, warm_epochs=4)
    assert warm.first_stop == 5 and not warm.should_stop(4, 0) and warm.should_stop(5, 0)
    assert rule.end_if_no_better(3, 1) == 6 and rule.end_if_no_better(7, 6) == 10 and rule.end_if_no_better(2, -1) == 12


def test_time_left_from_the_epochs_run():
    rule = StopRule(max_epochs=12, patience=3, min_epochs=6)
    text = time_left(rule, 2, 1, [60.0, 30.0])
    # 4 more epochs until the earliest stop (epoch 6) at the last epoch's 30 s, 10 at most
    assert text == "left: 2 min 00 s if no better epoch comes (stop after epoch 6), at most 5 min 00 s (12 epochs)"
    assert time_left(rule, 2, -1, [60.0, 30.0]) == "left: at most 5 min 00 s (10 of 12 epochs)"
    assert time_left(rule, 6, 2, [30.0] * 6) == time_left(rule, 12, 11, [30.0] * 12) == "the run stops here"
    warm = StopRule(max_epochs=8, patience=3, min_epochs=6, warm_epochs=4)
    text = time_left(warm, 2, -1, [20.0, 20.0])
    assert text == "left: at most 40 s + 4 epochs through the encoder, not yet timed (6 of 8 epochs)"
    assert format_duration(59.6) == "1 min 00 s" and format_duration(3725) == "1 h 02 min"


def test_min_epochs_hold_off_early_stopping_in_a_run(pet_samples, tmp_path, cache):
    # 2D validation, lr 0: epoch 1 is the best and no later epoch beats it; patience 1 stops after 2 epochs, unless
    # min_epochs asks for 3
    kw = {"epochs": 10, "steps_per_epoch": 1, "lr": 0.0, "patience": 1, "warmup_steps": 1}
    early = _run_decoder(pet_samples, tmp_path / "a", cache, **kw)
    held = _run_decoder(pet_samples, tmp_path / "b", cache, min_epochs=3, **kw)
    assert [h["epoch"] for h in early.history] == [0, 1] and early.best_epoch == 0
    assert [h["epoch"] for h in held.history] == [0, 1, 2] and held.best_epoch == 0
    assert held.stopped.startswith("early stop after 3 epochs") and held.notice is None
    saved = json.loads((tmp_path / "b" / "history.json").read_text())
    assert saved["best_epoch"] == 0 and not saved["best_is_untrained"] and saved["stopped"] == held.stopped


def test_cli_says_when_best_is_the_untrained_adapter(shared_data, tmp_path, capsys):
    out = tmp_path / "run"
    # a learning rate too small to change a float32 weight: no epoch can beat the untrained adapter
    args = ["finetune", str(shared_data / "pet-sts"), str(out), "--image-glob", PET_GLOB, "--cases", "STS_012",
            "--val-cases", "STS_019", "--epochs", "2", "--patience", "1", "--min-epochs", "1", "--steps-per-epoch",
            "1", "--batch-size", "1", "--lr", "1e-12", "--tiny-model", "--threads", "2"]  # fmt: skip
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "medfoundry finetune: warning: no epoch of 2 beat the untrained adapter" in captured.err  # stderr
    assert "--val-cases" in captured.err  # with advice
    assert "(UNTRAINED: no epoch beat it" in captured.out and "NOTE: best.pt is the UNTRAINED adapter" in captured.out
    assert "stopped: 2 epochs" in captured.out  # trained on despite patience 1
    saved = json.loads((out / "history.json").read_text())
    assert saved["best_is_untrained"] and saved["best_epoch"] == -1 and "untrained adapter" in saved["notice"]
    assert [h["epoch"] for h in saved["epochs"]] == [-1, 0, 1]
    assert read_adapter(out / "best.pt")["meta"]["epoch"] == -1


def test_patient_split_keeps_three_validation_patients(pet_samples, shared_data):
    samples = load_samples(shared_data / "pet-sts", image_glob=PET_GLOB, every=40, progress=False,
                           cases=[f"STS_{i:03d}" for i in range(1, 11)])  # fmt: skip
    train, val = split_cases(samples, 0.2, seed=0, min_val=3)
    assert len({s.case for s in val}) == 3 and not {s.case for s in val} & {s.case for s in train}
    assert len({s.case for s in split_cases(samples, 0.2, seed=0)[1]}) == 2  # the plain 20 %
    two = [s for s in samples if s.case in ("STS_001", "STS_002")]
    assert len({s.case for s in split_cases(two, 0.2, seed=0, min_val=3)[1]}) == 1  # one case each side


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_adapt_cli", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_splits_are_seeded_distinct_and_disjoint_from_test(bench, shared_data):
    splits, test = bench.draw_splits(5)
    again, test_again = bench.draw_splits(5)
    assert splits == again and test == test_again  # deterministic
    pool, val0, fixed_test = bench._bench_module().split(0, 7, 3)
    assert test == fixed_test and len(test) == 7  # adapt_pet's test patients
    assert splits[0]["val"] == val0 and splits[0]["train"] == pool[:10]  # split 0: the documented run
    triplets = [tuple(s["val"]) for s in splits]
    assert len(set(triplets)) == 5 and all(len(t) == 3 for t in triplets)
    for s in splits:
        assert len(s["train"]) == 10 and len(set(s["train"])) == 10
        assert not set(s["val"]) & set(test) and not set(s["train"]) & set(test)
        assert not set(s["val"]) & set(s["train"])
    other, _ = bench.draw_splits(5, draw_seed=1)
    assert other[0] == splits[0] and [s["val"] for s in other[1:]] != [s["val"] for s in splits[1:]]
