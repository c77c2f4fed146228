"""``medfoundry lesions --manifest``: one model load, a folder per scan, the cohort table, resuming an interrupted
run, and bad rows reported at the end."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from medfoundry.cli.main import main
from medfoundry.inference.lesions.features import HANDCRAFTED, feature_names
from medfoundry.modeling.lesion_classifier import LesionClassifier


@pytest.fixture(scope="module")
def suvmax_model(tmp_path_factory):
    """A handcrafted-feature classifier that accepts candidates with SUVmax >= 4 (no encoder needed)."""
    coef = np.zeros(len(HANDCRAFTED))
    coef[HANDCRAFTED.index("log_suv_max")] = 5.0
    clf = LesionClassifier(feature_names(embedding=False, anatomy=False), np.zeros(len(coef)), np.ones(len(coef)), coef,
                           -5.0 * np.log(4.0), threshold=0.5, version="test")  # fmt: skip
    return clf.save(tmp_path_factory.mktemp("model") / "suvmax.json")


@pytest.fixture
def manifest(shared_data, tmp_path):
    crops = shared_data / "pet-sts"
    bq = shared_data / "pet-wholebody/STS_001/nifti/STS_001_FDG_PET_image.nii.gz"
    factor = json.loads((shared_data / "pet-wholebody/STS_001/suv_info.json").read_text())["SUVbw_factor"]
    path = tmp_path / "scans.csv"
    path.write_text(
        "image,out,suv_factor\n"
        f"{crops / 'STS_021/PET_image.nii.gz'},a,\n"
        f"{crops / 'STS_025/PET_image.nii.gz'},b,\n"
        f"{tmp_path / 'missing.nii.gz'},,\n"
        f"{bq},,{factor}\n"
        f"{crops / 'STS_022/PET_image.nii.gz'},c,-1\n"
    )
    return path


def _cohort(out):
    return list(csv.DictReader((out / "cohort.csv").open()))


def test_manifest_run_cohort_table_and_bad_rows(manifest, suvmax_model, tmp_path, capsys):
    out = tmp_path / "cohort"
    args = ["lesions", "--manifest", str(manifest), "--out", str(out), "--model", str(suvmax_model),
            "--delineation", "threshold", "--no-progress"]  # fmt: skip
    assert main(args) == 2  # two bad rows: reported, the others done
    captured = capsys.readouterr()
    assert "failed: row 3 (missing.nii.gz)" in captured.out and "failed: row 5" in captured.out
    assert "suv_factor" in captured.out and "3 scan(s) done" in captured.out
    rows = _cohort(out)
    assert [r["status"] for r in rows] == ["done", "done", "failed", "done", "failed"]
    for row in rows:
        if row["status"] != "done":
            assert row["error"] and not row["lesion_count"]
            continue
        report = json.loads((tmp_path / row["folder"] / "lesions.json").read_text())
        assert int(row["lesion_count"]) == report["totals"]["lesion_count"]
        assert float(row["total_mtv_ml"]) == pytest.approx(report["totals"]["total_mtv_ml"], abs=1e-3)
        assert float(row["total_tlg"]) == pytest.approx(report["totals"]["total_tlg"], abs=1e-3)
        assert float(row["threshold_suv"]) == report["threshold"]["threshold_suv"]
    assert rows[3]["folder"] == str(out / "nifti_STS_001_FDG_PET_image")  # default: OUT/<folder>_<name>
    assert rows[3]["threshold_method"] == "percist-liver"  # the Bq/mL row was read as SUV with its factor
    assert (tmp_path / "a" / "mip.png").is_file() and not (tmp_path / "c").exists()  # out: beside the manifest


def test_interrupted_run_resumes_and_keeps_finished_scans(manifest, suvmax_model, tmp_path, monkeypatch):
    """Run, then simulate an interruption (one scan's folder not written yet): the rerun keeps
    the finished folders untouched, redoes the missing one, and builds the predictor at most once."""
    import medfoundry.api as api

    out = tmp_path / "cohort"
    args = ["lesions", "--manifest", str(manifest), "--out", str(out), "--model", str(suvmax_model),
            "--delineation", "threshold", "--no-progress"]  # fmt: skip
    assert main(args) == 2
    before = {name: (tmp_path / name / "lesions.json").stat().st_mtime_ns for name in ("a", "b")}
    import shutil

    shutil.rmtree(tmp_path / "b")
    built = []
    monkeypatch.setattr(api, "make_predictor", lambda **kw: built.append(kw))
    assert main(args) == 2
    rows = _cohort(out)
    assert [r["status"] for r in rows] == ["kept", "done", "failed", "kept", "failed"]
    assert (tmp_path / "a" / "lesions.json").stat().st_mtime_ns == before["a"]
    assert (tmp_path / "b" / "lesions.json").is_file() and len(built) == 0  # threshold outlines: no encoder needed
    (tmp_path / "a" / "lesions.json").unlink()  # a folder that is not a finished scan is not silently replaced
    assert main(args) == 2
    assert _cohort(out)[0]["status"] == "failed" and "--overwrite" in _cohort(out)[0]["error"]


def test_one_model_load_for_many_scans(shared_data, tmp_path, monkeypatch, tiny_model):
    """The shipped classifier needs the encoder's embedding: one predictor for every scan (a small stand-in)."""
    import medfoundry.api as api
    from medfoundry.inference.predictor import LiteMedSAMPredictor

    built = []

    def make(**kwargs):
        built.append(kwargs)
        return LiteMedSAMPredictor(model=tiny_model, backend="torch")

    monkeypatch.setattr(api, "make_predictor", make)
    crops = shared_data / "pet-sts"
    manifest = tmp_path / "scans.json"
    manifest.write_text(json.dumps([{"image": str(crops / f"STS_0{i}/PET_image.nii.gz")} for i in (21, 23)]))
    result = api.lesions_manifest(manifest, tmp_path / "out", delineation="threshold", progress=False)
    assert [p.name for p in result.written] == ["STS_021_PET_image", "STS_023_PET_image"] and len(built) == 1
    assert all(r["status"] == "done" for r in result.rows)


def test_manifest_and_image_together_are_refused(manifest, tmp_path, capsys):
    assert main(["lesions", "scan.nii.gz", "--manifest", str(manifest), "--out", str(tmp_path / "o")]) == 2
    assert "not both" in capsys.readouterr().err
