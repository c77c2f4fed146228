"""Dataset pool: config validation, label remapping, 1/sqrt(n) sampling, partial-label loss, patches."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from medfoundry.data.patches import sample_patch
from medfoundry.data.pool import PoolDataset, build_pool, load_pool_config
from medfoundry.data.pool_report import id_ranges, remap_rows, sampling_rows
from medfoundry.data.preprocess3d import ct_statistics, normalise, target_shape
from medfoundry.data.sampler import WeightedDistributedSampler
from medfoundry.errors import InputError, OutputExistsError
from medfoundry.io import MedicalImage, read_mask, write_image, write_mask
from medfoundry.modeling.tsfm.loss import PartialLabelBCEDiceLoss


def _write_case(folder, name, shape=(12, 40, 40), spacing=(2.0, 2.0, 3.0), labels=(1, 2), seed=0, ct=True):
    rng = np.random.default_rng(seed)
    img = (rng.normal(0, 50, shape) + (-200 if ct else 100)).astype(np.int16 if ct else np.float32)
    lbl = np.zeros(shape, np.uint8)
    z, y, x = (s // 2 for s in shape)
    for i, v in enumerate(labels):
        lbl[z - 2 : z + 2, y - 6 + 8 * i : y - 2 + 8 * i, x - 4 : x + 4] = v
        img[lbl == v] += 300
    image = MedicalImage(img, spacing, origin=(5.0, -3.0, 7.0), modality="CT" if ct else "MR")
    write_image(image, folder / f"{name}_image.nii.gz")
    write_mask(lbl, folder / f"{name}_mask.nii.gz", reference=image)


@pytest.fixture()
def synthetic_pool(tmp_path):
    """Source 'organs' (4 CT cases, ids 1 liver / 2 kidney) and 'tumours' (1 MR case, id 1 tumour)."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for i in range(4):
        _write_case(tmp_path / "a", f"case{i}", seed=i)
    _write_case(tmp_path / "b", "t0", labels=(1,), ct=False, shape=(10, 34, 36), spacing=(1.5, 1.5, 4.0))
    cfg = {
        "name": "synthetic",
        "spacing_xyz_mm": [3.0, 3.0, 3.0],
        "patch_size_zyx": [8, 16, 16],
        "classes": ["liver", "kidney", "tumour"],
        "sources": [
            {
                "name": "organs",
                "modality": "CT",
                "root": "a",
                "image_glob": "*_image.nii.gz",
                "labels": {"1": "liver", "2": "kidney"},
            },
            {"name": "tumours", "modality": "MR", "root": "b", "image_glob": "*_image.nii.gz", "labels": {1: "tumour"}},
        ],
    }
    path = tmp_path / "pool.json"
    path.write_text(json.dumps(cfg))
    return path, cfg


def _rewrite(path, cfg, **changes):
    cfg = json.loads(json.dumps(cfg))
    for key, value in changes.items():
        if key.startswith("src0_"):
            cfg["sources"][0][key[5:]] = value
        else:
            cfg[key] = value
    path.write_text(json.dumps(cfg))
    return path


def test_sampling_is_proportional_to_inverse_sqrt_of_source_size(synthetic_pool):
    cfg = load_pool_config(synthetic_pool[0])
    w = cfg.sampling_weights()
    assert len(w) == 5 and math.isclose(sum(w), 1.0)
    # 4 organ cases at 1/sqrt(4) each, one tumour case at 1/sqrt(1): that case is twice as likely as each organ case
    assert all(math.isclose(w[4] / wi, 2.0) for wi in w[:4])
    # the distributed sampler draws with those weights, the same draw split over ranks
    full = list(WeightedDistributedSampler(w, 4000, 0, 1, seed=3))
    freq = np.bincount(full, minlength=5) / len(full)
    assert np.allclose(freq, w, atol=0.03)
    r0 = list(WeightedDistributedSampler(w, 2000, 0, 2, seed=3))
    r1 = list(WeightedDistributedSampler(w, 2000, 1, 2, seed=3))
    assert r0 == full[0::2] and r1 == full[1::2] and r0 != r1
    s = WeightedDistributedSampler(w, 50, seed=3)
    first = list(s)
    s.set_epoch(1)
    assert list(s) != first


