"""Metric functions checked against independent implementations (DeepMind surface-distance, MONAI) and
hand-computed cases; NaN rules; label-map tables; the MedSAM-on-laptop 2024 challenge mode."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import SimpleITK as sitk
import surface_distance as sd
import torch
from scipy import ndimage

from medfoundry.errors import InputError, OutputExistsError
from medfoundry.evaluation import (
    SegmentationEvaluator,
    assd,
    challenge_case_metrics,
    dice,
    evaluate_case,
    hausdorff,
    hd95,
    iou,
    lesion_errors,
    lesion_fp_fn_volume,
    nsd,
    surface_distances,
)
from medfoundry.io import read_mask

pytestmark = [  # deprecation notes raised inside the reference libraries' own code
    pytest.mark.filterwarnings("ignore:Please import `.*` from the `scipy.ndimage` namespace:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:.*always_return_as_numpy.*:FutureWarning"),
]

# surfel areas come from MONAI's public (float32) table: NSD agrees with surface-distance to float32 rounding
AREA_REL = 1e-6


def blob(rng: np.random.Generator, shape: tuple[int, ...], sigma: float = 2.5, frac: float = 0.35) -> np.ndarray:
    """A random smooth blob mask covering about ``frac`` of the array."""
    field = ndimage.gaussian_filter(rng.random(shape), sigma)
    return field > np.quantile(field, 1 - frac)


def monai_nsd(pred: np.ndarray, gt: np.ndarray, spacing, tol: float) -> float:
    from monai.metrics import compute_surface_dice

    onehot = lambda m: torch.from_numpy(np.stack([~m, m])[None].astype(np.float32))  # noqa: E731
    return float(compute_surface_dice(onehot(pred), onehot(gt), [tol], spacing=list(spacing), use_subvoxels=True))


def deepmind(pred: np.ndarray, gt: np.ndarray, spacing) -> dict:
    return sd.compute_surface_distances(gt.astype(bool), pred.astype(bool), list(spacing))


CASES = [
    ((24, 40, 36), (3.27, 0.8, 1.1)),  # anisotropic 3D
    ((20, 20, 20), (1.0, 1.0, 1.0)),
    ((64, 72), (0.7, 1.3)),  # anisotropic 2D
]


@pytest.mark.parametrize(("shape", "spacing"), CASES)
def test_surface_metrics_match_deepmind_and_monai_on_random_blobs(shape, spacing):
    rng = np.random.default_rng(len(shape) * 100 + shape[0])
    for _ in range(2):
        pred, gt = blob(rng, shape), blob(rng, shape)
        ref = deepmind(pred, gt, spacing)
        ours = surface_distances(pred, gt, spacing)
        for tol in (0.5, 1.0, 2.0, 4.0):
            expected = sd.compute_surface_dice_at_tolerance(ref, tol)
            assert ours.nsd(tol) == pytest.approx(expected, rel=AREA_REL, abs=1e-12)
            assert nsd(pred, gt, spacing, tol) == pytest.approx(monai_nsd(pred, gt, spacing, tol), abs=1e-5)
        for pct in (50, 95, 100):
            assert hausdorff(pred, gt, spacing, pct) == pytest.approx(sd.compute_robust_hausdorff(ref, pct))
        assert hd95(pred, gt, spacing) == pytest.approx(sd.compute_robust_hausdorff(ref, 95))
        d_gt, d_pred = sd.compute_average_surface_distance(ref)
        a_gt, a_pred = ref["surfel_areas_gt"].sum(), ref["surfel_areas_pred"].sum()
        assert assd(pred, gt, spacing) == pytest.approx((d_gt * a_gt + d_pred * a_pred) / (a_gt + a_pred))
        assert dice(pred, gt) == pytest.approx(sd.compute_dice_coefficient(gt, pred))


def test_dice_iou_match_monai():
    from monai.metrics import compute_dice, compute_iou

    rng = np.random.default_rng(7)
    pred, gt = blob(rng, (16, 30, 30)), blob(rng, (16, 30, 30))
    onehot = lambda m: torch.from_numpy(np.stack([~m, m])[None].astype(np.float32))  # noqa: E731
    assert dice(pred, gt) == pytest.approx(
        float(compute_dice(onehot(pred), onehot(gt), include_background=False)), rel=1e-6
    )
    assert iou(pred, gt) == pytest.approx(
        float(compute_iou(onehot(pred), onehot(gt), include_background=False)), rel=1e-6
    )
    d = dice(pred, gt)
    assert iou(pred, gt) == pytest.approx(d / (2 - d))


def test_spacing_is_in_array_axis_order():
    """A slab one voxel thick, shifted by two voxels along axis 0 only."""
    gt = np.zeros((8, 10, 10), bool)
    gt[2, 2:8, 2:8] = True
    pred = np.roll(gt, 2, axis=0)
    # 5 mm steps along axis 0: the surfaces are 5 to 10 mm apart, none within 2 mm...
    assert nsd(pred, gt, (5.0, 1.0, 1.0), 2.0) == 0.0
    assert hausdorff(pred, gt, (5.0, 1.0, 1.0), 100) == pytest.approx(10.0)
    # ...0.5 mm steps along axis 0 put every surfel within 1 mm
    assert nsd(pred, gt, (0.5, 1.0, 1.0), 2.0) == pytest.approx(1.0)
    assert hausdorff(pred, gt, (0.5, 1.0, 1.0), 100) == pytest.approx(1.0)


def test_real_pet_mask_against_shifted_dilated_copy(shared_data):
    gt_img = read_mask(shared_data / "pet-sts/STS_002/PET_mask.nii.gz")
    gt = gt_img.array > 0
    sp = gt_img.spacing_zyx
    assert sp[0] != sp[1]  # slices (3.27 mm) thicker than pixels (5.47 mm): anisotropic
    pred = np.roll(ndimage.binary_dilation(gt), 1, axis=2)
    ref = deepmind(pred, gt, sp)
    for tol in (2.0, 5.0, 8.0):
        assert nsd(pred, gt, sp, tol) == pytest.approx(sd.compute_surface_dice_at_tolerance(ref, tol), rel=AREA_REL)
        assert nsd(pred, gt, sp, tol) == pytest.approx(monai_nsd(pred, gt, sp, tol), abs=1e-5)
    assert hd95(pred, gt, sp) == pytest.approx(sd.compute_robust_hausdorff(ref, 95))
    assert 0 < dice(pred, gt) < 1


def test_real_ct_mask_resampled_onto_the_pet_grid(shared_data):
    """Two raters' GTVs of one patient (CT and PET masks), compared on one grid (the PET's)."""
    pet = sitk.ReadImage(str(shared_data / "pet-sts/STS_003/PET_mask.nii.gz"))
    ct = sitk.ReadImage(str(shared_data / "pet-sts/STS_003/CT_mask.nii.gz"))
    ct_on_pet = sitk.Resample(ct, pet, sitk.Transform(), sitk.sitkNearestNeighbor, 0, ct.GetPixelID())
    gt = sitk.GetArrayFromImage(pet) > 0
    pred = sitk.GetArrayFromImage(ct_on_pet) > 0
    sp = tuple(reversed(pet.GetSpacing()))
    ref = deepmind(pred, gt, sp)
    assert nsd(pred, gt, sp, 2.0) == pytest.approx(sd.compute_surface_dice_at_tolerance(ref, 2.0), rel=AREA_REL)
    assert nsd(pred, gt, sp, 2.0) == pytest.approx(monai_nsd(pred, gt, sp, 2.0), abs=1e-5)
    assert hd95(pred, gt, sp) == pytest.approx(sd.compute_robust_hausdorff(ref, 95))


def test_empty_mask_rules():
    empty = np.zeros((5, 6, 7), bool)
    cube = empty.copy()
    cube[1:4, 1:4, 1:4] = True
    # both empty: perfect agreement on absence
    assert dice(empty, empty) == 1.0 and iou(empty, empty) == 1.0
    assert nsd(empty, empty, (1, 1, 1)) == 1.0 and hd95(empty, empty, (1, 1, 1)) == 0.0
    assert lesion_fp_fn_volume(empty, empty, (1, 1, 1)) == (0.0, 0.0)
    # exactly one empty: overlap and NSD are 0, HD95 is undefined (NaN)
    for pred, gt in ((cube, empty), (empty, cube)):
        assert dice(pred, gt) == 0.0 and iou(pred, gt) == 0.0
        assert nsd(pred, gt, (1, 1, 1)) == 0.0
        assert math.isnan(hd95(pred, gt, (1, 1, 1))) and math.isnan(assd(pred, gt, (1, 1, 1)))
    # FPV / FNV stay defined: all of the prediction is false positive when the GT is empty
    assert lesion_fp_fn_volume(cube, empty, (2, 2, 2.5)) == pytest.approx((27 * 10 / 1000, 0.0))
    assert lesion_fp_fn_volume(empty, cube, (2, 2, 2.5)) == pytest.approx((0.0, 27 * 10 / 1000))


def test_fpv_fnv_hand_computed():
    gt = np.zeros((10, 12, 12), bool)
    gt[1:4, 1:4, 1:4] = True  # GT lesion A: 27 voxels, touched by the prediction
    gt[6:8, 6:9, 6:9] = True  # GT lesion B: 18 voxels, missed
    pred = np.zeros_like(gt)
    pred[3:5, 2:4, 2:4] = True  # overlaps A in one slice: 8 voxels, true positive
    pred[7:9, 0:2, 10:12] = True  # far from all GT: 8 voxels, false positive
    spacing = (2.5, 2.0, 2.0)  # 10 mm^3 = 0.01 ml per voxel
    fpv, fnv = lesion_fp_fn_volume(pred, gt, spacing)
    assert fpv == pytest.approx(8 * 0.01)
    assert fnv == pytest.approx(18 * 0.01)
    err = lesion_errors(pred, gt, spacing)
    assert (err.n_pred_components, err.n_gt_components) == (2, 2)
    assert (err.n_false_positive, err.n_false_negative) == (1, 1)


def test_fpv_uses_18_connectivity():
    gt = np.zeros((5, 5, 5), bool)
    gt[1, 1, 1] = True
    corner = np.zeros_like(gt)
    corner[1, 1, 1] = corner[2, 2, 2] = True  # the second voxel touches the first at a corner only
    edge = np.zeros_like(gt)
    edge[1, 1, 1] = edge[2, 2, 1] = True  # shares an edge: one 18-connected component
    assert lesion_fp_fn_volume(corner, gt, (10, 10, 10)) == pytest.approx((1.0, 0.0))  # 1000 mm^3 = 1 ml
    assert lesion_fp_fn_volume(edge, gt, (10, 10, 10)) == pytest.approx((0.0, 0.0))


def _autopet_reference(pred: np.ndarray, gt: np.ndarray, voxel_ml: float) -> tuple[float, float]:
    """autoPET's definition, written out with SciPy labelling (an independent component labeller)."""
    structure = ndimage.generate_binary_structure(3, 2)  # 18-connectivity
    out = []
    for a, b in ((pred, gt), (gt, pred)):
        labels, n = ndimage.label(a, structure)
        out.append(sum((labels == i).sum() for i in range(1, n + 1) if not (b & (labels == i)).any()) * voxel_ml)
    return out[0], out[1]


