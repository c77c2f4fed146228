"""``classify build --mode wholebody`` on the real whole-body STS_001 scan with real PET crops."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from medfoundry.data.pet_slices import CaseSpec, SliceConfig, WholeBodyOptions, balance_weights, build_wholebody_dataset
from medfoundry.errors import InputError
from tests.test_classify_cli import run_cli

WB = "pet-wholebody/STS_001"
MASK = f"{WB}/nifti/STS_001_FDG_PET_mask_GTV_Mass.nii.gz"
TUMOUR_SLICES = set(range(12, 43))  # GTV_Mass lies on slices 12-42 of the 267


def test_balance_weights_equalise_the_classes_per_split():
    labels = np.array([1, 0, 0, 0, 1, 1, 0])
    splits = ["train"] * 4 + ["test"] * 3
    w = balance_weights(labels, splits)
    assert w[:4].sum() == pytest.approx(4) and w[0] == pytest.approx(3 * w[1])  # 1 abnormal vs 3 normal
    assert w[4:].sum() == pytest.approx(3) and w[4] * 2 == pytest.approx(w[6])


def test_wholebody_build_on_real_data(shared_data, tmp_path, capsys):
    wb_image, wb_mask = shared_data / WB / "dicom" / "image", shared_data / MASK
    crops = [shared_data / "pet-sts" / c for c in ("STS_002", "STS_003")]
    out = tmp_path / "ds"
    argv = ["classify", "build", str(out), "--mode", "wholebody", "--case", "wb001", str(wb_image), str(wb_mask)]
    for c in crops:
        argv += ["--crop", c.name, str(c / "PET_image.nii.gz"), str(c / "PET_mask.nii.gz")]
    argv += ["--size", "32", "--insertions", "1", "--crop-slices", "2", "--regions", "train:0:0.5", "test:0.5:1"]
    argv += ["--split", "0.5", "0", "0.5", "--seed", "4"]
    assert run_cli(argv) == 0
    assert "slices from 1 cases" in capsys.readouterr().out
    from medfoundry.data.pet_slices import SliceDataset

    ds = SliceDataset(out)
    info = json.loads((out / "dataset.json").read_text())
    rows = ds.rows
    whole = [r for r in rows if r["source"] == "wholebody"]
    # every native slice of the whole-body scan, split by body region at the middle (slice 133.5 of 267)
    assert [r["slice_index"] for r in whole] == list(range(267))
    assert {r["split"] for r in whole if r["slice_index"] < 133} == {"train"}
    assert {r["split"] for r in whole if r["slice_index"] >= 134} == {"test"}
    assert {r["slice_index"] for r in whole if r["label"]} == TUMOUR_SLICES
    # crops: only lesion slices, as many as asked
    crop_rows = [r for r in rows if r["source"] == "crop"]
    assert Counter(r["case_id"] for r in crop_rows) == {"STS_002": 2, "STS_003": 2}
    assert all(r["label"] == 1 for r in crop_rows)
    # inserted scans: one per region; only changed slices, all inside their region: the lesion slices and the
    # slices its blurred uptake (7 mm FWHM, cut at 3 sigma) reaches beyond its label, which stay normal
    inserted = [c for c in info["cases"] if c["source"] == "inserted"]
    assert sorted(c["case_id"] for c in inserted) == ["wb001.test00", "wb001.train00"]
    for case in inserted:
        split = case["case_id"].split(".")[1][:-2]
        ins_rows = [r for r in rows if r["case_id"] == case["case_id"]]
        assert ins_rows and all(r["split"] == split for r in ins_rows)
        z = [r["slice_index"] for r in ins_rows]
        assert (max(z) < 133) if split == "train" else (min(z) >= 134)
        touched, reach = set(), set()
        for p in case["placements"]:
            first, n = p["corner_zyx"][0], p["shape_zyx"][0]
            pad = int(np.ceil(3 * p["blur_sigma_mm"] / 3.27))
            touched |= set(range(first, first + n))
            reach |= set(range(first - pad, first + n + pad))
        assert {r["slice_index"] for r in ins_rows if r["label"] == 1} == touched  # every lesion slice, labelled
        assert set(z) <= reach  # no row beyond the blurred uptake
        sources = {p["source"] for p in case["placements"]}
        assert sources <= {"STS_002", "STS_003"}
    # sample weights balance the classes inside each split; no normal slice was dropped
    w, y = ds.weights, ds.labels
    for split in ("train", "test"):
        idx = ds.split_rows(split)
        assert w[idx][y[idx] == 1].sum() == pytest.approx(w[idx][y[idx] == 0].sum(), rel=1e-4)
    assert sum(1 for r in whole if r["label"] == 0) == 267 - len(TUMOUR_SLICES)
    # seeded: the library call with the same settings gives the same pixels (same preprocessing hash)
    again = build_wholebody_dataset(
        [CaseSpec("wb001", wb_image, wb_mask)],
        [CaseSpec(c.name, c / "PET_image.nii.gz", c / "PET_mask.nii.gz") for c in crops],
        tmp_path / "again",
        SliceConfig(grid=(0, 0, 0), size=32),
        WholeBodyOptions(n_inserted=1, crop_slices=2, regions={"train": (0, 0.5), "test": (0.5, 1)}),
        fractions=(0.5, 0, 0.5),
        seed=4,
        progress=False,
    )
    assert again.preprocessing_hash == ds.preprocessing_hash


def test_wholebody_mode_refuses_a_z_grid_and_bad_regions(shared_data, tmp_path, capsys):
    case = ["--case", "wb", str(shared_data / WB / "dicom" / "image"), str(shared_data / MASK)]
    base = ["classify", "build", str(tmp_path / "ds"), "--mode", "wholebody", *case]
    assert run_cli([*base, "--grid", "64", "64", "10"]) == 2
    assert "z count must be 0" in capsys.readouterr().out
    assert run_cli([*base, "--insertions", "2"]) == 2
    assert "need crops" in capsys.readouterr().out
    with pytest.raises(InputError, match="overlap"):
        WholeBodyOptions(regions={"train": (0, 0.6), "test": (0.5, 1)})
    assert not (tmp_path / "ds").exists()


def test_weights_mode_draws_minibatches_in_proportion_to_the_sample_weights():
    from medfoundry.training.heads import imbalance_setup

    labels = np.array([1] * 10 + [0] * 90)
    weights = balance_weights(labels, ["train"] * 100)
    pos_weight, sampler = imbalance_setup(labels, "weights", 0, weights)
    drawn = labels[list(sampler)]
    assert pos_weight is None and 0.4 < drawn.mean() < 0.6  # 10 % abnormal rows, drawn half the time
    with pytest.raises(InputError, match="sample weight"):
        imbalance_setup(labels, "weights", 0, None)