def test_sampling_and_remap_tables(synthetic_pool):
    cfg = load_pool_config(synthetic_pool[0])
    rows = sampling_rows(cfg)
    assert [(r["source"], r["cases"], r["classes"]) for r in rows] == [
        ("organs", 4, "liver, kidney"),
        ("tumours", 1, "tumour"),
    ]
    # a source's share is sqrt(n) / sum sqrt(n): 2 / 3 for the 4-case source, 1 / 3 for the 1-case one
    assert rows[0]["share"] == pytest.approx(2 / 3) and rows[1]["share"] == pytest.approx(1 / 3)
    assert rows[0]["p_case"] == pytest.approx(1 / 6) and rows[1]["p_case"] == pytest.approx(1 / 3)
    remap = remap_rows(cfg)
    assert [(r["source"], r["source_ids"], r["pool_class"], r["pool_id"]) for r in remap] == [
        ("organs", "1", "liver", 1),
        ("organs", "2", "kidney", 2),
        ("tumours", "1", "tumour", 3),
    ]
    assert id_ranges([14, 3, 1, 2, 10, 11, 12, 13, 5]) == "1-3, 5, 10-14"
    assert id_ranges([7]) == "7" and id_ranges([]) == ""


def test_pool_reads_medsam_npz_stacks_with_xyz_spacing(tmp_path):
    """A DeepLesion-style npz (image and label in one file, ``spacing`` stored (x, y, z)) as a pool source."""
    (tmp_path / "npz").mkdir()
    imgs = np.random.default_rng(0).integers(0, 255, (6, 40, 30)).astype(np.uint8)
    gts = np.zeros(imgs.shape, np.uint8)
    gts[2:4, 10:20, 10:20] = 1
    np.savez_compressed(tmp_path / "npz" / "lesion.npz", imgs=imgs, gts=gts, spacing=np.array([1.0, 1.0, 5.0]))
    cfg = {
        "name": "npz",
        "spacing_xyz_mm": [2.0, 2.0, 2.0],
        "patch_size_zyx": [8, 16, 16],
        "pad_to_patch": True,
        "classes": ["organ", "CT lesion"],
        "sources": [
            {
                "name": "deeplesion",
                "modality": "OTHER",
                "root": "npz",
                "cases": [{"image": "lesion.npz", "label": "lesion.npz"}],
                "labels": {1: "CT lesion"},
            }
        ],
    }
    (tmp_path / "npz.json").write_text(json.dumps(cfg))
    index = build_pool(load_pool_config(tmp_path / "npz.json"), tmp_path / "pool")
    case = index["cases"][0]
    # (6, 40, 30) at (5, 1, 1) mm (z, y, x) -> 2 mm: (15, 20, 15), then padded to the patch in x
    assert case["shape"] == [15, 20, 16] and case["present"] == [2] and case["annotated"] == [2]
    with np.load(tmp_path / "pool" / case["file"]) as z:
        assert set(np.unique(z["label"])) == {0, 2}
        # the lesion block (2 slices x 10 x 10 voxels of 5 x 1 x 1 mm = 1000 mm3) keeps its volume at 8 mm3 voxels
        assert float((z["label"] == 2).sum()) * 8 == pytest.approx(1000, rel=0.25)


