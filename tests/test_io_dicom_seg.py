"""DICOM SEG: write a label map on the real whole-body PET series, read it back, validate it with highdicom."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from medfoundry.errors import InputError, OutputExistsError
from medfoundry.io import MedicalImage, read_dicom_seg, read_image, read_mask, write_dicom_seg

SERIES = Path("pet-wholebody") / "STS_001" / "dicom" / "image"
MASK = Path("pet-wholebody") / "STS_001" / "nifti" / "STS_001_FDG_PET_mask_GTV_Mass.nii.gz"


@pytest.fixture(scope="module")
def written(shared_data, tmp_path_factory):
    """The GTV (label 1) plus a box (label 3; label 2 absent) written once as a SEG on the source series."""
    source = shared_data / SERIES
    image = read_image(source, suv=False)
    gtv = read_mask(shared_data / MASK, reference=image)
    labels = gtv.array.astype(np.uint8)
    labels[200:203, 40:50, 60:72] = 3  # far from the GTV: a second, separate structure
    assert labels[200:203, 40:50, 60:72].all() and np.count_nonzero(labels == 1) == np.count_nonzero(gtv.array)
    out = tmp_path_factory.mktemp("seg") / "lesions.dcm"
    assert write_dicom_seg(gtv.with_array(labels), source, out) == out
    return source, image, labels, out


def _same_geometry(a, b) -> None:
    np.testing.assert_allclose(a.spacing, b.spacing, atol=1e-4)
    np.testing.assert_allclose(a.origin, b.origin, atol=1e-3)
    np.testing.assert_allclose(a.direction, b.direction, atol=1e-6)


def test_round_trip_on_the_source_grid(written):
    source, image, labels, out = written
    for reference in (source, image):  # the series folder or the image itself
        back = read_dicom_seg(out, reference=reference)
        assert back.array.dtype == np.uint16
        np.testing.assert_array_equal(back.array, labels)
        _same_geometry(back, image)
    assert back.meta["segment_labels"] == {1: "Lesion 1", 2: "Lesion 2", 3: "Lesion 3"}
    # read_mask places a SEG on the reference grid; read_image recognises it by Modality
    np.testing.assert_array_equal(read_mask(out, reference=image).array, labels)
    assert read_image(out).meta["dicom_modality"] == "SEG"


def test_round_trip_without_reference_spans_the_stored_frames(written):
    _, image, labels, out = written
    back = read_dicom_seg(out)
    planes = np.flatnonzero(labels.any(axis=(1, 2)))
    first, last = int(planes.min()), int(planes.max())
    np.testing.assert_array_equal(back.array, labels[first : last + 1])
    normal = np.asarray(image.direction).reshape(3, 3)[:, 2]
    np.testing.assert_allclose(back.origin, np.asarray(image.origin) + first * image.spacing[2] * normal, atol=1e-3)
    np.testing.assert_allclose(back.spacing, image.spacing, atol=1e-4)
    np.testing.assert_allclose(back.direction, image.direction, atol=1e-6)


def test_highdicom_parses_it_and_frames_reference_the_right_instances(written):
    import highdicom as hd

    source, image, labels, out = written
    seg = hd.seg.segread(out)
    assert seg.SegmentationType == "BINARY" and seg.number_of_segments == 3
    described = seg.get_segment_description(1)
    assert described.segmented_property_type.value == "52988006"  # SCT Lesion
    assert described.segmented_property_category.value == "49755003"  # SCT Morphologically Abnormal Structure
    uid_to_position = {}
    for f in sorted(source.iterdir()):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        uid_to_position[str(ds.SOPInstanceUID)] = np.asarray(ds.ImagePositionPatient, dtype=float)
    assert {uid for _, _, uid in seg.get_source_image_uids()} == set(uid_to_position)
    assert seg.FrameOfReferenceUID == image.meta["frame_of_reference_uid"]
    # each frame: its plane position is that of the source instance it is derived from (matched by position)
    for item in seg.PerFrameFunctionalGroupsSequence:
        uid = str(item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        position = np.asarray(item.PlanePositionSequence[0].ImagePositionPatient, dtype=float)
        np.testing.assert_allclose(position, uid_to_position[uid], atol=1e-3)
    n_frames = sum(int(np.count_nonzero(np.any(labels == k, axis=(1, 2)))) for k in (1, 3))
    assert int(seg.NumberOfFrames) == n_frames  # empty frames (and the empty segment 2) are omitted


def test_existing_output_is_refused_and_kept(written):
    source, image, labels, out = written
    before = out.read_bytes()
    with pytest.raises(OutputExistsError):
        write_dicom_seg(image.with_array(labels), source, out)
    assert out.read_bytes() == before


def test_bad_inputs_raise_input_error(written, tmp_path):
    source, image, labels, out = written
    target = tmp_path / "x.dcm"
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not DICOM")
    with pytest.raises(InputError, match="no DICOM image files") as err:
        write_dicom_seg(image.with_array(labels), empty, target)
    assert str(empty) in str(err.value)
    with pytest.raises(InputError, match="not a folder"):
        write_dicom_seg(image.with_array(labels), tmp_path / "missing", target)
    with pytest.raises(InputError, match="all labels are zero"):
        write_dicom_seg(image.with_array(np.zeros_like(labels)), source, target)
    with pytest.raises(InputError, match="segment_names"):
        write_dicom_seg(image.with_array(labels), source, target, segment_names=["a"])
    with pytest.raises(InputError, match="shape"):
        write_dicom_seg(MedicalImage(labels[195:205], image.spacing, image.origin, image.direction), source, target)
    assert not target.exists()
    half_slice = np.asarray(image.origin) + 0.5 * image.spacing[2] * np.asarray(image.direction).reshape(3, 3)[:, 2]
    shifted = MedicalImage(image.array, image.spacing, tuple(half_slice), image.direction, path="shifted")
    with pytest.raises(InputError, match="does not lie on a slice") as err:
        read_dicom_seg(out, reference=shifted)
    assert str(out) in str(err.value)
    slice_file = sorted(source.iterdir())[0]
    with pytest.raises(InputError, match="not a DICOM SEG"):
        read_dicom_seg(slice_file)