def test_fpv_fnv_match_autopet_definition_on_random_lesions():
    rng = np.random.default_rng(3)
    for _ in range(3):
        pred, gt = blob(rng, (20, 30, 30), 1.2, 0.08), blob(rng, (20, 30, 30), 1.2, 0.08)
        ours = lesion_fp_fn_volume(pred, gt, (3.0, 2.0, 2.0))
        assert ours == pytest.approx(_autopet_reference(pred, gt, 12 / 1000))
        assert ours[0] > 0 and ours[1] > 0  # the random masks do have unmatched lesions


def test_bad_inputs_are_refused():
    a = np.zeros((4, 5, 6), bool)
    with pytest.raises(InputError, match="shape"):
        dice(a, np.zeros((4, 5, 7), bool))
    with pytest.raises(InputError, match="values other than 0 and 1"):
        dice(a.astype(np.uint8) + 2, a)
    with pytest.raises(InputError, match="spacing"):
        nsd(a, a, (1.0, 1.0))
    with pytest.raises(InputError, match="spacing"):
        hd95(a, a, (1.0, 0.0, 1.0))
    with pytest.raises(InputError, match="2D or 3D"):
        dice(np.zeros(5, bool), np.zeros(5, bool))


def test_evaluate_case_rows_match_functional_metrics():
    rng = np.random.default_rng(11)
    shape, sp = (18, 28, 26), (2.0, 0.9, 1.1)
    gt = np.zeros(shape, np.uint8)
    pred = np.zeros(shape, np.uint8)
    gt[blob(rng, shape, frac=0.2)] = 1
    gt[blob(rng, shape, frac=0.1)] = 2
    pred[blob(rng, shape, frac=0.2)] = 1
    pred[blob(rng, shape, frac=0.1)] = 3  # label 3 only in the prediction, label 2 only in the GT
    rows = evaluate_case(pred, gt, sp, tolerance_mm=1.5)
    assert [r["label"] for r in rows] == [1, 2, 3]
    for row in rows:
        p, g = pred == row["label"], gt == row["label"]
        assert row["dsc"] == pytest.approx(dice(p, g))
        assert row["iou"] == pytest.approx(iou(p, g))
        assert row["nsd"] == pytest.approx(nsd(p, g, sp, 1.5))
        assert row["gt_voxels"] == g.sum() and row["pred_voxels"] == p.sum()
        assert row["gt_ml"] == pytest.approx(g.sum() * 2.0 * 0.9 * 1.1 / 1000)
        fpv, fnv = lesion_fp_fn_volume(p, g, sp)
        assert (row["fpv_ml"], row["fnv_ml"]) == pytest.approx((fpv, fnv))
        if g.any() and p.any():
            assert row["hd95"] == pytest.approx(hd95(p, g, sp))
    assert rows[1]["note"] == "empty prediction" and rows[1]["dsc"] == 0.0 and math.isnan(rows[1]["hd95"])
    assert rows[2]["note"] == "empty ground truth" and rows[2]["fnv_ml"] == 0.0 and rows[2]["fpv_ml"] > 0
    # asking for a label absent from both maps gives a "both empty" row
    rows = evaluate_case(pred, gt, sp, labels=[4])
    assert rows[0]["note"] == "both empty" and rows[0]["dsc"] == 1.0 and rows[0]["nsd"] == 1.0


