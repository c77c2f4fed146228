"""``medfoundry classify build / embed / compare / predict`` end to end on small synthetic scans."""

from __future__ import annotations

import argparse
import csv
import importlib
import json

import numpy as np
import pytest
from test_classify_data import synthetic_case, write_nifti

from medfoundry.cli import classify
from medfoundry.cli.main import COMMANDS, build_parser


def run_cli(argv: list[str]) -> int:
    """Parse with the classify sub-command only, dispatching like ``medfoundry.cli.main.main``."""
    from medfoundry.cli.parameter_flags import as_flags
    from medfoundry.errors import MedfoundryError

    parser = argparse.ArgumentParser(prog="medfoundry")
    classify.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    try:
        return classify.run(args)
    except MedfoundryError as exc:
        print(f"medfoundry classify: error: {as_flags(str(exc), exc.parameters)}")
        return 2


@pytest.fixture()
def cases_csv(tmp_path):
    lines = ["case_id,image,mask,patient_id"]
    for i in range(10):
        lesions = (2, 3, 4) if i % 2 == 0 else (5, 6)
        image, label, _, _ = synthetic_case(tmp_path, f"s{i}", seed=i, nz=10, lesion_slices=lesions)
        lines.append(f"s{i},{image.name},{label.name},p{i}")
    (tmp_path / "cases.csv").write_text("\n".join(lines) + "\n")
    return tmp_path / "cases.csv"


def test_registered_on_the_real_parser():
    parser = build_parser()
    argvs = {
        "build": ["x"],
        "embed": ["x"],
        "compare": ["x", "--out", "o"],
        "predict": ["x", "--model", "m", "--out", "o"],
    }
    for step, rest in argvs.items():
        args = parser.parse_args(["classify", step, *rest])
        assert (args.command, args.step) == ("classify", step)
    assert importlib.import_module(COMMANDS["classify"]).run is classify.run  # main() dispatches here


def test_four_steps_end_to_end(cases_csv, tmp_path, capsys):
    ds = tmp_path / "ds"
    grid = ["--grid", "16", "16", "0", "--size", "32"]
    assert run_cli(["classify", "build", str(ds), "--cases", str(cases_csv), *grid, "--test-patients", "p0"]) == 0
    out = capsys.readouterr().out
    assert "100 slices from 10 cases, 25 abnormal" in out
    assert run_cli(["classify", "embed", str(ds), "--encoder", "dinov2_small", "--tiny"]) == 0
    caches = list((ds / "embeddings").iterdir())
    assert len(caches) == 1 and json.loads((caches[0] / "manifest.json").read_text())["complete"]
    # compare: linear head on the cache + CNN baseline
    cmp_dir = tmp_path / "cmp"
    assert (
        run_cli(["classify", "compare", str(ds), "--out", str(cmp_dir), "--cnn-epochs", "2", "--head-epochs", "40"])
        == 0
    )
    table = (cmp_dir / "table.md").read_text()
    assert "| dinov2_small + linear |" in table and "| baseline CNN |" in table
    with (cmp_dir / "table.csv").open() as handle:
        rows = {r["model"]: r for r in csv.DictReader(handle)}
    for row in rows.values():
        assert (int(row["n"]), int(row["n_pos"])) == (10, 3)  # test split = pinned patient p0 (lesion on 2-4)
        assert 0.0 <= float(row["accuracy"]) <= 1.0
        assert int(row["tp"]) + int(row["fp"]) + int(row["tn"]) + int(row["fn"]) == int(row["n"])
    for name in ("roc.png", "pr.png", "confusion.png", "models/dinov2_small.pt", "models/cnn.pt"):
        assert (cmp_dir / name).is_file()
    # predict on a scan with a lesion on slices 7-8, using both bundles
    image, label, _, _ = synthetic_case(tmp_path, "new", seed=42, nz=10, lesion_slices=(7, 8))
    for bundle in ("dinov2_small", "cnn"):
        pred_dir = tmp_path / f"pred_{bundle}"
        argv = ["classify", "predict", str(image), "--model", str(cmp_dir / "models" / f"{bundle}.pt")]
        assert run_cli([*argv, "--out", str(pred_dir), "--mask", str(label)]) == 0
        with (pred_dir / "slice_probabilities.csv").open() as handle:
            slices = list(csv.DictReader(handle))
        assert len(slices) == 10
        assert [int(s["lesion_voxels"]) > 0 for s in slices] == [z in (7, 8) for z in range(10)]
        summary = json.loads((pred_dir / "flagged_ranges.json").read_text())
        flagged = [int(s["grid_slice"]) for s in slices if s["flagged"] == "1"]
        covered = [z for r in summary["ranges"] for z in range(r["first_slice"], r["last_slice"] + 1)]
        assert covered == flagged  # native z grid: source slices == grid slices
        probs = np.array([float(s["probability"]) for s in slices])
        is_flagged = np.isin(np.arange(10), flagged)  # the CSV rounds to 6 decimals
        assert (probs[is_flagged] >= summary["threshold"] - 1e-6).all()
        assert (probs[~is_flagged] < summary["threshold"] + 1e-6).all()
        assert (pred_dir / "z_profile.png").read_bytes()[:4] == b"\x89PNG"
        assert (pred_dir / "coronal_mip.png").read_bytes()[:4] == b"\x89PNG"
    # outputs are not overwritten without --overwrite
    assert run_cli(["classify", "compare", str(ds), "--out", str(cmp_dir)]) == 2
    assert "output exists" in capsys.readouterr().out


