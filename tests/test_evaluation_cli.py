"""``medfoundry evaluate`` and ``evaluate_files``: files and folders, CSV output, refusals, challenge mode."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from medfoundry.cli import main as cli_main
from medfoundry.errors import InputError
from medfoundry.evaluation import challenge_case_metrics, evaluate_case, evaluate_files

SPACING_XYZ = (0.9, 1.2, 3.0)


@pytest.fixture
def cli(monkeypatch):
    """``medfoundry`` with only this command registered (other sub-commands belong to other modules)."""
    monkeypatch.setattr(cli_main, "COMMANDS", {"evaluate": "medfoundry.cli.evaluate"})
    return cli_main.main


def write_nifti(path, array: np.ndarray, spacing=SPACING_XYZ) -> None:
    img = sitk.GetImageFromArray(array.astype(np.uint8))
    img.SetSpacing(spacing)
    img.SetOrigin((-10.0, 4.0, 7.5))
    sitk.WriteImage(img, str(path))


def make_pair(seed: int, shape=(12, 24, 20)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.random(shape), 2.0)
    gt = (field > np.quantile(field, 0.7)).astype(np.uint8)
    gt[(field > np.quantile(field, 0.93))] = 2
    pred = np.roll(gt, 1, axis=2)
    return pred, gt


def read_csv(path) -> list[dict]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_cli_scores_two_files_like_evaluate_case(cli, tmp_path, capsys):
    pred, gt = make_pair(0)
    write_nifti(tmp_path / "pred.nii.gz", pred)
    write_nifti(tmp_path / "gt.nii.gz", gt)
    out = tmp_path / "res" / "metrics.csv"
    code = cli(["evaluate", str(tmp_path / "pred.nii.gz"), str(tmp_path / "gt.nii.gz"), "--out", str(out)])
    assert code == 0
    rows = read_csv(out)
    expected = evaluate_case(pred, gt, tuple(reversed(SPACING_XYZ)), tolerance_mm=2.0)
    assert [r["label"] for r in rows] == ["1", "2"]
    for row, exp in zip(rows, expected, strict=True):
        assert row["case"] == "gt"
        for key in ("dsc", "nsd", "hd95", "fpv_ml", "fnv_ml"):
            assert float(row[key]) == pytest.approx(exp[key])
    printed = capsys.readouterr().out
    assert "DSC" in printed and "HD95" in printed and str(out) in printed


def test_cli_refuses_existing_csv_without_overwrite(cli, tmp_path, capsys):
    pred, gt = make_pair(1)
    write_nifti(tmp_path / "pred.nii.gz", pred)
    write_nifti(tmp_path / "gt.nii.gz", gt)
    out = tmp_path / "metrics.csv"
    out.write_text("keep me\n")
    args = ["evaluate", str(tmp_path / "pred.nii.gz"), str(tmp_path / "gt.nii.gz"), "--out", str(out)]
    assert cli(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--overwrite" in err[0] and str(out) in err[0]
    assert out.read_text() == "keep me\n"
    assert cli([*args, "--overwrite", "--tolerance", "1.0"]) == 0
    assert read_csv(out)[0]["case"] == "gt"


def test_cli_mismatched_shapes_exit_2_with_one_line(cli, tmp_path, capsys):
    pred, gt = make_pair(2)
    write_nifti(tmp_path / "pred.nii.gz", pred[:, :, :-1])
    write_nifti(tmp_path / "gt.nii.gz", gt)
    out = tmp_path / "metrics.csv"
    code = cli(["evaluate", str(tmp_path / "pred.nii.gz"), str(tmp_path / "gt.nii.gz"), "--out", str(out)])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "pred.nii.gz" in err[0] and "gt.nii.gz" in err[0] and "shape" in err[0]
    assert not out.exists()


def test_mismatched_spacing_names_both_files(tmp_path):
    pred, gt = make_pair(3)
    write_nifti(tmp_path / "pred.nii.gz", pred, spacing=(0.9, 1.2, 2.0))
    write_nifti(tmp_path / "gt.nii.gz", gt)
    with pytest.raises(InputError, match="spacing") as info:
        evaluate_files(tmp_path / "pred.nii.gz", tmp_path / "gt.nii.gz")
    assert "pred.nii.gz" in str(info.value) and "gt.nii.gz" in str(info.value)


def test_folders_matched_by_name_with_plot_and_summary(cli, tmp_path):
    (tmp_path / "pred").mkdir()
    (tmp_path / "gt").mkdir()
    for i in range(3):
        pred, gt = make_pair(10 + i)
        write_nifti(tmp_path / "pred" / f"case{i}.nii.gz", pred)
        write_nifti(tmp_path / "gt" / f"case{i}.nii.gz", gt)
    write_nifti(tmp_path / "gt" / "empty.nii.gz", np.zeros((12, 24, 20)))  # empty GT is allowed
    write_nifti(tmp_path / "pred" / "empty.nii.gz", make_pair(20)[0])
    out, summary, plot = tmp_path / "m.csv", tmp_path / "s.csv", tmp_path / "m.png"
    args = ["evaluate", str(tmp_path / "pred"), str(tmp_path / "gt"), "--out", str(out)]
    assert cli([*args, "--summary", str(summary), "--plot", str(plot), "--no-progress"]) == 0
    rows = read_csv(out)
    assert sorted({r["case"] for r in rows}) == ["case0", "case1", "case2", "empty"]
    empty_rows = [r for r in rows if r["case"] == "empty"]
    assert {r["note"] for r in empty_rows} == {"empty ground truth"}
    assert all(float(r["fnv_ml"]) == 0 and float(r["fpv_ml"]) > 0 for r in empty_rows)
    means = {r["label"]: r for r in read_csv(summary)}
    assert means["1"]["n_cases"] == "4" and means["1"]["n_gt_empty"] == "1"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a ground truth without a prediction of the same name is an error, and nothing is written
    write_nifti(tmp_path / "gt" / "case9.nii.gz", make_pair(9)[1])
    out2 = tmp_path / "m2.csv"
    assert cli(["evaluate", str(tmp_path / "pred"), str(tmp_path / "gt"), "--out", str(out2)]) == 2
    assert not out2.exists()


def test_challenge_compat_on_2d_npz_files(cli, tmp_path):
    rng = np.random.default_rng(4)
    field = ndimage.gaussian_filter(rng.random((80, 90)), 3.0)
    gts = (field > np.quantile(field, 0.6)).astype(np.uint8)
    gts[field > np.quantile(field, 0.9)] = 2
    segs = np.roll(gts, 2, axis=0)
    (tmp_path / "gts").mkdir()
    (tmp_path / "segs").mkdir()
    np.savez_compressed(tmp_path / "gts" / "2DBox_US_demo.npz", imgs=np.zeros((80, 90, 3), np.uint8), gts=gts)
    np.savez_compressed(tmp_path / "segs" / "2DBox_US_demo.npz", segs=segs)
    out = tmp_path / "challenge.csv"
    assert (
        cli(["evaluate", str(tmp_path / "segs"), str(tmp_path / "gts"), "--out", str(out), "--challenge-compat"]) == 0
    )
    rows = read_csv(out)
    expected = challenge_case_metrics(segs, gts)
    assert rows[0]["label"] == "all" and rows[0]["case"] == "2DBox_US_demo"
    assert float(rows[0]["dsc"]) == pytest.approx(expected["dsc"])
    assert float(rows[0]["nsd"]) == pytest.approx(expected["nsd"])
    assert [r["label"] for r in rows[1:]] == ["1", "2"]


def test_challenge_compat_3d_npz_uses_the_stored_spacing_as_the_script_does(tmp_path, shared_data):
    """The CVPR24 script applies an npz ``spacing`` (stored x, y, z) to the (z, y, x) axes unchanged."""
    src = shared_data / "ct-lesion-npz" / "CT_Lesion_000015_01_01_081-093.npz"
    with np.load(src) as z:
        gts, spacing = z["gts"], z["spacing"]
    segs = np.roll(ndimage.binary_dilation(gts > 0, iterations=2), 3, axis=2).astype(np.uint8)
    np.savez_compressed(tmp_path / "segs.npz", segs=segs)
    ev = evaluate_files(tmp_path / "segs.npz", src, challenge_compat=True, progress=False)
    expected = challenge_case_metrics(segs, gts, tuple(spacing))
    assert ev.rows[0]["nsd"] == pytest.approx(expected["nsd"]) and expected["nsd_computed"]
    # the default mode uses the physical (z, y, x) spacing instead, which gives another NSD here
    default = evaluate_files(tmp_path / "segs.npz", src, progress=False)
    assert default.rows[0]["nsd"] == pytest.approx(evaluate_case(segs, gts, tuple(reversed(spacing)))[0]["nsd"])
    assert abs(default.rows[0]["nsd"] - expected["nsd"]) > 1e-3