def test_evaluator_tables_and_csv(tmp_path):
    rng = np.random.default_rng(5)
    sp = (1.5, 1.0, 1.0)
    gt1 = blob(rng, (10, 20, 20)).astype(np.uint8)
    pred1 = np.roll(gt1, 1, axis=1)
    ev = SegmentationEvaluator(tolerance_mm=1.0)
    ev.add("case1", pred1, gt1, sp)
    ev.add("case2", np.zeros_like(gt1), gt1, sp)  # missed: DSC 0, HD95 NaN
    with pytest.raises(InputError, match="twice"):
        ev.add("case1", pred1, gt1, sp)
    means = ev.per_class_mean()
    assert len(means) == 1 and means[0]["n_cases"] == 2 and means[0]["n_pred_empty"] == 1
    d1 = dice(pred1 > 0, gt1 > 0)
    assert means[0]["dsc"] == pytest.approx(d1 / 2)  # both cases count
    assert means[0]["hd95"] == pytest.approx(hd95(pred1 > 0, gt1 > 0, sp))  # the NaN is skipped
    out = tmp_path / "metrics.csv"
    ev.write_csv(out)
    with open(out) as fh:
        rows = list(csv.DictReader(fh))
    assert [r["case"] for r in rows] == ["case1", "case2"]
    assert float(rows[0]["dsc"]) == pytest.approx(d1) and rows[1]["hd95"] == "nan"
    assert rows[1]["note"] == "empty prediction"
    before = out.read_bytes()
    with pytest.raises(OutputExistsError):
        ev.write_csv(out)
    assert out.read_bytes() == before
    ev.write_summary_csv(tmp_path / "summary.csv")
    assert "hd95" in (tmp_path / "summary.csv").read_text().splitlines()[0]
    assert "nan" not in ev.summary_text().splitlines()[1]


