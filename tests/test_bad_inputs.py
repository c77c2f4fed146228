"""The bad-input corpus (issue 11): every verb, every kind of bad input a new user gives.

Each case runs the real CLI in-process and asserts: exit code 2, stderr is ONE line that names the file or
option at fault, no traceback, and nothing on disk changed (inputs and the output folder: names, sizes and
modification times). Inputs are tiny synthetic files and every check fires before any model inference.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from medfoundry.cli.main import main

BOX2D = ["--box", "2", "2", "10", "10"]
BOX3D = ["--box", "2", "2", "1", "10", "10", "4"]
BQ = ["lesions", "{i}/pet_bq.nii.gz", "--out", "{o}/r"]  # a PET in Bq/mL


def _write_inputs(root: Path) -> None:
    """Tiny inputs, good and bad, for every case below."""
    import nibabel as nib

    from medfoundry.io import MedicalImage, write_image, write_mask
    from medfoundry.io.raster2d import write_png

    rng = np.random.default_rng(0)
    ct = MedicalImage(rng.normal(0, 100, (6, 16, 16)).astype(np.float32), (1.0, 1.0, 2.0), modality="CT")
    write_image(ct, root / "ct.nii.gz")
    mask = np.zeros((6, 16, 16), np.uint8)
    mask[2:4, 4:10, 4:10] = 1
    write_mask(mask, root / "mask.nii.gz", reference=ct)
    write_mask(np.zeros((6, 8, 8), np.uint8), root / "mask_other.nii.gz",
               reference=MedicalImage(np.zeros((6, 8, 8), np.float32), (1.0, 1.0, 2.0)))  # fmt: skip
    write_image(ct.with_array(mask.astype(np.float32) * 0.5), root / "mask_float.nii.gz")
    write_png((np.arange(256).reshape(16, 16)).astype(np.uint8), root / "img.png")
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 3, 2), np.float32), np.eye(4)), root / "v4d.nii.gz")
    nan = rng.random((4, 8, 8)).astype(np.float32)
    nan[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(nan, np.eye(4)), root / "nan.nii.gz")
    (root / "corrupt.nii.gz").write_bytes(gzip.compress(b"this is not a NIfTI header" * 20))
    (root / "truncated.nii.gz").write_bytes((root / "ct.nii.gz").read_bytes()[:200])
    (root / "empty.nii.gz").write_bytes(b"")
    (root / "notes.txt").write_text("hello\n")
    (root / "data.xyz").write_text("1 2 3\n")
    (root / "afile.txt").write_text("a file, not a folder\n")
    (root / "emptydir").mkdir()
    # (a negative ElementSpacing in MetaImage is a flipped axis for ITK, not an error: the npz spacing is literal)
    np.savez(root / "neg_spacing.npz", imgs=rng.random((4, 8, 8)).astype(np.float32), spacing=np.array([-1.0, 1, 1]))
    np.savez(root / "zero_spacing.npz", imgs=rng.random((4, 8, 8)).astype(np.float32), spacing=np.array([0.0, 1, 1]))
    # prompt files
    (root / "bad.json").write_text("{not json")
    (root / "empty.json").write_text("[]")
    (root / "five.csv").write_text("1,2,3,4,5\n")
    (root / "nan.json").write_text('[[1, 2, "x", 4]]')
    # npz folders (MedSAM challenge format)
    for name, arrays in {
        "noimgs": {"gts": np.zeros((8, 8), np.uint8)},
        "v4d": {"imgs": np.zeros((2, 3, 8, 8), np.uint8), "boxes": np.array([[1, 1, 4, 4]])},
        "noboxes": {"imgs": np.zeros((8, 8), np.uint8)},
        "outside": {"imgs": rng.integers(0, 255, (8, 8)).astype(np.uint8), "boxes": np.array([[20, 20, 30, 30]])},
    }.items():
        folder = root / f"npz_{name}"
        folder.mkdir()
        np.savez(folder / f"{name}.npz", **arrays)
    (root / "npz_corrupt").mkdir()
    (root / "npz_corrupt" / "c.npz").write_bytes(b"PK\x03\x04 broken zip")
    # checkpoints, adapters, weights
    (root / "junk.pt").write_bytes(b"\x00\x01 not a torch file" * 10)
    torch.save({"x": torch.zeros(2)}, root / "notadapter.pt")
    torch.save({"format": "medfoundry-adapter", "version": 1, "method": "lora", "config": {"rank": "abc"},
                "base_fingerprint": "0", "base_name": "lite_medsam", "state": {}, "meta": {}},
               root / "badrank.pt")  # fmt: skip
    torch.save({"format": "medfoundry-adapter", "version": 1, "method": "lora", "config": {"rank": 0},
                "base_fingerprint": "0", "base_name": "lite_medsam", "state": {}, "meta": {}},
               root / "rank0.pt")  # fmt: skip
    torch.save({"format": "medfoundry-adapter", "version": 1, "method": "nope", "config": {},
                "base_fingerprint": "0", "base_name": "x", "state": {}, "meta": {}}, root / "nomethod.pt")  # fmt: skip
    torch.save({"format": "medfoundry-tsfm/1", "config": {}, "classes": [], "model": {}}, root / "tsfm_empty.pt")
    # pool configs
    good_source = {"name": "s", "modality": "CT", "root": str(root), "image_glob": "ct.nii.gz",
                   "label_from_image": ["ct", "mask"], "labels": {1: "tumour"}}  # fmt: skip
    good = {"name": "p", "classes": ["tumour"], "spacing_xyz_mm": [2, 2, 2], "patch_size_zyx": [2, 4, 4],
            "sources": [good_source]}  # fmt: skip
    import yaml

    variants = {
        "good": {},
        "share_half": {"foreground_share": "half"},
        "share_2": {"foreground_share": 2},
        "classes_5": {"classes": 5},
        "labels_list": {"sources": [dict(good_source, labels=[1, 2])]},
        "glob_5": {"sources": [dict(good_source, image_glob=5)]},
        "sources_abc": {"sources": "abc"},
        "modality_xx": {"sources": [dict(good_source, modality="XRAY")]},
        "spacing_neg": {"spacing_xyz_mm": [-1, 2, 2]},
        "patch_str": {"patch_size_zyx": "big"},
        "no_classes": {"classes": []},
        "label_unknown_class": {"sources": [dict(good_source, labels={1: "spleen"})]},
        "root_missing": {"sources": [dict(good_source, root=str(root / "nowhere"))]},
        "pad_str": {"pad_to_patch": "yes"},
    }
    for name, change in variants.items():
        (root / f"pool_{name}.yaml").write_text(yaml.safe_dump(dict(good, **change)))
    (root / "pool_unparseable.yaml").write_text("classes: [a\nsources: {\n")
    (root / "pool_list.yaml").write_text("- a\n- b\n")
    (root / "badpool").mkdir()
    (root / "badpool" / "pool.json").write_text("{broken")
    # classify
    (root / "cases_missing.csv").write_text("case_id,image,mask\nc1,nowhere.nii.gz,nowhere_mask.nii.gz\n")
    (root / "cases_badheader.csv").write_text("a,b\n1,2\n")
    # PET in Bq/mL (a body of ~4000 Bq/mL in air) for --suv-factor; manifests whose outputs leave their folder
    _, y, x = np.mgrid[:12, :32, :32]
    body = ((y - 16) / 12) ** 2 + ((x - 16) / 14) ** 2 < 1
    bq = np.where(body, 4000.0, 0.0) * rng.uniform(0.8, 1.2, body.shape)
    write_image(MedicalImage(bq.astype(np.float32), (4.0, 4.0, 3.0), modality="PET"), root / "pet_bq.nii.gz")
    (root / "manifest_climb.csv").write_text("image,box,out\nimg.png,2 2 10 10,../../x.png\n")
    (root / "manifest_absolute.csv").write_text(f"image,box,out\nimg.png,2 2 10 10,{root.parent / 'abs.png'}\n")


def _rp(ds):
    return ds.RadiopharmaceuticalInformationSequence[0]


# STS_001's real headers (SeriesTime 112011, injection 103500, 71 kg, 3.89e8 Bq), edited one way each
PET_HEADER_EDITS = {
    "pet_late_injection": lambda ds: setattr(_rp(ds), "RadiopharmaceuticalStartTime", "113500.00"),
    "pet_weight_nan": lambda ds: setattr(ds, "PatientWeight", "NaN"),
    "pet_half_life_0": lambda ds: setattr(_rp(ds), "RadionuclideHalfLife", "0"),
    "pet_dose_mbq": lambda ds: setattr(_rp(ds), "RadionuclideTotalDose", "388.777472"),
    "pet_weight_grams": lambda ds: setattr(ds, "PatientWeight", "71000"),
}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, edited_pet) -> Path:
    import shutil

    root = tmp_path_factory.mktemp("inputs")
    _write_inputs(root)
    for name, edit in PET_HEADER_EDITS.items():
        shutil.move(edited_pet("STS_001", edit), root / name)
    return root


def _snapshot(*roots: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for root in roots:
        for p in sorted(root.rglob("*")):
            st = p.lstat()
            out[str(p)] = (st.st_size if p.is_file() else -1, st.st_mtime_ns)
    return out


# (id, argv with {i} = inputs folder and {o} = an empty output folder, fragment the error line must hold)
CASES: list[tuple[str, list[str], str]] = [
    # --- segment: the image ---
    ("seg-missing", ["segment", "{i}/nope.nii.gz", *BOX3D, "--out", "{o}/m.nii.gz"], "nope.nii.gz"),
    ("seg-suffix", ["segment", "{i}/data.xyz", *BOX2D, "--out", "{o}/m.png"], "data.xyz"),
    ("seg-text-as-png", ["segment", "{i}/notes.txt", *BOX2D, "--out", "{o}/m.png"], "notes.txt"),
    ("seg-corrupt", ["segment", "{i}/corrupt.nii.gz", *BOX3D, "--out", "{o}/m.nii.gz"], "corrupt.nii.gz"),
    ("seg-truncated", ["segment", "{i}/truncated.nii.gz", *BOX3D, "--out", "{o}/m.nii.gz"], "truncated.nii.gz"),
    ("seg-empty-file", ["segment", "{i}/empty.nii.gz", *BOX3D, "--out", "{o}/m.nii.gz"], "empty.nii.gz"),
    ("seg-4d", ["segment", "{i}/v4d.nii.gz", *BOX3D, "--out", "{o}/m.nii.gz"], "v4d.nii.gz"),
    ("seg-nan", ["segment", "{i}/nan.nii.gz", *BOX3D, "--out", "{o}/m.nii.gz"], "nan.nii.gz"),
    ("seg-empty-folder", ["segment", "{i}/emptydir", *BOX3D, "--out", "{o}/m.nii.gz"], "emptydir"),
    ("seg-neg-spacing", ["segment", "{i}/neg_spacing.npz", *BOX3D, "--out", "{o}/m.nii.gz"], "neg_spacing.npz"),
    ("seg-zero-spacing", ["segment", "{i}/zero_spacing.npz", *BOX3D, "--out", "{o}/m.nii.gz"], "zero_spacing.npz"),
    # --- segment: prompts ---
    ("seg-no-prompt", ["segment", "{i}/img.png", "--out", "{o}/m.png"], "--box"),
    ("seg-box-5", ["segment", "{i}/img.png", "--box", "1", "2", "3", "4", "5", "--out", "{o}/m.png"], "--box"),
    ("seg-box-nan", ["segment", "{i}/img.png", "--box", "nan", "2", "10", "10", "--out", "{o}/m.png"], "--box"),
    ("seg-box-inf", ["segment", "{i}/img.png", "--box", "0", "0", "inf", "10", "--out", "{o}/m.png"], "--box"),
    ("seg-box-1e300", ["segment", "{i}/img.png", "--box", "0", "0", "0", "1e300", "--out", "{o}/m.png"], "--box"),
    ("seg-box-word", ["segment", "{i}/img.png", "--box", "a", "2", "10", "10", "--out", "{o}/m.png"], "--box"),
    ("seg-box-zero", ["segment", "{i}/img.png", "--box", "3", "3", "3", "3", "--out", "{o}/m.png"], "--box"),
    ("seg-box-flat", ["segment", "{i}/img.png", "--box", "3", "3", "9", "3", "--out", "{o}/m.png"], "--box"),
    ("seg-box-inverted", ["segment", "{i}/img.png", "--box", "9", "9", "3", "3", "--out", "{o}/m.png"], "--box"),
    ("seg-box-outside", ["segment", "{i}/img.png", "--box", "40", "40", "60", "60", "--out", "{o}/m.png"], "img.png"),
    (
        "seg-box3d-z-outside",
        ["segment", "{i}/ct.nii.gz", "--box", "2", "2", "40", "10", "10", "50", "--out", "{o}/m.nii.gz"],
        "ct.nii.gz",
    ),  # fmt: skip
    (
        "seg-box3d-z-inverted",
        ["segment", "{i}/ct.nii.gz", "--box", "2", "2", "4", "10", "10", "1", "--out", "{o}/m.nii.gz"],
        "--box",
    ),  # fmt: skip
    ("seg-2d-box-on-3d", ["segment", "{i}/ct.nii.gz", *BOX2D, "--out", "{o}/m.nii.gz"], "ct.nii.gz"),
    ("seg-3d-box-on-2d", ["segment", "{i}/img.png", *BOX3D, "--out", "{o}/m.png"], "img.png"),
    ("seg-point-outside", ["segment", "{i}/img.png", "--point", "99", "99", "--out", "{o}/m.png"], "img.png"),
    ("seg-point-nan", ["segment", "{i}/img.png", "--point", "nan", "3", "--out", "{o}/m.png"], "--point"),
    ("seg-point-3", ["segment", "{i}/img.png", "--point", "1", "2", "3", "4", "--out", "{o}/m.png"], "--point"),
    ("seg-negative-only", ["segment", "{i}/img.png", "--negative", "3", "3", "--out", "{o}/m.png"], "--negative"),
    ("seg-boxes-missing", ["segment", "{i}/img.png", "--boxes", "{i}/nope.json", "--out", "{o}/m.png"], "nope.json"),
    ("seg-boxes-bad-json", ["segment", "{i}/img.png", "--boxes", "{i}/bad.json", "--out", "{o}/m.png"], "bad.json"),
    ("seg-boxes-empty", ["segment", "{i}/img.png", "--boxes", "{i}/empty.json", "--out", "{o}/m.png"], "empty.json"),
    ("seg-boxes-five", ["segment", "{i}/img.png", "--boxes", "{i}/five.csv", "--out", "{o}/m.png"], "five.csv"),
    ("seg-boxes-word", ["segment", "{i}/img.png", "--boxes", "{i}/nan.json", "--out", "{o}/m.png"], "nan.json"),
    # --- segment: numbers and options ---
    (
        "seg-threshold-nan",
        ["segment", "{i}/img.png", *BOX2D, "--threshold", "nan", "--out", "{o}/m.png"],
        "--threshold",
    ),
    ("seg-threshold-2", ["segment", "{i}/img.png", *BOX2D, "--threshold", "2", "--out", "{o}/m.png"], "--threshold"),
    ("seg-threshold-0", ["segment", "{i}/img.png", *BOX2D, "--threshold", "0", "--out", "{o}/m.png"], "--threshold"),
    ("seg-threads-neg", ["segment", "{i}/img.png", *BOX2D, "--threads", "-1", "--out", "{o}/m.png"], "--threads"),
    ("seg-threads-0", ["segment", "{i}/img.png", *BOX2D, "--threads", "0", "--out", "{o}/m.png"], "--threads"),
    ("seg-threads-word", ["segment", "{i}/img.png", *BOX2D, "--threads", "all", "--out", "{o}/m.png"], "--threads"),
    ("seg-modality", ["segment", "{i}/img.png", *BOX2D, "--modality", "xray", "--out", "{o}/m.png"], "--modality"),
    ("seg-backend", ["segment", "{i}/img.png", *BOX2D, "--backend", "tpu", "--out", "{o}/m.png"], "--backend"),
    (
        "seg-width-neg",
        ["segment", "{i}/ct.nii.gz", *BOX3D, "--level", "40", "--width", "-5", "--out", "{o}/m.nii.gz"],
        "--width",
    ),  # fmt: skip
    (
        "seg-suv-nan",
        ["segment", "{i}/ct.nii.gz", *BOX3D, "--suv-range", "nan", "5", "--out", "{o}/m.nii.gz"],
        "--suv-range",
    ),  # fmt: skip
    (
        "seg-percentiles",
        ["segment", "{i}/ct.nii.gz", *BOX3D, "--percentiles", "0", "200", "--out", "{o}/m.nii.gz"],
        "--percentiles",
    ),  # fmt: skip
    ("seg-unknown-option", ["segment", "{i}/img.png", *BOX2D, "--colour", "red", "--out", "{o}/m.png"], "--colour"),
    ("seg-no-out", ["segment", "{i}/img.png", *BOX2D], "--out"),
    # --- segment: outputs ---
    (
        "seg-out-overlay-same",
        ["segment", "{i}/img.png", *BOX2D, "--out", "{o}/same.png", "--overlay", "{o}/same.png"],
        "same.png",
    ),  # fmt: skip
    ("seg-out-proc", ["segment", "{i}/img.png", *BOX2D, "--out", "/proc/medfoundry_x.png"], "/proc"),
    ("seg-out-parent-file", ["segment", "{i}/img.png", *BOX2D, "--out", "{i}/afile.txt/m.png"], "afile.txt"),
    ("seg-out-is-folder", ["segment", "{i}/img.png", *BOX2D, "--out", "{i}/emptydir"], "emptydir"),
    ("seg-out-exists", ["segment", "{i}/img.png", *BOX2D, "--out", "{i}/afile.txt"], "afile.txt"),
    (
        "seg-overlay-parent-file",
        ["segment", "{i}/img.png", *BOX2D, "--out", "{o}/m.png", "--overlay", "{i}/afile.txt/o.png"],
        "afile.txt",
    ),  # fmt: skip
    # --- segment: model files ---
    (
        "seg-weights-missing",
        ["segment", "{i}/img.png", *BOX2D, "--out", "{o}/m.png", "--weights", "{i}/nope.pth"],
        "nope.pth",
    ),  # fmt: skip
    (
        "seg-weights-junk",
        ["segment", "{i}/img.png", *BOX2D, "--out", "{o}/m.png", "--weights", "{i}/junk.pt"],
        "junk.pt",
    ),  # fmt: skip
    (
        "seg-adapter-missing",
        ["segment", "{i}/img.png", *BOX2D, "--out", "{o}/m.png", "--adapter", "{i}/nope.pt"],
        "nope.pt",
    ),  # fmt: skip
    (
        "seg-adapter-junk",
        ["segment", "{i}/img.png", *BOX2D, "--out", "{o}/m.png", "--adapter", "{i}/junk.pt"],
        "junk.pt",
    ),  # fmt: skip
    (
        "seg-adapter-not-adapter",
        ["segment", "{i}/img.png", *BOX2D, "--out", "{o}/m.png", "--adapter", "{i}/notadapter.pt"],
        "notadapter.pt",
    ),  # fmt: skip
    (
        "seg-adapter-rank-abc",
        ["segment", "{i}/img.png", *BOX2D, "--out", "{o}/m.png", "--adapter", "{i}/badrank.pt"],
        "badrank.pt",
    ),  # fmt: skip
    (
        "seg-adapter-rank-0",
        ["segment", "{i}/img.png", *BOX2D, "--out", "{o}/m.png", "--adapter", "{i}/rank0.pt"],
        "rank0.pt",
    ),  # fmt: skip
    (
        "seg-adapter-method",
        ["segment", "{i}/img.png", *BOX2D, "--out", "{o}/m.png", "--adapter", "{i}/nomethod.pt"],
        "nomethod.pt",
    ),  # fmt: skip
    # --- segment-npz ---
    ("npz-in-missing", ["segment-npz", "{i}/nope", "{o}/out", "--no-progress"], "nope"),
    ("npz-in-file", ["segment-npz", "{i}/afile.txt", "{o}/out"], "afile.txt"),
    ("npz-in-empty", ["segment-npz", "{i}/emptydir", "{o}/out", "--no-progress"], "emptydir"),
    ("npz-out-file", ["segment-npz", "{i}/npz_noimgs", "{i}/afile.txt", "--no-progress"], "afile.txt"),
    ("npz-no-imgs", ["segment-npz", "{i}/npz_noimgs", "{o}/out", "--no-progress"], "noimgs.npz"),
    ("npz-4d", ["segment-npz", "{i}/npz_v4d", "{o}/out", "--no-progress"], "v4d.npz"),
    ("npz-no-boxes", ["segment-npz", "{i}/npz_noboxes", "{o}/out", "--no-progress"], "noboxes.npz"),
    ("npz-box-outside", ["segment-npz", "{i}/npz_outside", "{o}/out", "--no-progress"], "outside.npz"),
    ("npz-corrupt", ["segment-npz", "{i}/npz_corrupt", "{o}/out", "--no-progress"], "c.npz"),
    ("npz-threads", ["segment-npz", "{i}/npz_noimgs", "{o}/out", "--threads", "0"], "--threads"),
    # --- evaluate ---
    ("eval-pred-missing", ["evaluate", "{i}/nope.nii.gz", "{i}/mask.nii.gz", "--out", "{o}/m.csv"], "nope.nii.gz"),
    ("eval-gt-missing", ["evaluate", "{i}/mask.nii.gz", "{i}/nope.nii.gz", "--out", "{o}/m.csv"], "nope.nii.gz"),
    ("eval-shape", ["evaluate", "{i}/mask_other.nii.gz", "{i}/mask.nii.gz", "--out", "{o}/m.csv"], "mask_other"),
    (
        "eval-float-mask",
        ["evaluate", "{i}/mask_float.nii.gz", "{i}/mask.nii.gz", "--out", "{o}/m.csv"],
        "mask_float",
    ),  # fmt: skip
    ("eval-corrupt", ["evaluate", "{i}/corrupt.nii.gz", "{i}/mask.nii.gz", "--out", "{o}/m.csv"], "corrupt.nii.gz"),
    ("eval-empty-folder", ["evaluate", "{i}/emptydir", "{i}/emptydir", "--out", "{o}/m.csv"], "emptydir"),
    (
        "eval-same-outputs",
        ["evaluate", "{i}/mask.nii.gz", "{i}/mask.nii.gz", "--out", "{o}/same.csv", "--summary", "{o}/same.csv"],
        "same.csv",
    ),  # fmt: skip
    (
        "eval-plot-jpg",
        ["evaluate", "{i}/mask.nii.gz", "{i}/mask.nii.gz", "--out", "{o}/m.csv", "--plot", "{o}/p.jpg"],
        "p.jpg",
    ),  # fmt: skip
    (
        "eval-tolerance-neg",
        ["evaluate", "{i}/mask.nii.gz", "{i}/mask.nii.gz", "--out", "{o}/m.csv", "--tolerance", "-1"],
        "--tolerance",
    ),  # fmt: skip
    (
        "eval-tolerance-nan",
        ["evaluate", "{i}/mask.nii.gz", "{i}/mask.nii.gz", "--out", "{o}/m.csv", "--tolerance", "nan"],
        "--tolerance",
    ),  # fmt: skip
    (
        "eval-labels-0",
        ["evaluate", "{i}/mask.nii.gz", "{i}/mask.nii.gz", "--out", "{o}/m.csv", "--labels", "0"],
        "--labels",
    ),  # fmt: skip
    (
        "eval-out-parent-file",
        ["evaluate", "{i}/mask.nii.gz", "{i}/mask.nii.gz", "--out", "{i}/afile.txt/m.csv"],
        "afile.txt",
    ),  # fmt: skip
    ("eval-out-exists", ["evaluate", "{i}/mask.nii.gz", "{i}/mask.nii.gz", "--out", "{i}/afile.txt"], "afile.txt"),
    # --- pool ---
    ("pool-missing", ["pool", "{i}/nope.yaml", "--out", "{o}/pool"], "nope.yaml"),
    ("pool-unparseable", ["pool", "{i}/pool_unparseable.yaml", "--out", "{o}/pool"], "pool_unparseable.yaml"),
    ("pool-not-mapping", ["pool", "{i}/pool_list.yaml", "--out", "{o}/pool"], "pool_list.yaml"),
    ("pool-share-half", ["pool", "{i}/pool_share_half.yaml", "--out", "{o}/pool"], "foreground_share"),
    ("pool-share-2", ["pool", "{i}/pool_share_2.yaml", "--out", "{o}/pool"], "foreground_share"),
    ("pool-classes-5", ["pool", "{i}/pool_classes_5.yaml", "--out", "{o}/pool"], "classes"),
    ("pool-labels-list", ["pool", "{i}/pool_labels_list.yaml", "--out", "{o}/pool"], "sources[0].labels"),
    ("pool-glob-5", ["pool", "{i}/pool_glob_5.yaml", "--out", "{o}/pool"], "sources[0].image_glob"),
    ("pool-sources-abc", ["pool", "{i}/pool_sources_abc.yaml", "--out", "{o}/pool"], "sources"),
    ("pool-modality", ["pool", "{i}/pool_modality_xx.yaml", "--out", "{o}/pool"], "XRAY"),
    ("pool-spacing-neg", ["pool", "{i}/pool_spacing_neg.yaml", "--out", "{o}/pool"], "spacing_xyz_mm"),
    ("pool-patch-str", ["pool", "{i}/pool_patch_str.yaml", "--out", "{o}/pool"], "patch_size_zyx"),
    ("pool-no-classes", ["pool", "{i}/pool_no_classes.yaml", "--out", "{o}/pool"], "classes"),
    ("pool-unknown-class", ["pool", "{i}/pool_label_unknown_class.yaml", "--out", "{o}/pool"], "spleen"),
    ("pool-root-missing", ["pool", "{i}/pool_root_missing.yaml", "--out", "{o}/pool"], "nowhere"),
    ("pool-pad-str", ["pool", "{i}/pool_pad_str.yaml", "--out", "{o}/pool"], "pad_to_patch"),
    ("pool-no-out", ["pool", "{i}/pool_good.yaml"], "--out"),
    ("pool-out-file", ["pool", "{i}/pool_good.yaml", "--out", "{i}/afile.txt", "--overwrite"], "afile.txt"),
    ("pool-out-exists", ["pool", "{i}/pool_good.yaml", "--out", "{i}/emptydir"], "emptydir"),
    # --- pretrain / transfer ---
    ("pretrain-no-pool", ["pretrain", "--pool", "{i}/nopool", "--out", "{o}/run"], "nopool"),
    ("pretrain-bad-pool-json", ["pretrain", "--pool", "{i}/badpool", "--out", "{o}/run"], "pool.json"),
    ("pretrain-epochs-neg", ["pretrain", "--pool", "{i}/badpool", "--out", "{o}/run", "--epochs", "-1"], "--epochs"),
    (
        "pretrain-batch-0",
        ["pretrain", "--pool", "{i}/badpool", "--out", "{o}/run", "--batch-size", "0"],
        "--batch-size",
    ),  # fmt: skip
    ("pretrain-device", ["pretrain", "--pool", "{i}/badpool", "--out", "{o}/run", "--device", "tpu9"], "--device"),
    ("pretrain-lr-nan", ["pretrain", "--pool", "{i}/badpool", "--out", "{o}/run", "--lr", "nan"], "--lr"),
    ("pretrain-iters-0", ["pretrain", "--pool", "{i}/badpool", "--out", "{o}/run", "--iters", "0"], "--iters"),
    ("pretrain-no-out", ["pretrain", "--pool", "{i}/badpool"], "--out"),
    ("transfer-epochs-neg", ["transfer", "--pool", "{i}/badpool", "--out", "{o}/run", "--epochs", "-5"], "--epochs"),
    ("transfer-neither", ["transfer", "--pool", "{i}/badpool", "--out", "{o}/run"], "--init"),
    (
        "transfer-init-missing",
        ["transfer", "--init", "{i}/nope.pt", "--pool", "{i}/badpool", "--out", "{o}/run"],
        "nope.pt",
    ),  # fmt: skip
    (
        "transfer-init-junk",
        ["transfer", "--init", "{i}/junk.pt", "--pool", "{i}/badpool", "--out", "{o}/run"],
        "junk.pt",
    ),  # fmt: skip
    (
        "transfer-model-missing",
        ["transfer", "--predict", "{i}/ct.nii.gz", "--model", "{i}/nope.pt", "--out-dir", "{o}/pred"],
        "nope.pt",
    ),  # fmt: skip
    (
        "transfer-model-adapter",
        ["transfer", "--predict", "{i}/ct.nii.gz", "--model", "{i}/notadapter.pt", "--out-dir", "{o}/pred"],
        "notadapter.pt",
    ),  # fmt: skip
    ("transfer-no-model", ["transfer", "--predict", "{i}/ct.nii.gz", "--out-dir", "{o}/pred"], "--model"),
    (
        "transfer-overlap",
        ["transfer", "--predict", "{i}/ct.nii.gz", "--model", "{i}/junk.pt", "--out-dir", "{o}/p", "--overlap", "1"],
        "--overlap",
    ),  # fmt: skip
    (
        "transfer-sw-batch",
        ["transfer", "--predict", "{i}/ct.nii.gz", "--model", "{i}/junk.pt", "--out-dir", "{o}/p", "--sw-batch", "0"],
        "--sw-batch",
    ),  # fmt: skip
    # --- classify ---
    ("classify-build-no-cases", ["classify", "build", "{o}/ds"], "--case"),
    ("classify-build-csv-missing", ["classify", "build", "{o}/ds", "--cases", "{i}/nope.csv"], "nope.csv"),
    ("classify-build-csv-files", ["classify", "build", "{o}/ds", "--cases", "{i}/cases_missing.csv"], "nowhere"),
    (
        "classify-build-csv-header",
        ["classify", "build", "{o}/ds", "--cases", "{i}/cases_badheader.csv"],
        "cases_badheader.csv",
    ),  # fmt: skip
    (
        "classify-build-split",
        [
            "classify",
            "build",
            "{o}/ds",
            "--case",
            "a",
            "{i}/ct.nii.gz",
            "{i}/mask.nii.gz",
            "--split",
            "0.5",
            "0.5",
            "2",
        ],
        "--split",
    ),  # fmt: skip
    ("classify-build-size", ["classify", "build", "{o}/ds", "--size", "0"], "--size"),
    ("classify-embed-missing", ["classify", "embed", "{i}/nope"], "nope"),
    ("classify-embed-batch", ["classify", "embed", "{i}/emptydir", "--batch-size", "0"], "--batch-size"),
    ("classify-embed-encoder", ["classify", "embed", "{i}/emptydir", "--encoder", "vgg"], "--encoder"),
    ("classify-compare-missing", ["classify", "compare", "{i}/nope", "--out", "{o}/cmp"], "nope"),
    (
        "classify-compare-epochs",
        ["classify", "compare", "{i}/nope", "--out", "{o}/cmp", "--head-epochs", "0"],
        "--head-epochs",
    ),  # fmt: skip
    (
        "classify-predict-model-missing",
        ["classify", "predict", "{i}/ct.nii.gz", "--model", "{i}/nope.pt", "--out", "{o}/p"],
        "nope.pt",
    ),  # fmt: skip
    (
        "classify-predict-model-junk",
        ["classify", "predict", "{i}/ct.nii.gz", "--model", "{i}/junk.pt", "--out", "{o}/p"],
        "junk.pt",
    ),  # fmt: skip
    (
        "classify-predict-threshold",
        ["classify", "predict", "{i}/ct.nii.gz", "--model", "{i}/junk.pt", "--out", "{o}/p", "--threshold", "2"],
        "--threshold",
    ),  # fmt: skip
    # --- nnunet ---
    ("nnunet-plan-not-run", ["nnunet", "plan", "--run-dir", "{i}/emptydir"], "emptydir"),
    ("nnunet-train-not-run", ["nnunet", "train", "--run-dir", "{i}/emptydir"], "emptydir"),
    ("nnunet-train-device", ["nnunet", "train", "--run-dir", "{i}/emptydir", "--device", "tpu9"], "--device"),
    ("nnunet-train-fraction", ["nnunet", "train", "--run-dir", "{i}/emptydir", "--fraction", "0"], "--fraction"),
    ("nnunet-train-epochs", ["nnunet", "train", "--run-dir", "{i}/emptydir", "--epochs", "0"], "--epochs"),
    ("nnunet-predict-not-run", ["nnunet", "predict", "--run-dir", "{i}/emptydir"], "emptydir"),
    ("nnunet-evaluate-not-run", ["nnunet", "evaluate", "--run-dir", "{i}/emptydir"], "emptydir"),
    (
        "nnunet-prepare-id",
        ["nnunet", "prepare", "{i}/emptydir", "--run-dir", "{o}/run", "--dataset-id", "0"],
        "--dataset-id",
    ),  # fmt: skip
    ("nnunet-prepare-empty", ["nnunet", "prepare", "{i}/emptydir", "--run-dir", "{o}/run"], "emptydir"),
    # --- finetune / synthesize / demo ---
    ("finetune-missing", ["finetune", "{i}/nope", "{o}/ft", "--tiny-model"], "nope"),
    ("finetune-empty", ["finetune", "{i}/emptydir", "{o}/ft", "--tiny-model"], "emptydir"),
    ("finetune-epochs-0", ["finetune", "{i}/emptydir", "{o}/ft", "--epochs", "0"], "--epochs"),
    ("finetune-batch-0", ["finetune", "{i}/emptydir", "{o}/ft", "--batch-size", "0"], "--batch-size"),
    ("finetune-val-fraction", ["finetune", "{i}/emptydir", "{o}/ft", "--val-fraction", "1.5"], "--val-fraction"),
    ("finetune-out-file", ["finetune", "{i}/emptydir", "{i}/afile.txt", "--tiny-model"], "afile.txt"),
    ("finetune-method", ["finetune", "{i}/emptydir", "{o}/ft", "--method", "magic"], "--method"),
    ("synth-missing", ["synthesize", "{i}/nope", "{o}/syn"], "nope"),
    ("synth-empty", ["synthesize", "{i}/emptydir", "{o}/syn"], "emptydir"),
    ("synth-count-0", ["synthesize", "{i}/emptydir", "{o}/syn", "--count", "0"], "--count"),
    ("synth-out-exists", ["synthesize", "{i}/emptydir", "{i}/afile.txt"], "afile.txt"),
    ("synth-seed-neg", ["synthesize", "{i}/emptydir", "{o}/syn", "--seed", "-1"], "--seed"),
    ("demo-out-file", ["demo", "--out", "{i}/afile.txt"], "afile.txt"),
    ("demo-out-proc", ["demo", "--out", "/proc/medfoundry_demo"], "/proc"),
    ("demo-backend", ["demo", "--backend", "gpu"], "--backend"),
    ("lesions-missing", ["lesions", "{i}/nowhere.nii.gz", "--out", "{o}/res"], "nowhere.nii.gz"),
    ("lesions-corrupt", ["lesions", "{i}/corrupt.nii.gz", "--out", "{o}/res"], "corrupt.nii.gz"),
    ("lesions-2d", ["lesions", "{i}/img.png", "--out", "{o}/res"], "img.png"),
    ("lesions-ct", ["lesions", "{i}/ct.nii.gz", "--out", "{o}/res"], "ct.nii.gz"),
    ("lesions-out-file", ["lesions", "{i}/ct.nii.gz", "--out", "{i}/afile.txt"], "afile.txt"),
    ("lesions-threshold-nan", ["lesions", "{i}/ct.nii.gz", "--out", "{o}/res", "--threshold", "nan"], "--threshold"),
    ("lesions-min-volume", ["lesions", "{i}/ct.nii.gz", "--out", "{o}/res", "--min-volume", "-1"], "--min-volume"),
    ("lesions-suv-factor", ["lesions", "{i}/ct.nii.gz", "--out", "{o}/res", "--suv-factor", "0"], "--suv-factor"),
    ("lesions-delineation", ["lesions", "{i}/ct.nii.gz", "--out", "{o}/res", "--delineation", "x"], "--delineation"),
    # --- numbers that would overflow, SUV that cannot be trusted (issue 29) ---
    ("lesions-suv-factor-1e300", [*BQ, "--suv-factor", "1e300"], "--suv-factor"),
    ("lesions-suv-factor-1e-300", [*BQ, "--suv-factor", "1e-300"], "--suv-factor"),
    ("lesions-suv-factor-1e-30", [*BQ, "--suv-factor", "1e-30"], "median SUV of the tissue"),
    ("lesions-suv-factor-1e30", [*BQ, "--suv-factor", "1e30"], "pet_bq.nii.gz"),
    ("lesions-threshold-1e300", [*BQ, "--threshold", "1e300"], "--threshold"),
    ("lesions-min-volume-1e300", [*BQ, "--min-volume", "1e300"], "--min-volume"),
    (
        "lesions-dicom-late-injection",
        ["lesions", "{i}/pet_late_injection", "--out", "{o}/r"],
        "RadiopharmaceuticalStartTime 113500.00",
    ),  # fmt: skip
    ("lesions-dicom-weight-nan", ["lesions", "{i}/pet_weight_nan", "--out", "{o}/r"], "PatientWeight is 'NaN'"),
    ("lesions-dicom-half-life-0", ["lesions", "{i}/pet_half_life_0", "--out", "{o}/r"], "RadionuclideHalfLife"),
    ("lesions-dicom-dose-mbq", ["lesions", "{i}/pet_dose_mbq", "--out", "{o}/r"], "times the injected activity"),
    ("lesions-dicom-weight-grams", ["lesions", "{i}/pet_weight_grams", "--out", "{o}/r"], "median SUV"),
    ("seg-point-1e300", ["segment", "{i}/img.png", "--point", "1e300", "3", "--out", "{o}/m.png"], "--point"),
    (
        "seg-slice-step-huge",
        ["segment", "{i}/img.png", *BOX2D, "--slice-step", "99999999999", "--out", "{o}/m.png"],
        "--slice-step",
    ),  # fmt: skip
    ("seg-manifest-climbs-out", ["segment", "--manifest", "{i}/manifest_climb.csv", "--no-progress"], "climbs out"),
    (
        "seg-manifest-absolute-out",
        ["segment", "--manifest", "{i}/manifest_absolute.csv", "--no-progress"],
        "--allow-absolute-out",
    ),  # fmt: skip
    ("finetune-lr-1e300", ["finetune", "{i}/emptydir", "{o}/ft", "--lr", "1e300"], "--lr"),
    ("view-missing", ["view", "{i}/nowhere.nii.gz", "--no-browser"], "nowhere.nii.gz"),
    ("view-corrupt", ["view", "{i}/corrupt.nii.gz", "--no-browser"], "corrupt.nii.gz"),
    ("view-out-type", ["view", "{i}/ct.nii.gz", "--out", "{o}/labels.xyz", "--no-browser"], "labels.xyz"),
    ("view-out-nofolder", ["view", "{i}/ct.nii.gz", "--out", "{o}/no/labels.nii.gz", "--no-browser"], "labels.nii.gz"),
    ("view-out-folder", ["view", "{i}/ct.nii.gz", "--out", "{i}/emptydir", "--no-browser"], "emptydir"),
    ("view-out-proc", ["view", "{i}/ct.nii.gz", "--out", "/proc/labels.nii.gz", "--no-browser"], "/proc"),
    ("view-port", ["view", "{i}/ct.nii.gz", "--port", "70000", "--no-browser"], "--port"),
    ("view-threshold-nan", ["view", "{i}/ct.nii.gz", "--threshold", "nan", "--no-browser"], "--threshold"),
    (
        "view-labels-grid",
        ["view", "{i}/ct.nii.gz", "--labels", "{i}/mask_other.nii.gz", "--no-browser"],
        "mask_other.nii.gz",
    ),  # fmt: skip
    ("unknown-verb", ["segmentate", "x"], "segmentate"),
]


@pytest.mark.parametrize("argv, fragment", [pytest.param(a, f, id=i) for i, a, f in CASES])
def test_bad_input_is_one_clean_line(argv, fragment, inputs, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    args = [a.format(i=inputs, o=out) for a in argv]
    before = _snapshot(inputs, out)
    code = main(args)
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 2, f"exit {code}; stderr: {err}"
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert "error:" in err
    assert fragment.format(i=inputs, o=out) in err, err
    assert _snapshot(inputs, out) == before, "the disk changed"


def test_corpus_is_large_and_covers_every_verb():
    from medfoundry.cli.main import COMMANDS

    assert len(CASES) >= 190 and len({c[0] for c in CASES}) == len(CASES)
    verbs = {c[1][0] for c in CASES}
    assert set(COMMANDS) <= verbs


# --- inputs that are used, but said about; batches that go on past a bad file ------------------------------


@pytest.fixture
def tiny_predictor(tiny_model, monkeypatch):
    """The CLI's predictor replaced by a small random model (no real weights, fast)."""
    from medfoundry.inference.predictor import LiteMedSAMPredictor

    predictor = LiteMedSAMPredictor(model=tiny_model, backend="torch")
    # every verb's model options build through api.common.build_predictor (ModelFields.predictor_factory)
    monkeypatch.setattr("medfoundry.api.common.build_predictor", lambda *args: predictor)
    return predictor