def test_config_errors_name_the_config_and_the_problem(synthetic_pool, tmp_path):
    path, cfg = synthetic_pool
    with pytest.raises(InputError, match="source 'organs': dataset folder .*nowhere does not exist"):
        load_pool_config(_rewrite(path, cfg, src0_root="nowhere"))
    with pytest.raises(InputError, match="maps to 'spleen', which is not in classes"):
        load_pool_config(_rewrite(path, cfg, src0_labels={"1": "spleen"}))
    with pytest.raises(InputError, match="missing file"):
        load_pool_config(_rewrite(path, cfg, src0_image_glob=None, src0_cases=[{"image": "x.nii.gz", "label": "y"}]))
    with pytest.raises(InputError, match="pool config not found"):
        load_pool_config(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("classes: [a\n")
    with pytest.raises(InputError, match="bad.yaml: cannot parse"):
        load_pool_config(bad)


def test_label_ids_missing_from_remap_table_are_refused_unless_background(synthetic_pool, tmp_path):
    path, cfg = synthetic_pool
    cfg_path = _rewrite(path, cfg, src0_labels={"1": "liver"})  # id 2 is in the data, not in the table
    with pytest.raises(InputError, match=r"label ids \[2\] are not in the remap table of source 'organs'"):
        build_pool(load_pool_config(cfg_path), tmp_path / "out1")
    assert not (tmp_path / "out1" / "pool.json").exists()
    cfg_path = _rewrite(path, cfg, src0_labels={"1": "liver"}, src0_unmapped="background")
    index = build_pool(load_pool_config(cfg_path), tmp_path / "out2")
    assert all(c["present"] == [1] for c in index["cases"][:4])


def test_build_pool_resamples_remaps_and_normalises(synthetic_pool, tmp_path):
    index = build_pool(load_pool_config(synthetic_pool[0]), tmp_path / "pool")
    cases = index["cases"]
    assert [c["source"] for c in cases] == ["organs"] * 4 + ["tumours"]
    # (12, 40, 40) at (3, 2, 2) mm (z, y, x) -> 3 mm: (12, 27, 27); MR (10, 34, 36) at (4, 1.5, 1.5) -> (13, 17, 18)
    assert cases[0]["shape"] == [12, 27, 27]
    assert cases[4]["shape"] == [13, 17, 18]
    assert cases[4]["annotated"] == [3] and cases[0]["annotated"] == [1, 2]
    with np.load(tmp_path / "pool" / cases[4]["file"]) as z:
        assert set(np.unique(z["label"])) == {0, 3}  # source id 1 -> pool id 3 (tumour)
        assert abs(float(z["image"].mean())) < 0.2  # per-image z-score for MR
    with np.load(tmp_path / "pool" / cases[0]["file"]) as z:
        assert set(np.unique(z["label"])) == {0, 1, 2}
        ct = index["ct_stats"]
        assert z["image"].max() <= (ct["upper"] - ct["mean"]) / ct["std"] + 1e-4
    with pytest.raises(OutputExistsError):
        build_pool(load_pool_config(synthetic_pool[0]), tmp_path / "pool")


def test_patch_larger_than_volume_is_a_clear_error(synthetic_pool, tmp_path):
    path, cfg = synthetic_pool
    cfg_path = _rewrite(path, cfg, patch_size_zyx=[8, 24, 24])
    with pytest.raises(InputError, match=r"t0_image.nii.gz: patch size \(8, 24, 24\).*larger than the volume"):
        build_pool(load_pool_config(cfg_path), tmp_path / "p")
    assert not (tmp_path / "p").exists() and not list(tmp_path.glob(".p.*"))  # nothing written
    cfg_path = _rewrite(path, cfg, patch_size_zyx=[8, 24, 24], pad_to_patch=True)
    index = build_pool(load_pool_config(cfg_path), tmp_path / "q")
    assert index["cases"][4]["shape"] == [13, 24, 24]
    with np.load(tmp_path / "q" / index["cases"][4]["file"]) as z:
        assert z["label"][:, :3].max() == 0  # padding is background


def test_dataset_items_and_foreground_share(synthetic_pool, tmp_path):
    build_pool(load_pool_config(synthetic_pool[0]), tmp_path / "pool")
    torch.manual_seed(0)
    ds = PoolDataset(tmp_path / "pool", foreground_share=1.0)
    item = ds[4]
    assert item["image"].shape == (1, 8, 16, 16) and item["target"].shape == (3, 8, 16, 16)
    assert item["annotated"].tolist() == [False, False, True]
    assert all(ds[i]["target"].sum() > 0 for i in range(5) for _ in range(3))
    ds0 = PoolDataset(tmp_path / "pool", patch_size_zyx=(4, 8, 8), foreground_share=0.0)
    empty = sum(float(ds0[0]["target"].sum()) == 0 for _ in range(30))
    assert empty > 10  # the labelled blocks are small: random patches mostly miss them


def test_sample_patch_centres_on_foreground():
    rng = np.random.default_rng(0)
    img = np.zeros((20, 30, 30), np.float32)
    lbl = np.zeros((20, 30, 30), np.int16)
    lbl[18, 2, 27] = 1
    locs = {1: np.argwhere(lbl == 1)}
    for _ in range(20):
        _, p = sample_patch(img, lbl, (4, 6, 6), rng, locs, foreground_share=1.0)
        assert p.sum() == 1
    with pytest.raises(InputError, match="vol.nii: patch size"):
        sample_patch(img, lbl, (32, 6, 6), rng, locs, name="vol.nii")


def test_partial_label_loss_ignores_classes_a_source_does_not_annotate():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 8, 8, requires_grad=True)
    target = (torch.rand(2, 3, 4, 8, 8) > 0.7).float()
    annotated = torch.tensor([[True, True, False], [False, False, True]])
    loss = PartialLabelBCEDiceLoss()(logits, target, annotated)
    loss.backward()
    g = logits.grad
    assert g[0, 2].abs().sum() == 0 and g[1, :2].abs().sum() == 0
    assert g[0, 0].abs().sum() > 0 and g[1, 2].abs().sum() > 0
    # a perfect prediction of the annotated classes has ~zero loss, whatever the other channels say
    perfect = (target * 2 - 1) * 30
    perfect[0, 2] = 30.0  # wrong but not annotated
    assert PartialLabelBCEDiceLoss()(perfect, target, annotated).item() < 1e-3
    # and the un-annotated channel does change the loss when it is annotated
    full = torch.ones(2, 3, dtype=torch.bool)
    assert PartialLabelBCEDiceLoss()(perfect, target, full).item() > 0.1


