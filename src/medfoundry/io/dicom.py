"""DICOM image series: pick one series in a folder, order its slices in space, PET to body-weight SUV."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np

from medfoundry.errors import InputError
from medfoundry.io.checks import check_image_array
from medfoundry.io.image import MedicalImage

DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
# Objects in an export folder that are not image slices of a series.
NON_IMAGE_MODALITIES = {"RTSTRUCT", "RTPLAN", "RTRECORD", "SR", "PR", "KO", "REG", "SEG", "DOC", "PLAN"}
MODALITY_MAP = {"CT": "CT", "MR": "MR", "PT": "PET"}


@dataclass
class DicomSeries:
    """One image series found in a folder: its UID, description, modality and files."""

    uid: str
    description: str
    modality: str
    files: list[Path] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.uid} ({self.modality}, {self.description!r}, {len(self.files)} files)"


def _dcmread(path: Path, headers_only: bool):
    """pydicom.dcmread with errors turned into InputError naming the file."""
    import pydicom

    try:
        return pydicom.dcmread(path, stop_before_pixels=headers_only)
    except pydicom.errors.InvalidDicomError:
        raise
    except Exception as exc:  # pydicom raises many types on damaged files
        raise InputError(path, f"unreadable DICOM file ({type(exc).__name__}: {exc})") from exc


def _candidate_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def list_dicom_series(folder: str | Path) -> dict[str, DicomSeries]:
    """The image series (by SeriesInstanceUID) of the DICOM files under ``folder``."""
    import pydicom

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "no such folder")
    series: dict[str, DicomSeries] = {}
    for path in _candidate_files(folder):
        try:
            ds = _dcmread(path, headers_only=True)
        except pydicom.errors.InvalidDicomError as exc:
            if path.suffix.lower() in DICOM_SUFFIXES:
                raise InputError(path, f"unreadable DICOM file ({exc})") from exc
            continue  # not DICOM (a README, a NIfTI...): ignore it
        modality = str(ds.get("Modality", "")).upper()
        if modality in NON_IMAGE_MODALITIES or "Rows" not in ds or "Columns" not in ds:
            continue
        uid = str(ds.get("SeriesInstanceUID", "")) or "(no SeriesInstanceUID)"
        entry = series.setdefault(uid, DicomSeries(uid, str(ds.get("SeriesDescription", "")), modality or "?", []))
        entry.files.append(path)
    return series


def read_dicom_series(
    folder: str | Path,
    series_uid: str | None = None,
    modality: str | None = None,
    suv: bool = True,
    progress: bool = True,
) -> MedicalImage:
    """Read the image series in ``folder`` as a (z, y, x) volume ordered along the slice normal.

    A folder with several series needs ``series_uid``. PET in Bq/mL is converted to body-weight SUV
    (``suv=False`` keeps Bq/mL); other modalities get RescaleSlope/Intercept applied (CT in HU). ``progress``: a
    bar while the files are read (series of 50 files or more; ``--no-progress`` turns it off).
    """
    folder = Path(folder)
    found = list_dicom_series(folder)
    if not found:
        raise InputError(folder, "no DICOM image files in this folder")
    if series_uid is None:
        if len(found) > 1:
            listing = "; ".join(str(s) for s in found.values())
            raise InputError(folder, f"{len(found)} DICOM series in this folder, pick one with series_uid=: {listing}")
        series = next(iter(found.values()))
    elif series_uid in found:
        series = found[series_uid]
    else:
        listing = "; ".join(str(s) for s in found.values())
        raise InputError(folder, f"no series with SeriesInstanceUID {series_uid}; the folder holds: {listing}")
    return _read_files(series.files, folder, modality, suv, progress)


def read_dicom_file(path: str | Path, modality: str | None = None, suv: bool = True) -> MedicalImage:
    """Read one DICOM file: a single slice as a 2D image, a multi-frame file as a volume."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such file")
    import pydicom

    try:
        _dcmread(path, headers_only=True)
    except pydicom.errors.InvalidDicomError as exc:
        raise InputError(path, f"unreadable DICOM file ({exc})") from exc
    return _read_files([path], path, modality, suv, progress=False)


