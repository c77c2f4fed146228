"""nnU-Net arm end to end from the CLI on a tiny schedule: prepare -> plan -> train (baseline and every fusion
variant, tiny random encoders) -> predict -> evaluate, plus resuming an interrupted training.

The volumes are small synthetic PET-like scans (bright spheres in gamma noise) so that nnU-Net's planning, training
and inference fit the test budget on two shared cores; the real PET-STS run is bench/nnunet_pet.py.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from medfoundry.cli.main import main
from medfoundry.errors import InputError
from medfoundry.io import MedicalImage, read_image, read_mask, write_image, write_mask
from medfoundry.training.nnunet.report import CaseResult, case_metrics, summarize

VARIANTS = ("baseline", "sam", "convnext1", "convnext2", "dino")
SPACING = (4.0, 4.0, 3.27)


def _synthetic_case(root: Path, case: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = (28, 16, 40)  # nnU-Net slices along y here (largest spacing): 16 slices of 28 x 40
    zz, yy, xx = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    centre = rng.uniform([8, 5, 10], [20, 11, 30])
    radius = rng.uniform(2.5, 4.0)
    mask = (((zz - centre[0]) * 0.8) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2) < radius**2
    image = rng.gamma(2.0, 0.6, size=shape).astype(np.float32) + 9.0 * mask
    (root / case).mkdir(parents=True)
    img = MedicalImage(image, SPACING, origin=(12.0, -30.0, 100.0), modality="PET")
    write_image(img, root / case / "PET_image.nii.gz")
    write_mask(mask.astype(np.uint8), root / case / "PET_mask.nii.gz", reference=img)


@pytest.fixture(scope="module")
def planned_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(2)
    base = tmp_path_factory.mktemp("nnunet")
    data = base / "data"
    for i in range(5):
        _synthetic_case(data, f"S{i:02d}", seed=i)
    run = base / "run"
    before = {k: os.environ.get(k) for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    argv = ["nnunet", "prepare", str(data), "--run-dir", str(run), "--test-fraction", "0.4"]
    assert main([*argv, "--fractions", "100", "50", "--dataset-id", "777", "--name", "Synth"]) == 0
    assert main(["nnunet", "plan", "--run-dir", str(run)]) == 0
    # nnU-Net's folder variables were set only while it ran
    assert {k: os.environ.get(k) for k in before} == before
    return run


def _train(run: Path, variant: str, *extra: str) -> int:
    argv = ["nnunet", "train", "--run-dir", str(run), "--variant", variant, "--fraction", "50"]
    argv += ["--schedule", "tiny", "--workers", "0", *extra]
    if variant != "baseline":
        argv.append("--tiny-encoder")
    return main(argv)


@pytest.mark.slow  # CI time (>15 s on 2 cores): python -m pytest -m slow
def test_cli_end_to_end_all_variants(planned_run: Path, capsys: pytest.CaptureFixture) -> None:
    run = planned_run
    manifest = json.loads((run / "medfoundry_nnunet.json").read_text())
    pre = run / "nnUNet_preprocessed" / "Dataset777_Synth"
    splits = json.loads((pre / "splits_final.json").read_text())
    assert [sorted(s["train"]) for s in splits] == [manifest["fractions"]["100"], manifest["fractions"]["50"]]
    plans = json.loads((pre / "nnUNetPlans.json").read_text())
    assert plans["configurations"]["2d"]["normalization_schemes"] == ["ZScoreNormalization"]

    for variant in VARIANTS:
        assert _train(run, variant) == 0
        folder = next(
            (run / "nnUNet_results" / "Dataset777_Synth").glob(f"*MF{'' if variant == 'baseline' else '_nn'}*")
        )
        info_files = list((run / "nnUNet_results" / "Dataset777_Synth").glob("*/fold_1/medfoundry_model.json"))
        assert folder.is_dir() and len(info_files) >= 1
    results = run / "nnUNet_results" / "Dataset777_Synth"
    trained = sorted(p.parent.parent.name for p in results.glob("*/fold_1/checkpoint_final.pth"))
    assert trained == sorted(
        f"{n}__nnUNetPlans__2d"
        for n in ("nnUNetTrainerMF", "nnUNetTrainerMF_nnSAM", "nnUNetTrainerMF_nnConvNeXt1",
                  "nnUNetTrainerMF_nnConvNeXt2", "nnUNetTrainerMF_nnDINO")
    )  # fmt: skip
    sam = torch.load(results / "nnUNetTrainerMF_nnSAM__nnUNetPlans__2d/fold_1/checkpoint_final.pth", weights_only=False)
    assert sam["trainer_name"] == "nnUNetTrainerMF_nnSAM" and sam["current_epoch"] == 1
    assert any(k.startswith("fuse.") for k in sam["network_weights"])
    assert not any(k.startswith("frozen") for k in sam["network_weights"])
    info = json.loads((results / "nnUNetTrainerMF_nnSAM__nnUNetPlans__2d/fold_1/medfoundry_model.json").read_text())
    assert info["training_cases"] == manifest["fractions"]["50"] and info["encoder"]["name"] == "litemedsam-tiny"

    # a finished model is not retrained by accident
    assert _train(run, "baseline") == 2
    assert "output exists" in capsys.readouterr().err

    for variant in ("baseline", "convnext2"):
        argv = ["nnunet", "predict", "--run-dir", str(run), "--variant", variant, "--fraction", "50"]
        assert main(argv) == 0
    for case in manifest["test"]:
        image = read_image(run / "nnUNet_raw/Dataset777_Synth/imagesTs" / f"{case}_0000.nii.gz")
        pred = read_mask(run / "predictions/baseline/f50" / f"{case}.nii.gz")
        assert pred.same_grid(image) and set(np.unique(pred.array)) <= {0, 1}

    assert main(["nnunet", "evaluate", "--run-dir", str(run)]) == 0
    reports = run / "reports"
    assert (reports / "dice_vs_fraction.png").stat().st_size > 1000
    rows = list(csv.DictReader(open(reports / "summary.csv")))
    assert [(r["variant"], r["fraction"]) for r in rows] == [("baseline", "50.0"), ("convnext2", "50.0")]
    per_case = list(csv.DictReader(open(reports / "baseline_f50.csv")))
    assert [r["case"] for r in per_case] == sorted(manifest["test"])
    # the table holds the metrics of the written masks
    from medfoundry.evaluation import dice

    case = per_case[0]["case"]
    gt = read_mask(run / "nnUNet_raw/Dataset777_Synth/labelsTs" / f"{case}.nii.gz")
    pred = read_mask(run / "predictions/baseline/f50" / f"{case}.nii.gz")
    assert float(per_case[0]["dice"]) == pytest.approx(dice(pred.array > 0, gt.array > 0), abs=1e-9)
    assert main(["nnunet", "evaluate", "--run-dir", str(run)]) == 2  # existing report kept

    # the frozen encoder is rebuilt from the recorded spec and must be the one the model was trained with
    from medfoundry.errors import WeightsError
    from medfoundry.training.nnunet.predict import load_predictor

    info_path = results / "nnUNetTrainerMF_nnDINO__nnUNetPlans__2d/fold_1/medfoundry_model.json"
    info = json.loads(info_path.read_text())
    info["fusion"]["seed"] = 1  # another random tiny encoder
    info_path.write_text(json.dumps(info))
    with pytest.raises(WeightsError, match="differ from the ones this model was trained with"):
        load_predictor(run, "dino", 50)


def test_interrupted_training_resumes_from_checkpoint(planned_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from medfoundry.training.nnunet.schedule import make_schedule
    from medfoundry.training.nnunet.trainers import train, trainer_class

    cls = trainer_class("baseline")
    original = cls.on_epoch_end

    def stop_after_first_epoch(self) -> None:
        original(self)
        if self.current_epoch == 1:
            raise KeyboardInterrupt

    schedule = make_schedule("tiny", epochs=2)
    monkeypatch.setattr(cls, "on_epoch_end", stop_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(planned_run, "baseline", 100, schedule, data_workers=0)
    monkeypatch.setattr(cls, "on_epoch_end", original)
    folder = planned_run / "nnUNet_results/Dataset777_Synth/nnUNetTrainerMF__nnUNetPlans__2d/fold_0"
    assert (folder / "checkpoint_latest.pth").is_file() and not (folder / "checkpoint_final.pth").exists()
    latest = torch.load(folder / "checkpoint_latest.pth", weights_only=False)
    with pytest.raises(InputError, match="interrupted training"):
        train(planned_run, "baseline", 100, schedule, data_workers=0)
    train(planned_run, "baseline", 100, schedule, data_workers=0, resume=True)
    final = torch.load(folder / "checkpoint_final.pth", weights_only=False)
    assert latest["current_epoch"] == 1 and final["current_epoch"] == 2
    # the resumed run kept the first epoch's log and added only the second
    assert len(final["logging"]["train_losses"]) == 2
    assert final["logging"]["train_losses"][0] == latest["logging"]["train_losses"][0]
    assert not (folder / "checkpoint_latest.pth").exists()


def test_snapshots_are_kept_and_predict_like_the_final_model(planned_run: Path) -> None:
    from medfoundry.errors import InputError as Refused
    from medfoundry.training.nnunet.predict import load_predictor
    from medfoundry.training.nnunet.schedule import make_schedule, snapshot_name
    from medfoundry.training.nnunet.trainers import train

    with pytest.raises(Refused, match="snapshot epochs must lie in 1..2"):
        make_schedule("tiny", epochs=2, snapshot_epochs=(3,))
    schedule = make_schedule("tiny", epochs=2, snapshot_epochs=(1,))
    folder = train(planned_run, "baseline", 100, schedule, data_workers=0, overwrite=True)
    snap = torch.load(folder / snapshot_name(1), weights_only=False)
    final = torch.load(folder / "checkpoint_final.pth", weights_only=False)
    assert len(snap["logging"]["train_losses"]) == 1 and len(final["logging"]["train_losses"]) == 2
    assert any(not torch.equal(snap["network_weights"][k], v) for k, v in final["network_weights"].items())
    assert not (folder / snapshot_name(2)).exists()  # the last epoch is checkpoint_final.pth
    predictor = load_predictor(planned_run, "baseline", 100, checkpoint=snapshot_name(1))
    weights = predictor.list_of_parameters[0]
    assert all(torch.equal(weights[k], v) for k, v in snap["network_weights"].items())


def test_unknown_fraction_and_unplanned_run_are_clear(planned_run: Path, tmp_path: Path) -> None:
    from medfoundry.training.nnunet.trainers import train

    with pytest.raises(InputError, match="training fraction 10% was not prepared"):
        train(planned_run, "baseline", 10)
    with pytest.raises(InputError, match="not a medfoundry nnU-Net run directory"):
        train(tmp_path, "baseline", 100)


def test_summary_counts_overlap_only_where_there_is_a_lesion() -> None:
    gt = np.zeros((4, 6, 6), np.uint8)
    gt[1:3, 1:3, 1:3] = 1
    pred = np.zeros_like(gt)
    pred[1:3, 1:3, 1:2] = 1
    pred[3, 5, 5] = 1  # a separate false-positive voxel
    spacing = (2.0, 1.0, 1.0)
    a = case_metrics("a", pred, gt, spacing)
    assert a.dice == pytest.approx(2 * 4 / (5 + 8)) and a.iou == pytest.approx(4 / 9)
    assert a.fpv_ml == pytest.approx(0.002) and a.fnv_ml == 0.0
    empty = np.zeros_like(gt)
    b = case_metrics("b", pred, empty, spacing)
    assert b.dice is None and b.fpv_ml == pytest.approx(5 * 0.002)
    s = summarize([a, b, CaseResult("c", 1.0, 0.0, 0.0, 0.0, 0.0, 1.0)], "baseline", 10)
    assert s.cases == 3 and s.cases_with_lesion == 2
    assert s.dice == pytest.approx(a.dice / 2) and s.fpv_ml == pytest.approx((a.fpv_ml + b.fpv_ml) / 3)


@pytest.mark.slow  # CI time (>15 s on 2 cores): python -m pytest -m slow
def test_replanning_replaces_the_plan_only_once_it_is_complete(planned_run: Path, monkeypatch) -> None:
    """Runs last (it replans the shared run): a refused or interrupted ``plan`` leaves the old plan untouched and no
    staging folder behind; ``--overwrite`` swaps in a complete new one that loads."""
    from nnunetv2.experiment_planning import plan_and_preprocess_api

    from medfoundry.errors import OutputExistsError
    from medfoundry.training.nnunet.plan import load_plans, plan_and_preprocess

    root = planned_run / "nnUNet_preprocessed"
    (dataset,) = root.iterdir()

    def state() -> dict:
        return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}

    before = state()
    with pytest.raises(OutputExistsError):
        plan_and_preprocess(planned_run)

    def interrupted(*args, **kwargs) -> None:
        raise RuntimeError("interrupted while preprocessing")

    with monkeypatch.context() as patch:
        patch.setattr(plan_and_preprocess_api, "preprocess", interrupted)
        with pytest.raises(RuntimeError, match="interrupted"):
            plan_and_preprocess(planned_run, overwrite=True)
    assert state() == before
    plan_and_preprocess(planned_run, overwrite=True)
    assert [p.name for p in root.iterdir()] == [dataset.name]
    assert (dataset / "splits_final.json").is_file() and load_plans(planned_run)[1]["dataset_name"] == dataset.name
