"""The shipped lesion classifier: loads safely, matches the features, scores deterministically; bad files refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medfoundry.errors import InputError
from medfoundry.inference.lesions.anatomy_features import ANATOMY
from medfoundry.inference.lesions.candidates import find_candidates
from medfoundry.inference.lesions.features import EMBED_DIM, HANDCRAFTED, handcrafted_features
from medfoundry.modeling.lesion_classifier import DEFAULT_CLASSIFIER, load_lesion_classifier


def test_shipped_classifier_loads_and_matches_the_features():
    clf = load_lesion_classifier()
    assert DEFAULT_CLASSIFIER.suffix == ".json" and DEFAULT_CLASSIFIER.stat().st_size < 200_000
    assert clf.feature_names[: len(HANDCRAFTED)] == list(HANDCRAFTED)
    assert len(clf.feature_names) == len(HANDCRAFTED) + len(ANATOMY) + EMBED_DIM  # feature set v3
    assert clf.feature_names[len(HANDCRAFTED) : len(HANDCRAFTED) + len(ANATOMY)] == list(ANATOMY)
    info = clf.info
    assert info["n_positive"] > 0 and info["n_negative"] > 0 and 0.5 <= info["cv_auc"] <= 1.0


def test_scores_are_deterministic_probabilities():
    clf = load_lesion_classifier()
    x = np.random.default_rng(1).normal(size=(7, len(clf.feature_names))) * clf.scale + clf.mean
    a, b = clf.score(x), clf.score(x.copy())
    assert np.array_equal(a, b) and a.shape == (7,)
    assert ((a >= 0) & (a <= 1)).all()
    # the score is monotone in the linear term: moving along +coef raises it
    assert (clf.score(x + clf.coef * clf.scale) > a).all()


def test_save_load_round_trip(tmp_path):
    clf = load_lesion_classifier()
    path = clf.save(tmp_path / "copy.json")
    again = load_lesion_classifier(path)
    x = clf.mean[None] + clf.scale[None]
    assert np.allclose(again.score(x), clf.score(x))


@pytest.mark.parametrize(
    "content",
    ["not json", json.dumps({"format": "other"}), None],
)
def test_bad_classifier_files_are_refused(tmp_path, content):
    path = tmp_path / "bad.json"
    if content is None:  # right format tag, wrong shapes
        data = load_lesion_classifier().to_dict()
        data["coef"] = data["coef"][:-1]
        content = json.dumps(data)
    path.write_text(content)
    with pytest.raises(InputError, match="bad.json"):
        load_lesion_classifier(path)


def test_handcrafted_features_of_a_real_crop_are_finite(shared_data):
    from medfoundry.io import read_image

    image = read_image(shared_data / "pet-sts" / "STS_025" / "PET_image.nii.gz")
    cands = find_candidates(image.array, image.spacing_zyx, 3.0)
    assert cands
    feats = np.array([handcrafted_features(c, image.array, image.spacing_zyx, 3.0) for c in cands])
    assert feats.shape == (len(cands), len(HANDCRAFTED)) and np.isfinite(feats).all()
    # peak_over_threshold is SUVmax / threshold; log_volume_ml is log of the volume
    assert feats[:, HANDCRAFTED.index("peak_over_threshold")] == pytest.approx([c.suv_max / 3.0 for c in cands])
    assert np.exp(feats[:, HANDCRAFTED.index("log_volume_ml")]) == pytest.approx([c.volume_ml for c in cands])


def test_inserted_training_scans_are_seeded_and_label_only_inserted_lesions(shared_data):
    """The classifier's inserted-lesion positives: lesions of a training crop inserted into whole-body STS_001,
    the label exactly the inserted voxels (never the scan's own tumour), the same seed giving the same scan."""
    from medfoundry.data.insertion import extract_lesions
    from medfoundry.io import read_image, read_mask
    from medfoundry.preprocessing.pet_suv import to_suv
    from medfoundry.training.lesion_classifier import inserted_scans

    wb = shared_data / "pet-wholebody" / "STS_001"
    background = to_suv(read_image(wb / "dicom" / "image"))
    own = read_mask(wb / "nifti" / "STS_001_FDG_PET_mask_GTV_Mass.nii.gz", reference=background).array > 0
    folder = shared_data / "pet-sts" / "STS_002"
    crop = read_image(folder / "PET_image.nii.gz")
    templates = extract_lesions(crop, read_mask(folder / "PET_mask.nii.gz", reference=crop))
    first = inserted_scans(background, own, templates, 2, seed=7)
    again = inserted_scans(background, own, templates, 1, seed=7)
    assert [name for name, _, _ in first] == ["inserted-7", "inserted-8"]
    (_, image, inserted), (_, image2, _) = first[0], again[0]
    assert np.array_equal(image.array, image2.array) and not np.array_equal(image.array, first[1][1].array)
    from medfoundry.preprocessing.anatomy.morphology import dilate_mm

    changed = np.abs(image.array - background.array) > 1e-3
    # blurred to the background's resolution (7 mm FWHM): the uptake spills past the label by about a FWHM, no further
    near = dilate_mm(inserted, background.spacing_zyx, 2 * 7.0)
    assert inserted.any() and not (changed & ~near).any() and (changed & ~inserted).any()
    assert not (inserted & own).any()
    assert image.spacing == background.spacing and image.origin == background.origin


def test_embedding_window_has_one_physical_size_on_any_grid(shared_data, real_model):
    """The embedding window covers WINDOW_MM whatever the voxel size: the same crop on a grid of half the
    in-plane spacing (another scanner's reconstruction) gives nearly the same embedding feature."""
    from medfoundry.inference.lesions.features import WINDOW_MM, embedding_features, window_voxels
    from medfoundry.inference.predictor import LiteMedSAMPredictor
    from medfoundry.io import read_image
    from medfoundry.preprocessing.resample import resample_volume

    assert window_voxels((3.27, 4.6875, 4.6875)) == (24, 24)
    assert window_voxels((3.0, 2.0, 2.0)) == (56, 56) and window_voxels((2.0, 50.0, 1.0)) == (8, 112)
    image = read_image(shared_data / "pet-sts" / "STS_009" / "PET_image.nii.gz")  # 44 x 45 voxels of 5.47 mm
    suv, spacing = image.array.astype(np.float32), image.spacing_zyx
    fine = resample_volume(suv, (suv.shape[0], suv.shape[1] * 2, suv.shape[2] * 2))
    fine_spacing = (spacing[0], spacing[1] / 2, spacing[2] / 2)
    assert min(suv.shape[1:]) * spacing[1] > WINDOW_MM  # the window fits the crop on both grids
    predictor = LiteMedSAMPredictor(model=real_model, backend="onnx")
    coarse_c = max(find_candidates(suv, spacing, 3.0), key=lambda c: c.volume_ml)
    fine_c = max(find_candidates(fine, fine_spacing, 3.0), key=lambda c: c.volume_ml)
    a = embedding_features([coarse_c], suv, predictor, spacing)[0]
    b = embedding_features([fine_c], fine, predictor, fine_spacing)[0]
    cosine = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    # a fixed 24-voxel window on the fine grid would see a quarter of the field of view
    c = embedding_features([fine_c], fine, predictor, (spacing[0], spacing[1], spacing[2]))[0]
    cosine_fixed_voxels = float(a @ c / (np.linalg.norm(a) * np.linalg.norm(c)))
    assert cosine > 0.9 and cosine > cosine_fixed_voxels + 0.05  # measured: 0.94 vs 0.84
