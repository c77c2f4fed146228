"""Intensity windows and the resize/pad transform with its inverse."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medfoundry.errors import InputError
from medfoundry.io import MedicalImage
from medfoundry.preprocessing import IntensityWindow, ResizeLongestSide, normalize_intensity


def _img(array, modality):
    return MedicalImage(np.asarray(array, dtype=np.float32), spacing=(1.0,) * np.ndim(array), modality=modality)


def test_ct_soft_tissue_window_maps_level_and_edges():
    out = normalize_intensity(_img([[-1000, -160, 40, 240, 3000]], "CT"))
    np.testing.assert_allclose(out, [[0, 0, 0.5, 1, 1]], atol=1e-6)


def test_ct_level_width_and_named_preset():
    out = normalize_intensity(_img([[-1350, -600, 150]], "CT"), IntensityWindow(ct_window="lung"))
    np.testing.assert_allclose(out, [[0, 0.5, 1]], atol=1e-6)
    out = normalize_intensity(_img([[0, 50, 100]], "CT"), IntensityWindow(level=50, width=100))
    np.testing.assert_allclose(out, [[0, 0.5, 1]], atol=1e-6)
    with pytest.raises(InputError, match="unknown CT window"):
        normalize_intensity(_img([[0]], "CT"), IntensityWindow(ct_window="nope"))
    with pytest.raises(InputError, match="`level` and `width`"):
        normalize_intensity(_img([[0]], "CT"), IntensityWindow(level=3))


def test_mr_percentiles_of_nonzero_voxels():
    rng = np.random.default_rng(0)
    arr = np.concatenate([np.zeros(1000), rng.uniform(100, 200, 10000)]).reshape(10, 10, 110)
    out = normalize_intensity(_img(arr, "MR"))
    low, high = np.percentile(arr[arr != 0], [0.5, 99.5])
    expected = np.clip((arr - low) / (high - low), 0, 1)
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_pet_suv_range_and_bq_ml_fallback():
    out = normalize_intensity(_img([[0, 5, 12]], "PET"))
    np.testing.assert_allclose(out, [[0, 0.5, 1]], atol=1e-6)
    out = normalize_intensity(_img([[0, 2, 4]], "PET"), IntensityWindow(suv_range=(0, 4)))
    np.testing.assert_allclose(out, [[0, 0.5, 1]], atol=1e-6)
    with pytest.warns(UserWarning, match="not SUV"):
        out = normalize_intensity(_img(np.linspace(0, 50000, 100).reshape(10, 10), "PET"))
    assert 0 < out.mean() < 1


def test_nan_voxels_are_refused():
    with pytest.raises(InputError, match="NaN"):
        normalize_intensity(_img([[0, np.nan]], "CT"))


def test_resize_pad_scales_boxes_and_inverts_exactly():
    t = ResizeLongestSide((100, 200))
    assert t.resized_size == (128, 256)
    np.testing.assert_allclose(t.apply_boxes([[10, 20, 110, 60]]), [[12.8, 25.6, 141.08, 77.08]], rtol=1e-6)
    # a one-pixel box in an upsampled image covers that pixel's whole footprint in model space
    big = ResizeLongestSide((32, 32))
    np.testing.assert_allclose(big.apply_boxes([[4, 4, 4, 4]]), [[32, 32, 39, 39]])
    image = np.zeros((100, 200), np.float32)
    image[30:70, 50:150] = 1
    model_in = t.apply_images(torch.from_numpy(image)[None, None])
    assert model_in.shape == (1, 3, 256, 256)
    assert model_in[..., 128:, :].abs().max() == 0  # padding is zero
    assert model_in[..., :128, :].max() == 1 and model_in[..., :128, :].min() == 0  # min-max normalised
    logits = (model_in[:, :1] - 0.5) * 20
    back = t.logits_to_original(logits)[0, 0].numpy() > 0
    assert back.shape == image.shape
    dice = 2 * (back & (image > 0)).sum() / (back.sum() + (image > 0).sum())
    assert dice > 0.98


def test_label_boxes_match_an_independent_reference():
    from medfoundry.preprocessing.boxes import label_boxes, mask_box

    rng = np.random.default_rng(3)
    labels = np.zeros((7, 20, 30), dtype=np.uint8)
    labels[1:3, 4:9, 10:12] = 2
    labels[5, 15, 0:30] = 5
    labels[rng.random(labels.shape) < 0.002] = 0
    expected = []
    for value in (2, 5):  # per label: min / max of its voxel coordinates, x first
        zz, yy, xx = np.where(labels == value)
        expected.append([xx.min(), yy.min(), zz.min(), xx.max(), yy.max(), zz.max()])
    np.testing.assert_array_equal(label_boxes(labels), np.array(expected, dtype=np.float32))
    np.testing.assert_array_equal(label_boxes(labels[1] > 0), [[10, 4, 11, 8]])
    assert label_boxes(np.zeros((4, 4), np.int32)).shape == (0, 4)
    assert mask_box(np.zeros((3, 3), bool)) is None
    np.testing.assert_array_equal(mask_box(labels[5] == 5), [0, 15, 29, 15])


@pytest.mark.parametrize("shape", [(10, 15, 20), (33, 47, 61)])
def test_resample_volume_matches_simpleitk_over_the_same_field_of_view(shape):
    import SimpleITK as sitk

    from medfoundry.preprocessing.resample import resample_volume

    vol = np.random.default_rng(0).random((20, 30, 40)).astype(np.float32)
    src = sitk.GetImageFromArray(vol)  # unit spacing, origin 0
    scale = [n_in / n_out for n_in, n_out in zip(vol.shape[::-1], shape[::-1], strict=True)]
    origin = [(s - 1) / 2 for s in scale]  # outer voxel edges kept
    ref = sitk.GetArrayFromImage(
        sitk.Resample(src, list(shape[::-1]), sitk.Transform(), sitk.sitkLinear, origin, scale, src.GetDirection())
    )
    out = resample_volume(vol, shape)
    assert out.dtype == np.float32 and out.shape == shape
    np.testing.assert_allclose(out, ref, atol=1e-5)
    labels = (vol > 0.7).astype(np.uint8)
    half = resample_volume(labels, (10, 15, 20), is_label=True)
    assert half.dtype == np.uint8 and set(np.unique(half)) <= {0, 1}
