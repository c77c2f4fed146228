"""Lesion-wise evaluation: counts, sensitivity, FP, per-lesion Dice on synthetic maps; the CLI and a SEG reference."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import SimpleITK as sitk

from medfoundry.cli import main as cli_main
from medfoundry.errors import InputError
from medfoundry.evaluation import lesion_errors, lesion_wise

SPACING_ZYX = (2.0, 1.0, 0.5)
VOXEL_ML = 2.0 * 1.0 * 0.5 / 1000.0


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def two_lesions_one_hit() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Reference lesions A (hit) and B (missed); prediction: a shifted copy of A (label 2) and an FP blob."""
    ref = np.zeros((20, 40, 40), np.uint8)
    a = np.zeros_like(ref, bool)
    a[2:6, 5:10, 5:10] = True
    b = np.zeros_like(ref, bool)
    b[12:16, 25:30, 25:30] = True
    ref[a] = 1
    ref[b] = 1
    pred = np.zeros_like(ref)
    pred[3:7, 6:11, 5:10] = 2  # a multi-label prediction is binarised
    pred[15:18, 2:5, 30:34] = 1  # touches no reference lesion
    return pred, ref, a, b


def test_counts_sensitivity_fp_and_dice_by_formula():
    pred, ref, a, b = two_lesions_one_hit()
    res = lesion_wise(pred, ref, SPACING_ZYX)
    assert (res.n_ref_lesions, res.n_detected, res.n_missed) == (2, 1, 1)
    assert (res.n_pred_components, res.n_false_positive_components, res.false_positives) == (2, 1, 1)
    assert res.sensitivity == 0.5
    hit = np.zeros_like(a)
    hit[3:7, 6:11, 5:10] = True
    expected_a = _dice(hit, a)
    assert 0.0 < expected_a < 1.0
    assert res.lesion_dice == pytest.approx((expected_a, 0.0))  # A comes first in raster order
    assert res.mean_lesion_dice == pytest.approx(expected_a / 2)
    assert res.dice == pytest.approx(_dice(pred > 0, ref > 0))
    fp_blob_ml = 3 * 3 * 4 * VOXEL_ML
    assert res.fpv_ml == pytest.approx(fp_blob_ml) and res.fnv_ml == pytest.approx(b.sum() * VOXEL_ML)
    errors = lesion_errors(pred > 0, ref > 0, SPACING_ZYX)
    assert (res.fpv_ml, res.fnv_ml) == (errors.fpv_ml, errors.fnv_ml)
    table = res.lesion_table()
    assert [r["lesion_id"] for r in table] == [1, 2] and [r["detected"] for r in table] == [True, False]
    assert table[0]["volume_ml"] == pytest.approx(a.sum() * VOXEL_ML)
    assert table[0]["pred_volume_ml"] == pytest.approx(hit.sum() * VOXEL_ML) and table[1]["n_pred_components"] == 0
    row = res.as_dict()
    assert row["sensitivity"] == 0.5 and row["false_positives"] == 1 and "lesions" not in row


def test_lesion_dice_uses_the_union_of_touching_components_and_18_connectivity():
    ref = np.zeros((10, 20, 20), np.uint8)
    ref[2:8, 2:12, 2:12] = 1
    pred = np.zeros_like(ref)
    pred[2:8, 2:12, 2:6] = 1
    pred[2:8, 2:12, 8:14] = 1  # a second component touching the same lesion, sticking out of it
    edge = np.zeros_like(ref)
    edge[0, 0, 0] = edge[1, 1, 0] = 1  # share an edge: one component with 18-connectivity, two with 6
    res = lesion_wise(pred, ref, 1.0)
    assert res.n_pred_components == 2 and res.n_detected == 1 and res.n_false_positive_components == 0
    assert res.lesion_dice[0] == pytest.approx(_dice(pred > 0, ref > 0))
    assert res.lesions[0].n_pred_components == 2
    assert lesion_wise(edge, np.zeros_like(ref)).n_pred_components == 1


def test_empty_cases():
    ref = np.zeros((6, 8, 8), np.uint8)
    none = lesion_wise(ref, ref, 1.0)
    assert (none.n_ref_lesions, none.n_pred_components, none.false_positives) == (0, 0, 0)
    assert math.isnan(none.sensitivity) and math.isnan(none.mean_lesion_dice) and none.dice == 1.0
    assert none.lesion_table() == [] and none.fpv_ml == 0.0 and none.fnv_ml == 0.0
    blob = ref.copy()
    blob[1:3, 2:4, 2:4] = 1
    only_fp = lesion_wise(blob, ref, 1.0)
    assert only_fp.false_positives == 1 and math.isnan(only_fp.sensitivity) and only_fp.dice == 0.0
    missed = lesion_wise(ref, blob, 1.0)
    assert (missed.n_detected, missed.n_missed, missed.sensitivity, missed.lesion_dice) == (0, 1, 0.0, (0.0,))


def test_2d_uses_8_connectivity():
    ref = np.zeros((10, 10), np.uint8)
    ref[1, 1] = ref[2, 2] = 1  # diagonal neighbours: one lesion in 2D
    ref[7:9, 7:9] = 1
    pred = np.zeros_like(ref)
    pred[2, 2] = 1
    res = lesion_wise(pred, ref, (0.5, 0.5))
    assert (res.n_ref_lesions, res.n_detected, res.sensitivity) == (2, 1, 0.5)
    assert res.lesion_dice == pytest.approx((2 * 1 / (1 + 2), 0.0))
    assert res.lesions[1].volume_ml == pytest.approx(4 * 0.25 / 1000)