# --- MedSAM-on-laptop 2024 challenge mode -----------------------------------------------------------


def _challenge_reference(gt: np.ndarray, seg: np.ndarray, spacing) -> tuple[float, float]:
    """The CVPR24 ``compute_metrics.py`` logic, written against DeepMind's package as the original is."""
    dscs = []
    for i in range(1, gt.max() + 1):
        g, s = gt == i, seg == i
        total = g.sum() + s.sum()
        dscs.append(np.nan if total == 0 else 2 * (g & s).sum() / total)
    case_dsc = np.mean(dscs)
    if not case_dsc > 0.2:
        return case_dsc, 0.0
    if gt.ndim == 2:
        gt, seg, spacing = gt[..., None], seg[..., None], [1.0, 1.0, 1.0]
    nsds = []
    for i in range(1, gt.max() + 1):
        d = sd.compute_surface_distances(gt == i, seg == i, list(spacing))
        inside = d["surfel_areas_gt"][d["distances_gt_to_pred"] <= 2].sum()
        inside += d["surfel_areas_pred"][d["distances_pred_to_gt"] <= 2].sum()
        nsds.append(inside / (d["surfel_areas_gt"].sum() + d["surfel_areas_pred"].sum() + 1e-12))
    return case_dsc, float(np.mean(nsds))