def _slice_geometry(ds, path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row direction, column direction and position of one slice."""
    for tag in ("ImageOrientationPatient", "ImagePositionPatient"):
        if tag not in ds:
            raise InputError(path, f"missing DICOM tag {tag}: cannot place the slice in space")
    iop = np.asarray([float(v) for v in ds.ImageOrientationPatient])
    ipp = np.asarray([float(v) for v in ds.ImagePositionPatient])
    return iop[:3], iop[3:], ipp


def _pixel_spacing(ds) -> tuple[float, float, bool]:
    """(x, y) pixel spacing in mm and whether it came from the header."""
    for tag in ("PixelSpacing", "ImagerPixelSpacing"):
        if tag in ds and ds.get(tag):
            row_spacing, col_spacing = (float(v) for v in ds.get(tag))
            return col_spacing, row_spacing, True
    return 1.0, 1.0, False


def _pixels(ds, path: Path) -> np.ndarray:
    """Stored pixel values of one slice; SimpleITK decodes what pydicom cannot."""
    try:
        return np.asarray(ds.pixel_array)
    except Exception as exc:
        try:
            import SimpleITK as sitk

            reader = sitk.ImageFileReader()
            reader.SetFileName(str(path))
            reader.SetOutputPixelType(sitk.sitkFloat64)
            arr = sitk.GetArrayFromImage(reader.Execute())  # GDCM applies the rescale itself
        except Exception:
            raise InputError(path, f"cannot decode the DICOM pixel data ({type(exc).__name__}: {exc})") from exc
        slope, intercept = _rescale(ds)
        return (arr.reshape(arr.shape[-2:]) - intercept) / slope


def _rescale(ds) -> tuple[float, float]:
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    return slope, intercept


def _read_files(files: list[Path], where: Path, modality: str | None, suv: bool, progress: bool) -> MedicalImage:
    first = _dcmread(files[0], headers_only=True)
    dicom_modality = str(first.get("Modality", "")).upper()
    meta = {
        "series_uid": str(first.get("SeriesInstanceUID", "")),
        "series_description": str(first.get("SeriesDescription", "")),
        "dicom_modality": dicom_modality,
        "frame_of_reference_uid": str(first.get("FrameOfReferenceUID", "")),
    }
    modality = modality or MODALITY_MAP.get(dicom_modality, "OTHER")
    if len(files) == 1 and int(first.get("NumberOfFrames", 1) or 1) > 1:
        return _read_multiframe(files[0], first, modality, meta, suv)

    datasets = [(path, _dcmread(path, headers_only=False)) for path in _progress(files, "reading DICOM", progress)]
    sx, sy, has_spacing = _pixel_spacing(first)
    if not has_spacing:
        meta["spacing_missing"] = True
    if len(datasets) == 1:
        path, ds = datasets[0]
        array = _pixels(ds, path)
        rgb = int(ds.get("SamplesPerPixel", 1)) > 1
        slope, intercept = _rescale(ds)
        if not rgb:
            array = _apply_rescale([array], [(slope, intercept)])[0]
        img = _finish(array, (sx, sy), None, None, modality, where, meta, rgb=rgb)
        return _maybe_suv(img, [ds], files, suv)

    geometry = [_slice_geometry(ds, path) for path, ds in datasets]
    row, col, _ = geometry[0]
    for (path, ds), (r, c, _) in zip(datasets, geometry, strict=True):
        if not (np.allclose(r, row, atol=1e-4) and np.allclose(c, col, atol=1e-4)):
            raise InputError(path, "slice orientation differs from the rest of the series")
        if (ds.Rows, ds.Columns) != (first.Rows, first.Columns):
            raise InputError(path, f"slice size {ds.Rows}x{ds.Columns} differs from {first.Rows}x{first.Columns}")
        if int(ds.get("SamplesPerPixel", 1)) != 1:
            raise InputError(path, "colour slices in a volume series are not supported")
    normal = np.cross(row, col)
    positions = np.asarray([float(np.dot(ipp, normal)) for _, _, ipp in geometry])
    order = np.argsort(positions, kind="stable")
    positions = positions[order]
    gaps = np.diff(positions)
    if np.any(gaps < 1e-3):
        k = int(np.argmin(gaps))
        raise InputError(
            where,
            f"slices {datasets[order[k]][0].name} and {datasets[order[k + 1]][0].name} share one position: "
            "several acquisitions or time points in one series are not supported",
        )
    # Mean gap; scanners round positions, so allow small jitter but not a missing or doubled slice.
    dz = float((positions[-1] - positions[0]) / (len(positions) - 1))
    jitter = np.abs(positions - (positions[0] + dz * np.arange(len(positions))))
    if jitter.max() > 0.2 * dz or gaps.max() > 1.5 * gaps.min():
        raise InputError(where, f"uneven slice gaps from {gaps.min():.3f} to {gaps.max():.3f} mm (missing slices?)")
    sorted_ds = [datasets[i] for i in order]
    arrays = [_pixels(ds, path) for path, ds in sorted_ds]
    rescales = [_rescale(ds) for _, ds in sorted_ds]
    volume = np.stack(_apply_rescale(arrays, rescales))
    direction = np.stack([row, col, normal], axis=1)  # columns: the x, y, z axes in patient space
    origin = geometry[order[0]][2]
    img = _finish(volume, (sx, sy, dz), origin, direction, modality, where, meta, rgb=False)
    return _maybe_suv(img, [ds for _, ds in sorted_ds], [p for p, _ in sorted_ds], suv)


def _apply_rescale(arrays: list[np.ndarray], rescales: list[tuple[float, float]]) -> list[np.ndarray]:
    """Stored values to real values; integer output when every slope is 1 and every intercept whole."""
    integral = all(s == 1 and float(i).is_integer() for s, i in rescales) and all(
        np.issubdtype(a.dtype, np.integer) for a in arrays
    )
    if integral:
        if all(i == 0 for _, i in rescales) and all(a.dtype == arrays[0].dtype for a in arrays):
            return arrays  # stored values are the real values: keep their dtype
        lo = min(int(a.min()) + int(i) for a, (_, i) in zip(arrays, rescales, strict=True))
        hi = max(int(a.max()) + int(i) for a, (_, i) in zip(arrays, rescales, strict=True))
        dtype = next(
            (t for t in (np.uint8, np.int16, np.uint16, np.int32) if np.iinfo(t).min <= lo and hi <= np.iinfo(t).max),
            np.int64,
        )
        return [(a.astype(np.int64) + int(i)).astype(dtype) for a, (_, i) in zip(arrays, rescales, strict=True)]
    return [(a.astype(np.float64) * s + i).astype(np.float32) for a, (s, i) in zip(arrays, rescales, strict=True)]


def _finish(array, spacing, origin, direction, modality, where, meta, rgb: bool) -> MedicalImage:
    array = check_image_array(array, where, rgb=rgb)
    if rgb:
        meta = {**meta, "rgb": True}
    return MedicalImage(
        array=array,
        spacing=spacing,
        origin=() if origin is None else tuple(origin),
        direction=() if direction is None else tuple(np.asarray(direction).ravel()),
        modality=modality,
        path=str(where),
        meta=meta,
    )


def _read_multiframe(path: Path, first, modality: str, meta: dict, suv: bool) -> MedicalImage:
    import SimpleITK as sitk

    from medfoundry.io.itk import sitk_to_image

    try:
        sitk_image = sitk.ReadImage(str(path), sitk.sitkFloat32)
    except RuntimeError as exc:
        raise InputError(path, f"cannot read the multi-frame DICOM file ({str(exc).splitlines()[-1]})") from exc
    img = sitk_to_image(sitk_image, path, modality)
    img.meta.update(meta)
    return _maybe_suv(img, [first], [path], suv)


def _maybe_suv(img: MedicalImage, datasets: list, files: list[Path], suv: bool) -> MedicalImage:
    if img.meta.get("dicom_modality") != "PT":
        return img
    if not suv:
        img.meta["units"] = str(datasets[0].get("Units", "")).upper() or "unknown"
        return img
    factor, info = suv_bw_factor(datasets, files[0])
    array = (img.array.astype(np.float64) * factor).astype(np.float32)
    out = img.with_array(array)
    _check_dose_in_view(out, info, files[0])
    out.meta.update(units="SUVbw", suv=info)
    return out


# --------------------------------------------------------------------------------------------- SUV


MAX_DECAY_HALF_LIVES = 10.0  # after 10 half-lives < 0.1% of the dose is left: no protocol scans that late
# The field of view cannot hold more activity than was injected (decay-corrected to the scan): SUVbw x mL summed
# over the volume, divided by the weight in g, is that fraction (~0.66 whole-body, ~0.32 torso for FDG). The margin
# covers dose-calibrator and scanner calibration errors (each ~10%); a header error (a wrong day, a dose in MBq, a
# wrong unit) is a factor of 2 to 10^6.
MAX_DOSE_FRACTION_IN_VIEW = 1.5
KEEP_BQML = "(suv=False, or `suv_factor` F for lesions, keeps Bq/mL)"


def _need(ds, tag: str, path: Path, within: str = ""):
    with warnings.catch_warnings():  # pydicom's "invalid value for VR DS" (e.g. 'NaN'): the value is checked here
        warnings.simplefilter("ignore", UserWarning)
        value = ds.get(tag) if ds is not None else None
    if value is None or value == "":
        where = f" in {within}" if within else ""
        raise InputError(path, f"cannot convert PET to SUV: missing DICOM tag {tag}{where} {KEEP_BQML}")
    return value


def _positive(ds, tag: str, unit: str, path: Path, within: str = "") -> float:
    """A header number that SUV divides or multiplies by: present, finite and > 0, or one line naming the tag."""
    value = _need(ds, tag, path, within)
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        number = math.nan
    if not (math.isfinite(number) and number > 0):
        raise InputError(
            path,
            f"cannot convert PET to SUV: DICOM tag {tag} is {str(value).strip()!r} {unit}, not a positive number "
            + KEEP_BQML,
        )
    return number


def _check_dose_in_view(image: MedicalImage, info: dict, path: Path) -> None:
    """Refuse an SUV whose header values put more activity in the field of view than was injected."""
    weight = info.get("PatientWeight_kg")
    if not weight or image.spatial_ndim != 3:
        return
    fraction = float(image.array.sum(dtype=np.float64)) * image.voxel_volume_ml / (weight * 1000.0)
    info["dose_fraction_in_view"] = fraction
    if not fraction <= MAX_DOSE_FRACTION_IN_VIEW:  # NaN too
        used = ", ".join(f"{k} {v:g}" for k, v in info.items() if isinstance(v, float) and k != "factor")
        raise InputError(
            path,
            f"cannot convert PET to SUV: with these headers ({used}) the field of view would hold {fraction:.3g} "
            "times the injected activity; a weight, dose, unit, date or time tag is wrong " + KEEP_BQML,
        )


def _since_midnight(t) -> timedelta:
    return timedelta(hours=t.hour, minutes=t.minute, seconds=t.second, microseconds=t.microsecond)


def _parse_tm(value) -> timedelta:
    """A DICOM TM (pydicom's parser; the old 'HH:MM:SS' form too) as time since midnight."""
    from pydicom.valuerep import TM

    return _since_midnight(TM(str(value).strip().replace(":", "")))


def _parse_da(value) -> date | None:
    """A DICOM DA (pydicom's parser), None when empty."""
    from pydicom.valuerep import DA

    text = str(value or "").strip()
    return DA(text) if text else None


def _parse_dt(value) -> tuple[date | None, timedelta]:
    """A DICOM DT (pydicom's parser) as (date, time since midnight); a UTC offset is ignored, as the other times
    of the series carry none."""
    from pydicom.valuerep import DT

    stamp = DT(str(value).strip())
    return stamp.date(), _since_midnight(stamp)


def suv_bw_factor(datasets: list, path: Path) -> tuple[float, dict]:
    """The factor taking this PET series' voxel values to body-weight SUV, with the header values used.

    Follows the QIBA/DICOM rule: Units BQML, dose decayed from injection to the series start
    (SeriesTime, or the earliest AcquisitionTime when that is earlier) for DecayCorrection START.
    """
    ds = datasets[0]
    units = str(_need(ds, "Units", path)).upper()
    if units == "GML":
        return 1.0, {"Units": units, "factor": 1.0}
    if units == "CNTS":
        return _philips_counts_factor(datasets, path)
    if units != "BQML":
        raise InputError(
            path, f"cannot convert PET Units {units} to SUV (BQML, GML or Philips CNTS are supported); pass suv=False"
        )
    return _bqml_factor(datasets, path)


PHILIPS_SUV_SCALE = (0x7053, 0x1000)  # Philips private: SUVbw per stored (rescaled) value
PHILIPS_ACTIVITY_SCALE = (0x7053, 0x1009)  # Philips private: Bq/mL per stored (rescaled) value


def _private_float(datasets: list, tag: tuple[int, int], path: Path) -> float | None:
    """A private numeric tag that every instance of the series carries with one value; None when absent."""
    values = []
    for d in datasets:
        elem = d.get(tag)
        if elem is None or elem.value in (None, b"", ""):
            return None
        raw = elem.value
        try:
            value = float(raw.decode().strip("\x00 ") if isinstance(raw, bytes) else raw)
        except (TypeError, ValueError, UnicodeDecodeError):
            if isinstance(raw, bytes) and len(raw) in (4, 8):  # implicit VR: a binary FL / FD value
                value = float(np.frombuffer(raw, "<f4" if len(raw) == 4 else "<f8")[0])
            else:
                raise InputError(
                    path, f"cannot convert PET to SUV: private tag {tag[0]:04X},{tag[1]:04X} is {raw!r}"
                ) from None
        values.append(value)
    if not values or not all(np.isfinite(values)) or min(values) <= 0:
        raise InputError(
            path, f"cannot convert PET to SUV: private tag {tag[0]:04X},{tag[1]:04X} is {values[:1]}, not positive"
        )
    if max(values) > min(values) * (1 + 1e-6):
        raise InputError(path, f"cannot convert PET to SUV: private tag {tag[0]:04X},{tag[1]:04X} differs by slice")
    return values[0]


def _philips_counts_factor(datasets: list, path: Path) -> tuple[float, dict]:
    """Philips series stored in counts (Units CNTS): the vendor's SUV scale factor (7053,1000), or its
    activity-concentration factor (7053,1009) to Bq/mL followed by the BQML rule (as QIBA's vendor-neutral
    SUV calculation does)."""
    manufacturer = str(datasets[0].get("Manufacturer", "")).upper()
    if "PHILIPS" not in manufacturer:
        raise InputError(path, f"cannot convert PET Units CNTS of manufacturer {manufacturer or 'unknown'} to SUV")
    suv_scale = _private_float(datasets, PHILIPS_SUV_SCALE, path)
    if suv_scale is not None:
        return suv_scale, {"Units": "CNTS", "PhilipsSUVScaleFactor": suv_scale, "factor": suv_scale}
    activity = _private_float(datasets, PHILIPS_ACTIVITY_SCALE, path)
    if activity is None:
        raise InputError(
            path, "cannot convert Philips PET in CNTS to SUV: neither private tag 7053,1000 nor 7053,1009 is present"
        )
    factor, info = _bqml_factor(datasets, path)
    info.update({"Units": "CNTS", "PhilipsActivityConcentrationScaleFactor": activity, "factor": factor * activity})
    return factor * activity, info


def _bqml_factor(datasets: list, path: Path) -> tuple[float, dict]:
    """Body-weight SUV per Bq/mL from the patient weight, dose, half-life and decay-correction reference."""
    ds = datasets[0]
    units = "BQML"
    weight = _positive(ds, "PatientWeight", "kg", path)
    seq = _need(ds, "RadiopharmaceuticalInformationSequence", path)
    rp = seq[0] if len(seq) else None
    seq_name = "RadiopharmaceuticalInformationSequence"
    dose = _positive(rp, "RadionuclideTotalDose", "Bq", path, seq_name)
    half_life = _positive(rp, "RadionuclideHalfLife", "s", path, seq_name)
    correction = str(_need(ds, "DecayCorrection", path)).upper()
    info = {
        "Units": units,
        "PatientWeight_kg": weight,
        "RadionuclideTotalDose_Bq": dose,
        "RadionuclideHalfLife_s": half_life,
        "DecayCorrection": correction,
    }
    if correction == "ADMIN":
        decayed = dose
    elif correction == "START":
        elapsed, when = _elapsed_s(datasets, rp, path)
        if elapsed > MAX_DECAY_HALF_LIVES * half_life:
            raise InputError(
                path,
                f"cannot convert PET to SUV: the scan starts {elapsed:.0f} s after the injection ({when}), "
                f"{elapsed / half_life:.1f} half-lives of RadionuclideHalfLife {half_life:g} s; after "
                f"{MAX_DECAY_HALF_LIVES:g} half-lives less than 0.1% of the dose is left, so a date or time tag is "
                "wrong " + KEEP_BQML,
            )
        info["elapsed_s"] = elapsed
        decayed = dose * math.exp(-math.log(2) * elapsed / half_life)
    else:
        raise InputError(
            path,
            f"cannot convert PET to SUV with DecayCorrection {correction} (START or ADMIN); pass suv=False",
        )
    factor = weight * 1000.0 / decayed if decayed > 0 else math.inf
    if not (math.isfinite(factor) and factor > 0):
        raise InputError(
            path,
            f"cannot convert PET to SUV: PatientWeight {weight:g} kg and RadionuclideTotalDose {dose:g} Bq give "
            f"no usable factor ({factor:g} SUV per Bq/mL) " + KEEP_BQML,
        )
    info["factor"] = factor
    return factor, info


def _elapsed_s(datasets: list, rp, path: Path) -> tuple[float, str]:
    """Seconds from injection to the series reference time, and the tags and values they came from."""
    try:
        return _elapsed_from_headers(datasets, rp, path)
    except ValueError as exc:  # pydicom's DA / TM / DT refuse a malformed value
        if isinstance(exc, InputError):
            raise
        raise InputError(path, f"cannot convert PET to SUV: {exc}") from exc


def _elapsed_from_headers(datasets: list, rp, path: Path) -> tuple[float, str]:
    ds = datasets[0]
    series_day = _parse_da(ds.get("SeriesDate"))
    reference = None  # (day or None, time since midnight, the tags and values it came from)
    if ds.get("SeriesTime"):
        reference = (series_day, _parse_tm(ds.SeriesTime), f"SeriesDate {series_day} SeriesTime {ds.SeriesTime}")
    acq = [
        (_parse_da(d.get("AcquisitionDate")) or series_day, _parse_tm(d.AcquisitionTime), d.AcquisitionTime)
        for d in datasets
        if d.get("AcquisitionTime")
    ]
    if acq:
        earliest = min(acq, key=lambda dt: (dt[0] or date.min, dt[1]))
        if reference is None or (reference[0] or date.min, reference[1]) > (
            earliest[0] or date.min,
            earliest[1],
        ):  # SeriesTime rewritten after the scan: use the first acquisition
            reference = (earliest[0], earliest[1], f"first AcquisitionDate {earliest[0]} AcquisitionTime {earliest[2]}")
    if reference is None:
        _need(ds, "SeriesTime", path)
    if rp.get("RadiopharmaceuticalStartDateTime"):
        injection = _parse_dt(rp.RadiopharmaceuticalStartDateTime)
        injected = f"RadiopharmaceuticalStartDateTime {rp.RadiopharmaceuticalStartDateTime}"
    else:
        start = _need(rp, "RadiopharmaceuticalStartTime", path, "RadiopharmaceuticalInformationSequence")
        injection = (None, _parse_tm(start))
        injected = f"RadiopharmaceuticalStartTime {start}"
    when = f"{injected}; {reference[2]}".replace("SeriesDate None ", "").replace("AcquisitionDate None ", "")
    if reference[0] is not None and injection[0] is not None:
        elapsed = (
            datetime.combine(reference[0], datetime.min.time())
            + reference[1]
            - datetime.combine(injection[0], datetime.min.time())
            - injection[1]
        ).total_seconds()
        if elapsed < 0:
            raise InputError(
                path, f"cannot convert PET to SUV: the scan starts {-elapsed:.0f} s before the injection ({when})"
            )
        return elapsed, when
    elapsed = (reference[1] - injection[1]).total_seconds()
    if elapsed < 0:  # the day before, or a wrong time: without the injection's date nobody can tell
        raise InputError(
            path,
            f"cannot convert PET to SUV: the injection time is {-elapsed:.0f} s later than the scan's start ({when}) "
            "and no date says the injection was the day before (RadiopharmaceuticalStartDateTime with SeriesDate "
            "or AcquisitionDate) " + KEEP_BQML,
        )
    return elapsed, when


def _progress(items: list, desc: str, enabled: bool):
    """tqdm over long lists only (no bar for a handful of files, none when not ``enabled``)."""
    if len(items) < 50 or not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="file", leave=False)


def read_dicom_object(path: str | Path, modality: str, required: str, what: str | None = None):
    """The dataset of the single-file DICOM object at ``path`` (an RTSTRUCT, a SEG, ...): one clear error when the
    file is missing, unreadable, or not of ``modality`` with the element ``required`` (``what``: its name in the
    message, e.g. "an RTSTRUCT")."""
    import pydicom

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such file")
    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:
        raise InputError(path, f"unreadable DICOM file ({type(exc).__name__}: {exc})") from exc
    if str(ds.get("Modality", "")).upper() != modality or required not in ds:
        raise InputError(path, f"not {what or modality} (Modality {ds.get('Modality', '?')})")
    return ds
