"""DICOM SEG (highdicom): write a label map as a segmentation of its source series, read one back as labels.

Writing: one binary segment per label value 1..N (N the largest label), segment number = label value, in
label order. A label value missing from the map still gets its segment (with no frames), so segment
numbers always equal label values; frames with no foreground are omitted, as DICOM SEG writers usually do.
An all-zero label map is refused (a SEG needs at least one segment).

Reading: a label map (uint16, segment number as value) on the reference grid when one is given (an image or
the source series folder), else on the grid spanned by the SEG's own frames (full rows and columns, the
slices from the first to the last stored plane). Where binary segments overlap, the higher segment number wins.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medfoundry.errors import InputError
from medfoundry.io.atomic import atomic_path, check_writable
from medfoundry.io.checks import check_same_grid, to_labels
from medfoundry.io.dicom import list_dicom_series, read_dicom_object, read_dicom_series
from medfoundry.io.formats import is_dicom_file, read_image_file
from medfoundry.io.image import MedicalImage

SEG_SOP_CLASS_UID = "1.2.840.10008.5.1.4.1.1.66.4"
# How far (in voxels) a frame may sit from a grid position: in-plane only rounding; along the slice normal
# scanners jitter positions around the mean step that read_dicom_series uses (it accepts up to 0.2 of a step).
_INPLANE_TOL = 0.05
_SLICE_TOL = 0.25


def _direction_matrix(image: MedicalImage) -> np.ndarray:
    """3x3 matrix whose columns are the x, y, z axes in patient space."""
    return np.asarray(image.direction, dtype=np.float64).reshape(3, 3)


def _pick_series(folder: Path, series_uid: str | None):
    """The series of ``folder`` (its only one, or ``series_uid`` when the folder holds several)."""
    found = list_dicom_series(folder)
    if not found:
        raise InputError(folder, "no DICOM image files in this folder")
    if len(found) == 1:
        return next(iter(found.values()))
    if series_uid in found:
        return found[series_uid]
    listing = "; ".join(str(s) for s in found.values())
    raise InputError(folder, f"{len(found)} DICOM series in this folder and none is the labels' series: {listing}")


def write_dicom_seg(
    labels: MedicalImage,
    source_series: str | Path,
    out: str | Path,
    *,
    segment_names: Sequence[str] | None = None,
    overwrite: bool = False,
    algorithm_name: str = "medfoundry",
    algorithm_version: str | None = None,
    progress: bool = True,
) -> Path:
    """Write ``labels`` (on the grid of the DICOM series in ``source_series``) as a binary DICOM SEG at ``out``.

    Segment k is label value k (1..max label, "Lesion k" unless ``segment_names`` gives N names), category
    SCT "Morphologically Abnormal Structure", type SCT "Lesion", algorithm type AUTOMATIC. Label slices are
    matched to source instances by position along the slice normal (as ``read_dicom_series`` orders them),
    not by file order. Written atomically; an existing ``out`` is refused unless ``overwrite``.
    """
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    from medfoundry import __version__

    out = check_writable(out, overwrite)
    source = Path(source_series)
    if not source.is_dir():
        raise InputError(source, "not a folder: give the folder of the DICOM series the labels were computed on")
    where = labels.path or "label map"
    if labels.spatial_ndim != 3:
        raise InputError(where, f"a DICOM SEG needs a 3D label map, got shape {labels.array.shape}")
    array = to_labels(labels.array, where)
    n_segments = int(array.max())
    if n_segments == 0:
        raise InputError(where, "all labels are zero: a DICOM SEG needs at least one segment")
    if n_segments > 65535:
        raise InputError(where, f"{n_segments} labels: a DICOM SEG holds at most 65535 segments")
    names = [f"Lesion {k}" for k in range(1, n_segments + 1)] if segment_names is None else list(segment_names)
    if len(names) != n_segments:
        raise InputError(None, f"segment_names has {len(names)} names but the label map has labels 1..{n_segments}")

    series = _pick_series(source, labels.meta.get("series_uid"))
    reference = read_dicom_series(source, series_uid=series.uid, suv=False, progress=progress)
    check_same_grid(labels, reference, where)
    datasets = []
    for path in series.files:
        try:
            datasets.append(pydicom.dcmread(path, stop_before_pixels=True))
        except Exception as exc:  # read_dicom_series read them already; a file may change underneath
            raise InputError(path, f"unreadable DICOM file ({type(exc).__name__}: {exc})") from exc
    normal = _direction_matrix(reference)[:, 2]
    datasets.sort(key=lambda ds: float(np.dot(np.asarray(ds.ImagePositionPatient, dtype=float), normal)))

    version = algorithm_version or __version__
    algorithm = hd.AlgorithmIdentificationSequence(
        name=algorithm_name, family=codes.cid7162.ArtificialIntelligence, version=version
    )
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=k,
            segment_label=name,
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Lesion,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            tracking_uid=hd.UID(),
            tracking_id=name,
        )
        for k, name in enumerate(names, start=1)
    ]
    pixel_array = array.astype(np.uint16 if n_segments > 255 else np.uint8, copy=False)
    try:
        with warnings.catch_warnings():
            # The source's PatientName is copied as is; highdicom's advice on its form is not the user's concern.
            warnings.filterwarnings("ignore", message=".*person name.*", category=UserWarning)
            seg = hd.seg.Segmentation(
                source_images=datasets,
                pixel_array=pixel_array,
                segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
                segment_descriptions=descriptions,
                series_instance_uid=hd.UID(),
                series_number=int(datasets[0].get("SeriesNumber", 0) or 0) + 1000,
                sop_instance_uid=hd.UID(),
                instance_number=1,
                manufacturer="medfoundry",
                manufacturer_model_name=algorithm_name,
                software_versions=version,
                device_serial_number="0",
                series_description=f"{algorithm_name} segmentation"[:64],
            )
    except (ValueError, TypeError, AttributeError) as exc:
        raise InputError(source, f"cannot build a DICOM SEG on this series ({type(exc).__name__}: {exc})") from exc
    # The slice step, so a reader can rebuild the grid from the stored (non-empty) frames alone.
    measures = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    measures.SpacingBetweenSlices = float(f"{reference.spacing[2]:.10g}")
    with atomic_path(out, overwrite) as tmp:
        seg.save_as(tmp)
    return out


# ------------------------------------------------------------------------------------------------ reading


def is_dicom_seg(path: str | Path) -> bool:
    """True when ``path`` is a DICOM file (:func:`~medfoundry.io.formats.is_dicom_file`: by suffix, or by
    preamble when no other reader's suffix claims it) with Modality SEG (or the SEG storage SOP class)."""
    import pydicom

    path = Path(path)
    if not path.is_file() or not is_dicom_file(path):
        return False
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Modality", "SOPClassUID"])
    except Exception:
        return False
    return str(ds.get("Modality", "")).upper() == "SEG" or str(ds.get("SOPClassUID", "")) == SEG_SOP_CLASS_UID


def _frame_item(ds, index: int, group: str, path: Path):
    """The first item of functional group ``group`` for frame ``index`` (per-frame, else shared)."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and index < len(per_frame) and group in per_frame[index]:
        return per_frame[index][group][0]
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared is not None and len(shared) and group in shared[0]:
        return shared[0][group][0]
    raise InputError(path, f"frame {index + 1} has no {group}: cannot place it in space")


def _frames(ds, path: Path) -> tuple[np.ndarray, list[int]]:
    """Per-frame binary masks (or label values for LABELMAP) and their segment numbers (0 for LABELMAP)."""
    seg_type = str(ds.get("SegmentationType", "BINARY")).upper()
    try:
        pixels = np.asarray(ds.pixel_array)
    except Exception as exc:
        raise InputError(path, f"cannot decode the SEG pixel data ({type(exc).__name__}: {exc})") from exc
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    pixels = pixels.reshape(n_frames, int(ds.Rows), int(ds.Columns))
    if seg_type == "LABELMAP":
        return pixels.astype(np.uint16), [0] * n_frames
    if seg_type == "FRACTIONAL":
        maximum = float(ds.get("MaximumFractionalValue", 255) or 255)
        pixels = pixels.astype(np.float32) / maximum >= 0.5
    elif seg_type != "BINARY":
        raise InputError(path, f"unsupported SegmentationType {seg_type}")
    numbers = []
    for i in range(n_frames):
        item = _frame_item(ds, i, "SegmentIdentificationSequence", path)
        numbers.append(int(item.ReferencedSegmentNumber))
    return (pixels > 0).astype(np.uint8), numbers


def _frame_geometry(ds, n_frames: int, path: Path) -> tuple[np.ndarray, np.ndarray, tuple[float, float], list]:
    """Row and column directions, (x, y) pixel spacing, and each frame's top-left position."""
    iop = np.asarray([float(v) for v in _frame_item(ds, 0, "PlaneOrientationSequence", path).ImageOrientationPatient])
    measures = _frame_item(ds, 0, "PixelMeasuresSequence", path)
    row_spacing, col_spacing = (float(v) for v in measures.PixelSpacing)
    positions = [
        np.asarray([float(v) for v in _frame_item(ds, i, "PlanePositionSequence", path).ImagePositionPatient])
        for i in range(n_frames)
    ]
    return iop[:3], iop[3:], (col_spacing, row_spacing), positions


def _own_grid(ds, row, col, spacing_xy, positions, path: Path) -> MedicalImage:
    """The grid spanned by the SEG's frames: full rows/columns, slices from the first to the last plane."""
    normal = np.cross(row, col)
    t = np.asarray([float(np.dot(p, normal)) for p in positions])
    u = np.asarray([float(np.dot(p, row)) for p in positions])
    v = np.asarray([float(np.dot(p, col)) for p in positions])
    measures = _frame_item(ds, 0, "PixelMeasuresSequence", path)
    dz = float(measures.get("SpacingBetweenSlices", 0) or 0)
    if dz <= 0:  # not stored: the smallest gap between stored planes (a guess when frames skip planes)
        gaps = np.diff(np.unique(np.round(t, 3)))
        dz = float(gaps.min()) if len(gaps) else float(measures.get("SliceThickness", 1.0) or 1.0)
    sx, sy = spacing_xy
    nz = int(round((t.max() - t.min()) / dz)) + 1
    ny = int(ds.Rows) + int(round((v.max() - v.min()) / sy))
    nx = int(ds.Columns) + int(round((u.max() - u.min()) / sx))
    origin = row * u.min() + col * v.min() + normal * t.min()
    return MedicalImage(
        np.zeros((nz, ny, nx), dtype=np.uint8),
        (sx, sy, dz),
        tuple(origin),
        tuple(np.stack([row, col, normal], axis=1).ravel()),
        "OTHER",
        str(path),
    )


def _reference_image(reference: MedicalImage | str | Path, ds) -> MedicalImage:
    """The reference grid: an image as given, or the series in a folder (the one the SEG references)."""
    if isinstance(reference, MedicalImage):
        return reference
    reference = Path(reference)
    if reference.is_dir():
        uids = [str(s.SeriesInstanceUID) for s in ds.get("ReferencedSeriesSequence", []) if "SeriesInstanceUID" in s]
        series = _pick_series(reference, uids[0] if uids else None)
        return read_dicom_series(reference, series_uid=series.uid, suv=False)
    if is_dicom_seg(reference):  # another SEG: the grid its frames span
        return read_dicom_seg(reference)
    return read_image_file(reference, suv=False)


def read_dicom_seg(path: str | Path, reference: MedicalImage | str | Path | None = None) -> MedicalImage:
    """Read a DICOM SEG as a uint16 label map (segment number as value) with spacing / origin / direction.

    With ``reference`` (an image, or the source series folder / an image file) the labels are placed on its
    grid; every frame must fall on one of its slices with the same row/column directions and pixel spacing.
    Without, the grid is the one spanned by the SEG's frames (see the module docstring).
    """
    path = Path(path)
    ds = read_dicom_object(path, "SEG", "SegmentSequence", "a DICOM SEG")
    frames, numbers = _frames(ds, path)
    row, col, spacing_xy, positions = _frame_geometry(ds, len(frames), path)
    if reference is None:
        grid = _own_grid(ds, row, col, spacing_xy, positions, path)
    else:
        grid = _reference_image(reference, ds)
        ref_for = grid.meta.get("frame_of_reference_uid")
        seg_for = str(ds.get("FrameOfReferenceUID", ""))
        if ref_for and seg_for and ref_for != seg_for:
            raise InputError(path, f"the SEG is in frame of reference {seg_for}, the reference image in {ref_for}")
    if grid.spatial_ndim != 3:
        raise InputError(path, f"the reference for a DICOM SEG must be a 3D volume ({grid.path})")
    axes = _direction_matrix(grid)
    if not (np.allclose(axes[:, 0], row, atol=1e-3) and np.allclose(axes[:, 1], col, atol=1e-3)):
        raise InputError(path, f"the SEG frames' orientation differs from the reference grid ({grid.path})")
    if not np.allclose(spacing_xy, grid.spacing[:2], atol=1e-3):
        raise InputError(
            path, f"the SEG pixel spacing {spacing_xy} differs from the reference {grid.spacing[:2]} ({grid.path})"
        )
    labels = np.zeros(grid.spatial_shape, dtype=np.uint16)
    origin = np.asarray(grid.origin)
    spacing = np.asarray(grid.spacing)
    nz, ny, nx = grid.spatial_shape
    order = np.argsort(numbers, kind="stable")  # higher segment numbers are painted last and win overlaps
    for i in order:
        frame = frames[i]
        if not frame.any():
            continue
        index = axes.T @ (positions[i] - origin) / spacing  # (x, y, z) voxel index of the frame's top-left pixel
        rounded = np.round(index)
        off = np.abs(index - rounded)
        if off[0] > _INPLANE_TOL or off[1] > _INPLANE_TOL or off[2] > _SLICE_TOL:
            raise InputError(path, f"frame {i + 1} does not lie on a slice of the reference grid ({grid.path})")
        x0, y0, z = (int(v) for v in rounded)
        ys, xs = np.nonzero(frame)
        inside = 0 <= z < nz and 0 <= y0 + ys.min() and y0 + ys.max() < ny
        if not (inside and 0 <= x0 + xs.min() and x0 + xs.max() < nx):
            raise InputError(path, f"frame {i + 1} has segment voxels outside the reference grid ({grid.path})")
        value = numbers[i]
        if value:
            labels[z, y0 + ys, x0 + xs] = value
        else:  # LABELMAP frames hold the segment numbers themselves
            labels[z, y0 + ys, x0 + xs] = frame[ys, xs]
    return MedicalImage(
        labels,
        grid.spacing,
        grid.origin,
        grid.direction,
        "OTHER",
        str(path),
        meta={
            "dicom_modality": "SEG",
            "frame_of_reference_uid": str(ds.get("FrameOfReferenceUID", "")),
            "segment_labels": {int(s.SegmentNumber): str(s.get("SegmentLabel", "")) for s in ds.SegmentSequence},
        },
    )