def test_challenge_mode_on_a_2d_case_scores_it_as_a_one_slice_volume():
    rng = np.random.default_rng(21)
    gt = np.zeros((60, 70), np.uint8)
    gt[blob(rng, gt.shape, frac=0.3)] = 1
    gt[blob(rng, gt.shape, frac=0.1)] = 2
    seg = np.where(np.roll(gt, 2, axis=1) == 1, 1, 0).astype(np.uint8)
    seg[np.roll(gt, -1, axis=0) == 2] = 2
    res = challenge_case_metrics(seg, gt, spacing=(0.3, 0.3))  # spacing of 2D cases is ignored, as in the script
    ref_dsc, ref_nsd = _challenge_reference(gt, seg, None)
    assert res["nsd_computed"]
    assert res["dsc"] == pytest.approx(ref_dsc) and res["nsd"] == pytest.approx(ref_nsd, rel=AREA_REL)
    # the H x W x 1 volume has top and bottom faces, so its NSD differs from the 2D contour NSD
    plain = np.mean([nsd(seg == i, gt == i, (1.0, 1.0), 2.0) for i in (1, 2)])
    assert abs(res["nsd"] - plain) > 1e-3


def test_challenge_mode_gates_nsd_on_case_dsc_and_propagates_nan():
    gt = np.zeros((3, 20, 20), np.uint8)
    gt[1, 2:10, 2:10] = 1
    far = np.zeros_like(gt)
    far[1, 9:17, 9:17] = 1  # DSC 2/64 < 0.2
    res = challenge_case_metrics(far, gt, spacing=(2.0, 1.0, 1.0))
    assert res["dsc"] == pytest.approx(_challenge_reference(gt, far, (2.0, 1.0, 1.0))[0])
    assert res["dsc"] < 0.2 and res["nsd"] == 0.0 and not res["nsd_computed"]
    # label 2 absent from both maps while label 3 exists: per-class DSC NaN, so the case DSC is NaN
    gt3 = gt.copy()
    gt3[2, 12:18, 12:18] = 3
    res = challenge_case_metrics(gt3, gt3, spacing=(2.0, 1.0, 1.0))
    assert [c["label"] for c in res["per_class"]] == [1, 2, 3]
    assert math.isnan(res["per_class"][1]["dsc"]) and math.isnan(res["dsc"]) and res["nsd"] == 0.0


def test_challenge_mode_3d_matches_reference_with_anisotropic_spacing():
    rng = np.random.default_rng(8)
    gt = blob(rng, (12, 30, 30)).astype(np.uint8)
    seg = np.roll(ndimage.binary_dilation(gt), 1, axis=2).astype(np.uint8)
    sp = (0.9, 0.9, 3.0)  # applied to the array axes in order, as the script does with an npz spacing
    res = challenge_case_metrics(seg, gt, sp)
    ref = _challenge_reference(gt, seg, sp)
    assert (res["dsc"], res["nsd"]) == pytest.approx(ref, rel=AREA_REL)
    with pytest.raises(InputError, match="challenge mode"):
        SegmentationEvaluator(challenge_compat=True, labels=[1])
    ev = SegmentationEvaluator(challenge_compat=True)
    ev.add("c", seg, gt, sp)
    assert ev.per_case()[0] == {"case": "c", "label": "all", "dsc": res["dsc"], "nsd": res["nsd"], "nsd_computed": True}


def test_label_maps_go_through_the_one_label_check():
    gt = np.zeros((4, 5, 6), np.uint8)
    gt[1:3, 1:3, 1:3] = 2
    pred = gt.astype(np.float32)
    pred[1, 1, 1] = 0.5
    with pytest.raises(InputError, match="prediction label map has 1 non-integer"):
        evaluate_case(pred, gt)
    with pytest.raises(InputError, match="ground-truth label map has negative labels"):
        evaluate_case(gt, gt.astype(np.int16) - 1)
