"""``medfoundry lesions`` end to end on the real whole-body PET, plus every bad input of issue 10."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from medfoundry.cli.main import main
from medfoundry.io import MedicalImage, read_image, write_image

OUTPUTS = {"lesions.nii.gz", "lesions.csv", "lesions.json", "mip.png", "thumbnails.png"}


@pytest.fixture(scope="module")
def wb_dicom(shared_data):
    return shared_data / "pet-wholebody" / "STS_001" / "dicom" / "image"


@pytest.fixture(scope="module")
def wb_run(wb_dicom, tmp_path_factory):
    out = tmp_path_factory.mktemp("lesions") / "wb"
    rc = main(["lesions", str(wb_dicom), "--out", str(out), "--delineation", "threshold", "--backend", "torch",
               "--no-progress"])  # fmt: skip
    return rc, out


def test_wholebody_dicom_end_to_end(wb_run, wb_dicom, shared_data):
    from medfoundry.io import read_mask
    from medfoundry.io.dicom_seg import read_dicom_seg

    rc, out = wb_run
    assert rc == 0
    assert OUTPUTS | {"lesions.dcm"} == {p.name for p in out.iterdir()}
    image = read_image(wb_dicom)
    labels = read_image(out / "lesions.nii.gz")
    assert labels.same_grid(image)
    report = json.loads((out / "lesions.json").read_text())
    n = report["totals"]["lesion_count"]
    assert n == len(report["lesions"]) == int(labels.array.max()) >= 1
    # the tumour (GTV_Mass, never a positive in training) is found
    gtv = read_mask(shared_data / "pet-wholebody/STS_001/nifti/STS_001_FDG_PET_mask_GTV_Mass.nii.gz").array > 0
    assert (labels.array[gtv] > 0).any()
    # the kidneys (a mirror-image pair) are flagged, and a flagged candidate is kept only when very confident
    flags = list(
        zip(report["candidate_scores"], report["candidate_accepted"], report["candidate_symmetric"], strict=True)
    )
    assert len(flags) == report["candidates"] and sum(f[2] for f in flags) >= 2 and report["symmetry_rule"]
    assert all(score >= 0.9 for score, acc, sym in flags if acc and sym)
    # the table agrees with the label map and the SUV image
    for les in report["lesions"]:
        region = labels.array == les["id"]
        assert les["voxels"] == region.sum()
        assert les["suv_max"] == pytest.approx(float(image.array[region].max()), rel=1e-5)
        assert les["suv_mean"] <= les["suv_peak"] <= les["suv_max"] + 1e-6 or les["suv_peak"] <= les["suv_max"]
        assert les["tlg"] == pytest.approx(les["mtv_ml"] * les["suv_mean"])
        assert 0.5 <= les["score"] <= 1.0
    rows = list(csv.DictReader((out / "lesions.csv").open()))
    assert [r["id"] for r in rows] == [str(les["id"]) for les in report["lesions"]] + ["total"]
    assert float(rows[-1]["mtv_ml"]) == pytest.approx(report["totals"]["total_mtv_ml"], rel=1e-4)
    # the DICOM SEG reads back onto the same grid with the same lesions
    seg = read_dicom_seg(out / "lesions.dcm", reference=image)
    assert seg.same_grid(image)
    assert np.array_equal(seg.array > 0, labels.array > 0)


def test_existing_output_folder_is_refused(wb_run, wb_dicom, capsys):
    _, out = wb_run
    before = (out / "lesions.json").read_bytes()
    assert main(["lesions", str(wb_dicom), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "exists" in err and str(out) in err and "Traceback" not in err
    assert (out / "lesions.json").read_bytes() == before


def test_no_candidate_is_a_valid_empty_result(wb_dicom, tmp_path, capsys):
    out = tmp_path / "empty"
    assert main(["lesions", str(wb_dicom), "--out", str(out), "--threshold", "500", "--no-progress"]) == 0
    report = json.loads((out / "lesions.json").read_text())
    assert report["totals"]["lesion_count"] == 0 and report["lesions"] == []
    assert OUTPUTS == {p.name for p in out.iterdir()}  # no DICOM SEG: it would need a segment
    assert read_image(out / "lesions.nii.gz").array.max() == 0
    assert "0 lesion(s)" in capsys.readouterr().out


def _write(tmp_path, name, array):
    array = np.asarray(array, dtype=np.float32)
    return write_image(MedicalImage(array, (4.0, 4.0, 3.0)[: array.ndim]), tmp_path / name)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d, t: d / "pet-sts/STS_002/CT_image.nii.gz", "not PET"),
        (lambda d, t: d / "pet-wholebody/STS_001/nifti/STS_001_FDG_PET_image.nii.gz", "--suv-factor"),
        (lambda d, t: _write(t, "zero.nii.gz", np.zeros((8, 16, 16))), "all zero"),
        (lambda d, t: _write(t, "flat.nii.gz", np.ones((16, 16))), "3D"),
        (lambda d, t: t / "missing.nii.gz", "no such file"),
    ],
)
def test_bad_inputs_are_one_line_errors(shared_data, tmp_path, capsys, make, message):
    path = make(shared_data, tmp_path)
    out = tmp_path / "out"
    assert main(["lesions", str(path), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and path.name in err
    assert not out.exists()


def test_bqml_nifti_with_suv_factor_matches_the_dicom_suv(shared_data, tmp_path):
    from medfoundry.inference.lesions.pipeline import to_suv

    info = json.loads((shared_data / "pet-wholebody/STS_001/suv_info.json").read_text())
    bq = read_image(shared_data / "pet-wholebody/STS_001/nifti/STS_001_FDG_PET_image.nii.gz")
    suv = to_suv(bq, info["SUVbw_factor"])
    dicom = read_image(shared_data / "pet-wholebody/STS_001/dicom/image")
    assert np.allclose(suv.array, dicom.array, rtol=1e-3, atol=1e-3)


def test_corrupt_adapter_is_refused(wb_dicom, tmp_path, capsys):
    bad = tmp_path / "adapter.pt"
    bad.write_bytes(b"not a checkpoint")
    out = tmp_path / "out"
    assert main(["lesions", str(wb_dicom), "--out", str(out), "--adapter", str(bad), "--no-progress"]) == 2
    assert "adapter.pt" in capsys.readouterr().err and not out.exists()