def test_preprocessing_helpers():
    assert target_shape((10, 20, 30), (3.0, 1.0, 1.0), (1.5, 2.0, 2.0)) == (20, 10, 15)
    values = np.concatenate([np.full(1000, 40.0), np.full(5, 3000.0), np.full(5, -2000.0)])
    st = ct_statistics(values)
    assert st.upper < 3000 and st.lower > -2000
    out = normalise(np.array([[[-5000.0, 40.0, 5000.0]]]), "CT", st)
    assert out[0, 0, 0] == pytest.approx((st.lower - st.mean) / st.std)
    mr = normalise(np.arange(27.0).reshape(3, 3, 3), "MR")
    assert abs(mr.mean()) < 1e-6 and abs(mr.std() - 1) < 1e-5


def test_real_pool_from_shared_data_and_cli(shared_data, tmp_path, capsys, monkeypatch):
    import medfoundry.cli.main as cli

    cfg = {
        "name": "real",
        "spacing_xyz_mm": [4.0, 4.0, 4.0],
        "patch_size_zyx": [8, 16, 16],
        "classes": ["kidney", "liver", "tumour"],
        "sources": [
            {
                "name": "totalseg_mr",
                "modality": "MR",
                "root": str(shared_data / "totalsegmentator"),
                "cases": [{"image": "example_mr_sm.nii.gz", "label": "example_seg_mr.nii.gz"}],
                "labels": {"2": "kidney", "3": "kidney", "5": "liver"},
                "unmapped": "background",
            },
            {
                "name": "ibsi_ct",
                "modality": "CT",
                "root": str(shared_data / "pet-sts"),
                "image_glob": "STS_00[23]/CT_image.nii.gz",
                "labels": {"1": "tumour"},
            },
        ],
    }
    path = tmp_path / "real.json"
    path.write_text(json.dumps(cfg))
    monkeypatch.setattr(cli, "COMMANDS", {"pool": "medfoundry.cli.pool"})
    assert cli.main(["pool", str(path), "--check"]) == 0
    out = capsys.readouterr().out
    assert "totalseg_mr" in out and "41.4%" in out and "58.6%" in out  # 1/sqrt(1) vs 2 x 1/sqrt(2)
    assert "label remapping:" in out and "2-3" in out and "kidney (1)" in out  # the remap table
    assert cli.main(["pool", str(path), "--out", str(tmp_path / "p")]) == 0
    index = json.loads((tmp_path / "p" / "pool.json").read_text())
    assert [c["present"] for c in index["cases"]] == [[1, 2], [3], [3]]
    # the stored tumour voxels match the source mask's volume after resampling (within resampling error)
    src = read_mask(shared_data / "pet-sts/STS_002/CT_mask.nii.gz")
    ml_src = float((src.array > 0).sum()) * src.voxel_volume_ml
    with np.load(tmp_path / "p" / index["cases"][1]["file"]) as z:
        ml_pool = float((z["label"] == 3).sum()) * 4**3 / 1000
    assert ml_pool == pytest.approx(ml_src, rel=0.1)
    assert cli.main(["pool", str(path), "--out", str(tmp_path / "p")]) == 2  # refuses to overwrite
    cfg["sources"][1]["labels"] = {"1": "lesion"}
    path.write_text(json.dumps(cfg))
    assert cli.main(["pool", str(path), "--check"]) == 2
    assert "'lesion', which is not in classes" in capsys.readouterr().err
