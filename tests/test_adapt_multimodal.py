"""The class prompt with more than one class (issue 15, item 4): PET, CT and MR samples and volumes windowed for
their own modality, pre-windowed 8-bit CT left as it is, and the modality head's picks on unseen scans."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from medfoundry.data.slices2d import load_samples
from medfoundry.inference.encoder_backends import OnnxEncoder
from medfoundry.inference.modality_head import head_report, probe_slices, probe_volumes
from medfoundry.inference.volume_eval import load_volumes, read_volume
from medfoundry.io import MedicalImage, read_npz_case
from medfoundry.io.paths import modality_from_name
from medfoundry.modeling.adapters.io import base_fingerprint, load_adapted_model, save_adapter
from medfoundry.modeling.lite_medsam import build_lite_medsam
from medfoundry.modeling.registry import build_adapter
from medfoundry.preprocessing import IntensityWindow, normalize_intensity
from medfoundry.training.finetune.augment import model_images
from medfoundry.training.finetune.engine import MemoryEmbeddingCache, modality_targets
from medfoundry.training.finetune.modality_head import fit_modality_head

SCANS = {"PET": "PET", "CT": "CT", "MR": "MR_T1"}  # modality -> pet-sts file prefix


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)


def _raw(shared_data, case: str, prefix: str) -> np.ndarray:
    from medfoundry.io import read_image

    return read_image(shared_data / "pet-sts" / case / f"{prefix}_image.nii.gz").array.astype(np.float32)


def test_pet_ct_mr_samples_and_volumes_are_windowed_for_their_modality(shared_data):
    pet_sts = shared_data / "pet-sts"
    for modality, prefix in SCANS.items():
        glob = f"*/{prefix}_image.nii.gz"
        samples = load_samples(pet_sts, image_glob=glob, cases=["STS_002"], every=4, progress=False)
        (vol,) = load_volumes(pet_sts, image_glob=glob, cases=["STS_002"])
        assert {s.modality for s in samples} == {modality} and vol.modality == modality
        raw = _raw(shared_data, "STS_002", prefix)
        if modality == "CT":  # soft-tissue window, HU -160..240
            expected = np.clip((raw + 160.0) / 400.0, 0, 1)
        elif modality == "PET":  # SUV 0..10
            expected = np.clip(raw / 10.0, 0, 1)
        else:  # percentiles 0.5 / 99.5 of the non-zero voxels
            low, high = np.percentile(raw[raw != 0], [0.5, 99.5])
            expected = np.clip((raw - low) / (high - low), 0, 1)
        np.testing.assert_allclose(vol.volume, expected, atol=1e-5)
        for s in samples:  # training slices are the slices the 3D evaluation segments
            np.testing.assert_array_equal(s.image, vol.volume[s.slice_index])


def test_prewindowed_8bit_ct_is_scaled_not_windowed_as_hu(shared_data):
    path = sorted((shared_data / "ct-lesion-npz").glob("*.npz"))[0]
    assert modality_from_name(path) == "CT"
    vol = read_volume(path, path, "lesion")
    case = read_npz_case(path)
    assert vol.modality == "CT" and case.imgs.dtype == np.uint8
    np.testing.assert_allclose(vol.volume, case.imgs / 255.0, atol=1e-6)  # MedSAM's convention, full contrast
    assert vol.volume.min() == 0.0 and vol.volume.max() == 1.0
    np.testing.assert_array_equal(vol.labels > 0, case.gts > 0)
    # an explicit window still applies (the user says the values are HU)
    from medfoundry.io import read_image

    raw = read_image(path, modality="CT")
    windowed = normalize_intensity(raw, IntensityWindow(level=128, width=256))
    np.testing.assert_allclose(windowed, case.imgs / 256.0, atol=1e-6)
    # 16-bit CT in HU keeps its window
    hu = MedicalImage(np.array([[-160, 40, 240]], dtype=np.int16), spacing=(1.0, 1.0), modality="CT")
    assert normalize_intensity(hu).tolist() == [[0, 0.5, 1]]


def test_flair_and_unnamed_scans_get_their_modality(shared_data):
    brats = shared_data / "mr-brats"
    assert modality_from_name(brats / "BraTS2021_01646_flair.nii.gz") == "MR"
    vol = read_volume(brats / "BraTS2021_01646_flair.nii.gz", brats / "BraTS2021_01646_label_edema.nii.gz", "brats")
    assert vol.modality == "MR" and vol.labels.any()
    tumour = shared_data / "ct-mr-tumour"
    assert modality_from_name(tumour / "lung1_image.nrrd") == "OTHER"  # the name does not say: pass the modality
    lung = read_volume(tumour / "lung1_image.nrrd", tumour / "lung1_label.nrrd", "lung1", modality="CT")
    raw = read_volume(tumour / "lung1_image.nrrd", tumour / "lung1_label.nrrd", "lung1")
    assert lung.modality == "CT" and raw.modality == "OTHER"
    air = lung.volume[lung.volume.shape[0] // 2, :20, :20]  # outside the body: -1000 HU, black in any CT window
    assert np.all(air == 0.0) and not np.allclose(lung.volume, raw.volume)


def test_probe_slices_skip_blank_slices_and_spread_out():
    volume = np.zeros((30, 8, 8), dtype=np.float32)
    volume[5:25, 2, 3] = 1.0
    assert probe_slices(volume, 100) == list(range(5, 25))
    picked = probe_slices(volume, 5)
    assert picked[0] == 5 and picked[-1] == 24 and len(set(picked)) == 5


def test_head_learns_modality_and_picks_it_on_unseen_scans(shared_data, tmp_path):
    """A class-prompt model (real LiteMedSAM encoder) whose head is fitted as ``finetune`` fits it (alone, on the
    pooled embeddings of a class-balanced subset, before the first step) on one patient's PET (several slices), CT
    and MR (one slice each) picks the modality of another patient's three scans (fp32 ONNX Runtime embeddings)."""
    pet_sts = shared_data / "pet-sts"
    train = []
    for prefix, every in zip(SCANS.values(), (6, 100, 100), strict=True):
        train += load_samples(pet_sts, image_glob=f"*/{prefix}_image.nii.gz", cases=["STS_002"], every=every,
                              progress=False)  # fmt: skip
    base = build_lite_medsam()
    fingerprint = base_fingerprint(base)
    model = build_adapter(base, "classprompt")
    targets = modality_targets(model, train)  # what finetune trains the head on
    assert [model.modalities[int(t)] for t in targets] == [s.modality for s in train]
    counts = Counter(s.modality for s in train)
    assert set(counts) == {"PET", "CT", "MR"} and counts["PET"] >= 3 * counts["CT"], counts  # imbalanced
    encoder = OnnxEncoder(model.image_encoder)
    cache = MemoryEmbeddingCache(model, encoder=encoder)
    fitted = fit_modality_head(model, train, targets, cache, per_class=2)
    assert fitted["per_class"] == {m: min(2, counts[m]) for m in ("CT", "MR", "PET")}
    assert fitted["balanced_accuracy"] == 1.0
    pooled = encoder(model_images(train, [0] * len(train))).mean(dim=(2, 3))
    path = save_adapter(model, tmp_path / "head.pt", base_fingerprint=fingerprint)
    trained = load_adapted_model(path, base_model=build_lite_medsam())
    assert trained.predict_modality(pooled) == [s.modality for s in train]
    # an unseen patient's three scans, probed on two spread-out slices each (with tumour or not)
    unseen = [v for prefix in SCANS.values() for v in load_volumes(pet_sts, image_glob=f"*/{prefix}_image.nii.gz",
                                                                     cases=["STS_003"])]  # fmt: skip
    probes = probe_volumes(trained, unseen, encoder=encoder, limit=2)  # the same frozen encoder
    assert [p.modality for p in probes] == ["PET", "CT", "MR"] and all(p.pooled.shape == (2, 256) for p in probes)
    for row in head_report(trained, probes):
        assert row["picked"] == row["modality"] and row["correct"], row
        assert sum(row["votes"].values()) == row["slices"] == 2
        assert row["slice_accuracy"] == row["votes"][row["modality"]] / 2 >= 0.5
    # full and pooled embeddings give the same picks
    emb = torch.randn(2, 256, 64, 64)
    assert trained.predict_modality(emb) == trained.predict_modality(emb.mean(dim=(2, 3)))