def test_bad_input_exits_2_and_writes_nothing(cases_csv, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MEDFOUNDRY_WEIGHTS", str(tmp_path / "weights"))
    ds = tmp_path / "ds"
    assert (
        run_cli(["classify", "build", str(ds), "--cases", str(cases_csv), "--grid", "0", "0", "0", "--size", "16"]) == 0
    )
    assert run_cli(["classify", "embed", str(ds), "--encoder", "resnet50"]) == 2
    out = capsys.readouterr().out
    assert "resnet50.safetensors" in out and "never downloads" in out
    assert not (ds / "embeddings").exists()
    bad_mask = write_nifti(tmp_path / "bad.nii.gz", np.full((10, 16, 16), 3, np.uint8))
    image = tmp_path / "s0_pet.nii.gz"
    argv = ["classify", "build", str(tmp_path / "ds2"), "--case", "x", str(image), str(bad_mask)]
    assert run_cli(argv) == 2
    assert "--binarize" in capsys.readouterr().out and not (tmp_path / "ds2").exists()
    assert run_cli(["classify", "compare", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "not a slice dataset" in capsys.readouterr().out


def test_suv_window_model_predicts_in_suv(cases_csv, tmp_path, capsys):
    """A model built with --intensity suv-window sees the same pixels for a Bq/mL scan given its --suv-factor,
    and refuses the Bq/mL scan without one."""
    ds, cmp_dir = tmp_path / "ds", tmp_path / "cmp"
    build = ["classify", "build", str(ds), "--cases", str(cases_csv), "--grid", "16", "16", "0", "--size", "16"]
    assert run_cli([*build, "--intensity", "suv-window", "--suv-window", "4", "--test-patients", "p0"]) == 0
    assert run_cli(["classify", "compare", str(ds), "--out", str(cmp_dir), "--cnn-epochs", "1"]) == 0
    model = str(cmp_dir / "models" / "cnn.pt")
    image, _, vol, _ = synthetic_case(tmp_path, "new", seed=42, nz=10, lesion_slices=(7, 8))
    bq = write_nifti(tmp_path / "new_bq.nii.gz", vol * 5000.0)
    capsys.readouterr()
    assert run_cli(["classify", "predict", str(bq), "--model", model, "--out", str(tmp_path / "p0")]) == 2
    assert "new_bq.nii.gz" in capsys.readouterr().out and not (tmp_path / "p0").exists()
    probs = []
    for scan, extra, out in ((image, [], "p1"), (bq, ["--suv-factor", str(1 / 5000.0)], "p2")):
        assert run_cli(["classify", "predict", str(scan), "--model", model, "--out", str(tmp_path / out), *extra]) == 0
        with (tmp_path / out / "slice_probabilities.csv").open() as handle:
            probs.append([float(r["probability"]) for r in csv.DictReader(handle)])
    assert probs[0] == pytest.approx(probs[1], abs=1e-4)