@pytest.mark.parametrize("shape", [(6, 16, 16), (1, 1, 1)], ids=["all-zero", "one-voxel"])
def test_image_without_contrast_warns_in_one_line(shape, tiny_predictor, tmp_path, capsys):
    from medfoundry.io import MedicalImage, write_image

    write_image(MedicalImage(np.zeros(shape, np.float32), (1.0, 1.0, 1.0)), tmp_path / "flat.nii.gz")
    box = ["--point", "0", "0", "0"] if shape == (1, 1, 1) else ["--box", "0", "0", "0", "15", "15", "5"]
    code = main(["segment", str(tmp_path / "flat.nii.gz"), *box, "--out", str(tmp_path / "m.nii.gz"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 0 and (tmp_path / "m.nii.gz").is_file()
    assert len(err.splitlines()) == 1 and "warning:" in err and "no contrast" in err and "flat.nii.gz" in err


def test_contrast_is_not_warned_about_for_a_normal_image(tiny_predictor, tmp_path):
    import warnings

    from medfoundry.api import segment_image
    from medfoundry.errors import MedfoundryWarning
    from medfoundry.inference.prompts import ObjectPrompt
    from medfoundry.io import MedicalImage

    image = MedicalImage(np.random.default_rng(0).random((16, 16)).astype(np.float32), (1.0, 1.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error", MedfoundryWarning)
        segment_image(image, [ObjectPrompt(box=[2, 2, 10, 10])], tiny_predictor, progress=False)


def test_segment_npz_goes_on_past_bad_files_and_reports(tiny_predictor, tmp_path, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    rng = np.random.default_rng(1)
    for name in ("a_good", "c_good"):
        np.savez(
            src / f"{name}.npz", imgs=rng.integers(0, 255, (16, 16)).astype(np.uint8), boxes=np.array([[2, 2, 9, 9]])
        )
    np.savez(src / "b_bad.npz", gts=np.zeros((4, 4), np.uint8))
    code = main(["segment-npz", str(src), str(out), "--no-progress"])
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "b_bad.npz" in err and "1 of 3 files failed" in err
    assert "done: 2 file(s)" in captured.out and "a_good.npz, c_good.npz" in captured.out
    assert "failed: 1 file(s): b_bad.npz" in captured.out
    assert sorted(p.name for p in out.iterdir()) == ["a_good.npz", "c_good.npz"]
    # --stop-on-error stops at the bad file (the one before it stays written)
    code = main(["segment-npz", str(src), str(tmp_path / "out2"), "--no-progress", "--stop-on-error"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "b_bad.npz" in err and "files failed" not in err
    assert sorted(p.name for p in (tmp_path / "out2").iterdir()) == ["a_good.npz"]


def test_no_progress_also_silences_the_dicom_bar(shared_data, tmp_path, capsys):
    """--no-progress reaches the DICOM reader as a parameter: no 'reading DICOM' bar for a 267-slice series, which
    shows one otherwise (the PET series is refused as a label map after it is read, in both runs)."""
    series = shared_data / "pet-wholebody" / "STS_001" / "dicom" / "image"
    gt = shared_data / "pet-wholebody" / "STS_001" / "nifti" / "STS_001_FDG_PET_mask_GTV_Mass.nii.gz"
    args = ["evaluate", str(series), str(gt), "--out", str(tmp_path / "m.csv")]
    assert main([*args, "--no-progress"]) == 2
    quiet = capsys.readouterr().err
    assert main(args) == 2
    loud = capsys.readouterr().err
    assert "reading DICOM" not in quiet and "reading DICOM" in loud
    assert quiet.strip().splitlines()[-1] == loud.strip().splitlines()[-1]  # the same one-line error


# --- what a failed or killed run leaves behind (issue 29) --------------------------------------------------


@pytest.fixture(scope="module")
def pet_suv(tmp_path_factory) -> Path:
    """A small PET in SUV (a body of SUV ~0.7 in air): `lesions --threshold 500` finds nothing and needs no model."""
    from medfoundry.io import MedicalImage, write_image

    _, y, x = np.mgrid[:12, :32, :32]
    body = ((y - 16) / 12) ** 2 + ((x - 16) / 14) ** 2 < 1
    suv = np.where(body, 0.7, 0.0) * np.random.default_rng(0).uniform(0.8, 1.2, body.shape)
    path = tmp_path_factory.mktemp("pet") / "pet_suv.nii.gz"
    write_image(MedicalImage(suv.astype(np.float32), (4.0, 4.0, 3.0), modality="PET"), path)
    return path


def _stderr(capsys) -> str:
    """stderr without the lesion finder's anatomy line (the phantom has no organs; test_anatomy checks that line)."""
    lines = capsys.readouterr().err.strip().splitlines()
    return "\n".join(line for line in lines if not line.startswith("medfoundry lesions: warning: anatomy:"))


def _lesions(pet: Path, out: Path, *extra: str) -> list[str]:
    return ["lesions", str(pet), "--out", str(out), "--threshold", "500", "--no-progress", *extra]


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_an_output_that_cannot_be_replaced_is_one_line_and_kept(pet_suv, tmp_path, monkeypatch, capsys):
    import os

    out = tmp_path / "res"
    out.mkdir()
    (out / "old.txt").write_text("previous run")
    real = os.replace

    def refuse_to_move_out(src, dst):  # as for a folder that is busy or not ours: it cannot be moved aside
        if Path(src) == out:
            raise PermissionError(13, "Permission denied")
        return real(src, dst)

    monkeypatch.setattr("medfoundry.io.atomic.os.replace", refuse_to_move_out)
    assert main(_lesions(pet_suv, out, "--overwrite")) == 2
    err = _stderr(capsys)
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"{out}: cannot replace the output (Permission denied); the previous output is kept" in err
    assert sorted(p.name for p in out.iterdir()) == ["old.txt"] and _hidden(tmp_path) == []


def test_leftovers_of_a_killed_lesions_run_are_removed_with_a_notice(pet_suv, tmp_path, killed_write, capsys):
    out = tmp_path / "res"
    killed_write(out, folder=True)  # kill -9 while the outputs were written
    (left,) = _hidden(tmp_path)
    assert (tmp_path / left / "lesions.nii.gz").is_file()  # the partial output of the killed run
    assert main(_lesions(pet_suv, out)) == 0
    err = _stderr(capsys)
    assert err == f"medfoundry lesions: warning: {tmp_path}: removed 1 temporary file(s) left by an interrupted run " \
        f"({left})"  # fmt: skip
    assert _hidden(tmp_path) == [] and (out / "lesions.json").is_file()


def test_out_given_as_a_link_replaces_the_folder_it_points_to(pet_suv, tmp_path, capsys):
    real = tmp_path / "disk" / "results"
    real.mkdir(parents=True)
    (real / "old.txt").write_text("previous run")
    link = tmp_path / "res"
    link.symlink_to(real)
    assert main(_lesions(pet_suv, link, "--overwrite")) == 0
    assert link.is_symlink() and (real / "lesions.json").is_file() and not (real / "old.txt").exists()
    assert _hidden(tmp_path) == [] and _hidden(real.parent) == []  # no '.res.old-*' link left