def test_bad_arrays_raise_input_error():
    with pytest.raises(InputError, match="shape"):
        lesion_wise(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)))
    with pytest.raises(InputError, match="negative"):
        lesion_wise(-np.ones((4, 4, 4), np.int8), np.zeros((4, 4, 4), np.int8))


# ------------------------------------------------------------------------------------------------ CLI


@pytest.fixture
def cli(monkeypatch):
    monkeypatch.setattr(cli_main, "COMMANDS", {"evaluate": "medfoundry.cli.evaluate"})
    return cli_main.main


def _write(path, array, spacing_zyx=SPACING_ZYX) -> None:
    img = sitk.GetImageFromArray(array.astype(np.uint8))
    img.SetSpacing(tuple(reversed(spacing_zyx)))
    sitk.WriteImage(img, str(path))


def _rows(path) -> list[dict]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_cli_lesion_wise_on_two_folders(cli, tmp_path, capsys):
    pred, ref, _, _ = two_lesions_one_hit()
    (tmp_path / "pred").mkdir()
    (tmp_path / "ref").mkdir()
    _write(tmp_path / "pred" / "c1.nii.gz", pred)
    _write(tmp_path / "ref" / "c1.nii.gz", ref)
    _write(tmp_path / "pred" / "c2.nii.gz", ref)  # a perfect case
    _write(tmp_path / "ref" / "c2.nii.gz", ref)
    out = tmp_path / "res" / "lesionwise.csv"
    args = ["evaluate", str(tmp_path / "pred"), str(tmp_path / "ref"), "--out", str(out), "--lesion-wise"]
    assert cli([*args, "--no-progress"]) == 0
    rows = {r["case"]: r for r in _rows(out)}
    expected = lesion_wise(pred, ref, SPACING_ZYX)
    assert int(rows["c1"]["n_detected"]) == 1 and int(rows["c1"]["false_positives"]) == 1
    assert float(rows["c1"]["sensitivity"]) == 0.5
    assert float(rows["c1"]["mean_lesion_dice"]) == pytest.approx(expected.mean_lesion_dice)
    assert float(rows["c2"]["sensitivity"]) == 1.0 and float(rows["c2"]["dice"]) == 1.0
    lesions = _rows(tmp_path / "res" / "lesionwise_lesions.csv")
    assert [(r["case"], r["lesion_id"], r["detected"]) for r in lesions] == [
        ("c1", "1", "True"),
        ("c1", "2", "False"),
        ("c2", "1", "True"),
        ("c2", "2", "True"),
    ]
    printed = capsys.readouterr().out
    assert "c1" in printed and "false positives per scan" in printed
    assert "sensitivity 0.750 (pooled)" in printed  # 3 of 4 reference lesions found
    assert cli(args) == 2  # outputs exist: refused
    assert "--overwrite" in capsys.readouterr().err
    assert cli([*args, "--plot", str(tmp_path / "p.png"), "--overwrite"]) == 2


def test_cli_lesion_wise_with_a_dicom_seg_reference(cli, shared_data, tmp_path, capsys):
    from medfoundry.io import read_image, write_dicom_seg

    source = shared_data / "pet-wholebody" / "STS_001" / "dicom" / "image"
    image = read_image(source, suv=False)
    ref = np.zeros(image.array.shape, np.uint8)
    ref[100:104, 60:66, 60:66] = 1
    ref[200:202, 20:24, 20:24] = 1
    write_dicom_seg(image.with_array(ref), source, tmp_path / "ref.dcm")
    pred = np.zeros_like(ref)
    pred[101:105, 60:66, 60:66] = 1
    sitk_pred = sitk.GetImageFromArray(pred)
    sitk_pred.SetSpacing(image.spacing)
    sitk_pred.SetOrigin(image.origin)
    sitk_pred.SetDirection(image.direction)
    sitk.WriteImage(sitk_pred, str(tmp_path / "pred.nii.gz"))
    out = tmp_path / "m.csv"
    args = ["evaluate", str(tmp_path / "pred.nii.gz"), str(tmp_path / "ref.dcm"), "--out", str(out), "--lesion-wise"]
    code = cli(args)
    assert code == 0, capsys.readouterr().err
    row = _rows(out)[0]
    assert (row["case"], row["n_ref_lesions"], row["n_detected"], row["false_positives"]) == ("ref", "2", "1", "0")
    first = np.zeros(ref.shape, bool)
    first[100:104, 60:66, 60:66] = True
    assert float(row["mean_lesion_dice"]) == pytest.approx(_dice(pred > 0, first) / 2)


def test_api_evaluate_lesion_wise_writes_both_tables(tmp_path):
    from medfoundry.api import evaluate

    pred, ref, _, _ = two_lesions_one_hit()
    _write(tmp_path / "pred.nii.gz", pred)
    _write(tmp_path / "ref.nii.gz", ref)
    out = tmp_path / "lw.csv"
    ev = evaluate(tmp_path / "pred.nii.gz", tmp_path / "ref.nii.gz", out, lesion_wise=True, progress=False)
    assert ev.summary()["sensitivity"] == 0.5
    assert _rows(out)[0]["n_missed"] == "1" and len(_rows(tmp_path / "lw_lesions.csv")) == 2
    with pytest.raises(FileExistsError):
        evaluate(tmp_path / "pred.nii.gz", tmp_path / "ref.nii.gz", out, lesion_wise=True)
