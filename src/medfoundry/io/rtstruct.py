"""DICOM RTSTRUCT contours rasterised onto a reference image grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medfoundry.errors import InputError
from medfoundry.io.dicom import read_dicom_object
from medfoundry.io.image import MedicalImage


def _load_rtstruct(path: str | Path):
    """The RTSTRUCT dataset at ``path`` (a file, or a folder holding exactly one RTSTRUCT)."""
    import pydicom

    path = Path(path)
    if path.is_dir():
        found = []
        for p in sorted(q for q in path.rglob("*") if q.is_file()):
            try:
                ds = pydicom.dcmread(p, stop_before_pixels=True)
            except Exception:
                continue
            if str(ds.get("Modality", "")).upper() == "RTSTRUCT":
                found.append((p, ds))
        if len(found) != 1:
            what = "no RTSTRUCT file" if not found else f"{len(found)} RTSTRUCT files; give one file"
            raise InputError(path, f"{what} in this folder")
        return found[0]
    return path, read_dicom_object(path, "RTSTRUCT", "StructureSetROISequence", "an RTSTRUCT")


def list_rois(path: str | Path) -> list[str]:
    """The ROI names of an RTSTRUCT, in file order."""
    _, ds = _load_rtstruct(path)
    return [str(roi.ROIName) for roi in ds.StructureSetROISequence]


def read_rtstruct(
    path: str | Path, reference: MedicalImage, roi_names: list[str] | None = None
) -> dict[str, MedicalImage]:
    """Rasterise the RTSTRUCT's ROIs (all, or ``roi_names``) on ``reference``'s grid as uint8 {0,1} masks.

    A voxel is inside when its centre is inside the slice's contours by the even-odd rule, so a contour
    drawn inside another one is a hole.
    """
    path, ds = _load_rtstruct(path)
    if reference.spatial_ndim != 3:
        raise InputError(path, "the reference image for an RTSTRUCT must be a 3D volume")
    ref_for = reference.meta.get("frame_of_reference_uid")
    rt_for = {str(r.FrameOfReferenceUID) for r in ds.get("ReferencedFrameOfReferenceSequence", [])}
    if ref_for and rt_for and ref_for not in rt_for:
        raise InputError(
            path, f"the contours are in frame of reference {sorted(rt_for)}, the reference image in {ref_for}"
        )
    numbers = {int(roi.ROINumber): str(roi.ROIName) for roi in ds.StructureSetROISequence}
    available = list(numbers.values())
    wanted = available if roi_names is None else list(roi_names)
    unknown = [n for n in wanted if n not in available]
    if unknown:
        raise InputError(path, f"no ROI named {', '.join(map(repr, unknown))}; available ROIs: {available}")
    contours = {
        numbers.get(int(c.ReferencedROINumber)): c.get("ContourSequence", []) for c in ds.get("ROIContourSequence", [])
    }
    to_index = _physical_to_index(reference)
    masks = {}
    for name in wanted:
        mask = np.zeros(reference.spatial_shape, dtype=np.uint8)
        for item in contours.get(name, []):
            if str(item.get("ContourGeometricType", "CLOSED_PLANAR")).upper() != "CLOSED_PLANAR":
                continue  # points and open lines enclose nothing
            xyz = np.asarray([float(v) for v in item.ContourData]).reshape(-1, 3)
            _fill_contour(mask, to_index(xyz), path, name)
        masks[name] = reference.with_array(mask)
        masks[name].path = str(path)
    return masks


def _physical_to_index(reference: MedicalImage):
    """A function taking (N, 3) physical points to continuous (x, y, z) voxel indices."""
    direction = np.asarray(reference.direction).reshape(3, 3)
    scale = direction * np.asarray(reference.spacing)[None, :]
    inverse = np.linalg.inv(scale)
    origin = np.asarray(reference.origin)

    def to_index(points: np.ndarray) -> np.ndarray:
        return (points - origin) @ inverse.T

    return to_index


def _fill_contour(mask: np.ndarray, ijk: np.ndarray, path: Path, name: str) -> None:
    """XOR one closed polygon (continuous x, y, z indices) into its slice of ``mask``."""
    if len(ijk) < 3:
        return
    z = ijk[:, 2]
    k = int(np.round(z.mean()))
    if np.abs(z - k).max() > 0.5:
        raise InputError(
            path,
            f"a contour of ROI {name!r} is not in one slice plane of the reference image (oblique contours?)",
        )
    if not 0 <= k < mask.shape[0]:
        return  # a contour beyond the reference volume
    slice_fill = polygon_fill(ijk[:, 0], ijk[:, 1], mask.shape[1:])
    mask[k] ^= slice_fill


def polygon_fill(x: np.ndarray, y: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """uint8 (rows, cols) image with 1 where the pixel centre lies inside the polygon (even-odd rule)."""
    rows, cols = shape
    out = np.zeros(shape, dtype=np.uint8)
    x0, y0 = np.asarray(x, float), np.asarray(y, float)
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    r_lo = max(int(np.ceil(y0.min())), 0)
    r_hi = min(int(np.floor(y0.max())), rows - 1)
    if r_hi < r_lo:
        return out
    r = np.arange(r_lo, r_hi + 1, dtype=float)[:, None]  # (R, 1) row centres
    # Half-open rule so a vertex exactly on a row centre is counted once.
    crosses = ((y0 <= r) & (r < y1)) | ((y1 <= r) & (r < y0))  # (R, E)
    with np.errstate(divide="ignore", invalid="ignore"):
        xc = np.where(crosses, x0 + (r - y0) * (x1 - x0) / (y1 - y0), np.inf)
    xc.sort(axis=1)
    for i, row in enumerate(xc):
        row = row[np.isfinite(row)]
        for a, b in zip(row[0::2], row[1::2], strict=False):
            c0 = max(int(np.ceil(a)), 0)
            c1 = min(int(np.ceil(b)) - 1, cols - 1)  # centres c with a <= c < b
            if c1 >= c0:
                out[r_lo + i, c0 : c1 + 1] ^= 1
    return out
