"""The scan split of bench/classify_wholebody.py on the real scans: train on STS_001 (with lesions inserted), test
on ACRIN-042; no lesion source or scan shared across splits; unscored slices left out everywhere they must be."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from medfoundry.data.pet_slices.anatomy_features import ANATOMY_FEATURES
from medfoundry.data.pet_slices.features import AnatomyFeatures

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("bench_classify_scan_split", BENCH / "classify_scan_split.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH))
    return module


@pytest.fixture(scope="module")
def built(bench, shared_data, tmp_path_factory):
    args = argparse.Namespace(
        data=str(shared_data), insertions=1, crop_slices=1, size=16, intensity="slice-max", suv_window=10.0,
        lesion_fwhm=None,
    )  # fmt: skip
    ds = bench.build(args, "STS_001", "ACRIN-042", 0, tmp_path_factory.mktemp("scan"), AnatomyFeatures())
    cache: dict = {}
    foci = {b["case"]: bench.unscored(args, name, cache) for name, b in bench.BACKGROUNDS.items()}
    return ds, foci


def test_scans_and_lesion_sources_never_cross_splits(built):
    ds, _ = built
    rows = ds.rows
    assert {r["split"] for r in rows if r["case_id"].startswith("STS_001_wb")} <= {"train", "val"}
    assert {r["split"] for r in rows if r["case_id"].startswith("ACRIN042")} == {"test"}
    crop_split = {r["patient_id"]: r["split"] for r in rows if r["source"] == "crop"}
    cases = {c["case_id"]: c for c in ds.info["cases"]}
    inserted = {cid: c for cid, c in cases.items() if c["source"] == "inserted"}
    # one inserted scan per split; val's lesions go into the train scan (borrowed: it has none of its own)
    assert sorted(inserted) == ["ACRIN042.test00", "STS_001_wb.train00", "STS_001_wb.val00"]
    for cid, case in inserted.items():
        split = cid.split(".")[1][:-2]
        assert {r["split"] for r in rows if r["case_id"] == cid} == {split}
        for placement in case["placements"]:  # lesions only from that split's crops (by patient)
            assert crop_split.get(placement["source"], split) == split
            assert placement["blur_sigma_mm"] >= 0
    assert any(p.startswith("the val split") for p in ds.info["split_problems"])  # no normal anatomy of its own
    assert not any(p.startswith("the test split") for p in ds.info["split_problems"])


def test_anatomy_features_stored_per_row(built):
    ds, _ = built
    names, values, identity = ds.features
    assert names == ANATOMY_FEATURES and values.shape == (len(ds), len(names)) and identity == {"anatomy": 1}
    col = {n: values[:, i] for i, n in enumerate(names)}
    acrin = np.array([r["case_id"] == "ACRIN042" for r in ds.rows])
    sts = np.array([r["case_id"] == "STS_001_wb" for r in ds.rows])
    crops = np.array([r["source"] == "crop" for r in ds.rows])
    assert (col["in_brain"][acrin] == 0).all() and (col["in_bladder"][acrin] == 0).all()  # not in its view
    top = [r["slice_index"] for r in ds.rows if r["case_id"] == "STS_001_wb" and col["in_brain"][r["row"]] > 0]
    assert top and min(top) > 250  # the brain: the last slices of STS_001 (head at the end)
    assert (col["cc_known"][crops] == 0).all() and (col["cc_known"][sts | acrin] == 1).all()
    assert np.isfinite(values).all()


def test_row_sets_leave_unscored_slices_out_and_keep_labelled_ones(bench, built):
    ds, foci = built
    excluded = {case: set(f["foci"].excluded) for case, f in foci.items()}
    sets = bench.row_sets(ds, excluded)
    rows, y = ds.rows, ds.labels
    acrin_unscored = excluded["ACRIN042"]
    labelled = {r["slice_index"] for r in rows if r["case_id"] == "ACRIN042" and r["label"] == 1}
    assert acrin_unscored and labelled and not acrin_unscored & labelled
    test_slices = {rows[i]["slice_index"] for i in sets["test"]}
    assert test_slices == set(range(135)) - acrin_unscored
    assert len(sets["test_all_slices"]) == 135
    mass = set(np.nonzero(foci["ACRIN042"]["label"].any(axis=(1, 2)))[0].tolist())
    assert {rows[i]["slice_index"] for i in sets["test"] if y[i] == 1} == mass
    for key in ("train", "val"):  # the train scan's unscored normal slices are not normal examples either
        for i in sets[key]:
            r = rows[i]
            assert not (r["case_id"].startswith("STS_001_wb") and r["label"] == 0
                        and r["slice_index"] in excluded["STS_001_wb"])  # fmt: skip
    assert not {rows[i]["split"] for i in sets["train"]} - {"train"}
    val = [rows[i] for i in sets["val"]]
    assert {r["split"] for r in val} == {"train", "val"}
    assert all(r["source"] == "wholebody" and r["label"] == 0 for r in val if r["split"] == "train")
    assert all(r["case_id"] == "STS_001_wb.val00" for r in val if r["split"] == "val")


def test_percist_reference_rule_learns_nothing_and_shares_the_exclusion_threshold(bench, built):
    """The reference row flags the labelled mass; every real normal slice it flags on either scan is one the
    unscored-slice rule left out or one next to a labelled lesion (why it never counts as the best model); crop
    rows get no score."""
    ds, foci = built
    prob, thr = bench.percist_rule(ds)
    rows = ds.rows
    assert all(np.isnan(prob[r["row"]]) for r in rows if r["source"] == "crop")
    for case, entry in foci.items():
        real = [r for r in rows if r["case_id"] == case]
        labelled = {r["slice_index"] for r in real if r["label"] == 1}
        near = {z + d for z in labelled for d in range(-3, 4)}
        flagged_normal = {r["slice_index"] for r in real if r["label"] == 0 and prob[r["row"]] >= thr}
        assert flagged_normal - set(entry["foci"].excluded) - near == set(), case
        hit = [prob[r["row"]] >= thr for r in real if r["label"] == 1]
        assert np.mean(hit) > 0.5, case
    assert bench.best_model({"d": {bench.RULE_NAME: {0: {"test": {"roc_auc": 1.0}}},
                                   "other": {0: {"test": {"roc_auc": 0.6}}}}}) == "other"  # fmt: skip
