"""MedSAM npz cases: the shared CT-lesion files, the challenge 2D/3D layouts and the ``segs`` writer."""

from __future__ import annotations

import numpy as np
import pytest

from medfoundry.errors import InputError, OutputExistsError
from medfoundry.io import read_image, read_mask, read_npz_case, write_npz_segs


def test_ct_lesion_spacing_in_array_order(shared_data):
    path = sorted((shared_data / "ct-lesion-npz").glob("*.npz"))[0]
    raw = np.load(path)
    case = read_npz_case(path)
    assert case.imgs.shape == raw["imgs"].shape and case.imgs.dtype == np.uint8
    # the file stores (x, y, z) next to (z, y, x) arrays: the slice gap must land on axis 0
    assert case.spacing == tuple(float(s) for s in raw["spacing"][::-1])
    assert case.spacing[0] > case.spacing[1] == case.spacing[2]
    assert case.boxes is None and case.gts is not None and case.gts.max() >= 1
    img = case.to_image()
    assert img.spacing_zyx == case.spacing and img.spacing == tuple(float(s) for s in raw["spacing"])
    assert img.direction == tuple(float(d) for d in raw["direction"])
    assert np.array_equal(case.gts_image().array, case.gts)
    assert read_image(path).spacing == img.spacing  # read_image takes the image part
    assert np.array_equal(read_mask(path).array, case.gts)  # read_mask takes gts (no segs)


def test_challenge_2d_and_3d_layouts(tmp_path):
    rng = np.random.default_rng(0)
    imgs2 = rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)
    np.savez(tmp_path / "2d.npz", imgs=imgs2, boxes=np.array([[3, 4, 20, 30]]), spacing=np.array([0.5, 0.7]))
    case = read_npz_case(tmp_path / "2d.npz")
    assert case.is_rgb and case.spacing == (0.7, 0.5) and case.boxes.shape == (1, 4)
    img = case.to_image()
    assert img.is_rgb and img.spatial_shape == (32, 40) and img.spacing == (0.5, 0.7)

    imgs3 = rng.integers(0, 256, (5, 16, 16), dtype=np.uint8)
    boxes3 = np.array([[1, 2, 0, 9, 10, 4], [0, 0, 1, 5, 5, 3]])
    np.savez(tmp_path / "3d.npz", imgs=imgs3, boxes=boxes3, spacing=np.array([0.8, 0.8, 3.0]))
    case = read_npz_case(tmp_path / "3d.npz")
    assert case.spacing == (3.0, 0.8, 0.8) and case.gts is None and np.array_equal(case.boxes, boxes3)

    np.savez(tmp_path / "bad.npz", imgs=imgs3, boxes=np.array([[1, 2, 9, 10]]))
    with pytest.raises(InputError, match=r"\(N, 6\)"):
        read_npz_case(tmp_path / "bad.npz")


def test_npz_rejections(tmp_path):
    np.savez(tmp_path / "nokey.npz", data=np.zeros((4, 4)))
    with pytest.raises(InputError, match="no 'imgs'"):
        read_npz_case(tmp_path / "nokey.npz")
    np.savez(tmp_path / "gts.npz", imgs=np.zeros((4, 4, 4), np.uint8), gts=np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(InputError, match="'gts' has shape"):
        read_npz_case(tmp_path / "gts.npz")
    np.savez(tmp_path / "nan.npz", imgs=np.full((4, 4, 4), np.nan, np.float32))
    with pytest.raises(InputError, match="64 voxels are NaN"):
        read_npz_case(tmp_path / "nan.npz")
    np.savez(tmp_path / "obj.npz", imgs=np.array([{"a": 1}], dtype=object))
    with pytest.raises(InputError, match="obj.npz"):
        read_npz_case(tmp_path / "obj.npz")
    np.savez(tmp_path / "4d.npz", imgs=np.zeros((2, 3, 4, 5), np.uint8))
    with pytest.raises(InputError, match="4D image"):
        read_npz_case(tmp_path / "4d.npz")


def test_write_segs(tmp_path):
    segs = np.zeros((3, 6, 7), np.int64)
    segs[1, 2:4, 2:5] = 300
    out = write_npz_segs(tmp_path / "case.npz", segs)
    with np.load(out) as z:
        assert z.files == ["segs"] and z["segs"].dtype == np.uint16 and np.array_equal(z["segs"], segs)
    before = out.read_bytes()
    with pytest.raises(OutputExistsError):
        write_npz_segs(out, np.zeros_like(segs))
    assert out.read_bytes() == before
    assert np.array_equal(read_mask(out).array, segs)
    with pytest.raises(InputError, match="negative"):
        write_npz_segs(tmp_path / "neg.npz", -segs)
    assert not (tmp_path / "neg.npz").exists()
