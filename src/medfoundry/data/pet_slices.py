"""PET slice dataset for abnormality classification: volumes -> labelled, normalised 2D axial slices.

Per case (protocol of the PET foundation-model study): resample the PET volume to one grid (voxel counts
``(x, y, z)``, 400 x 400 x 300 by default) over its own field of view, cut the axial slices, label a slice
abnormal when the resampled mask holds at least ``min_lesion_voxels`` lesion voxels, resize each slice to
``size`` x ``size`` and divide it by its own maximum SUV (slices are stored as 8-bit ``[0, 1]`` values; the
encoder maps them linearly to its own input range). Patients are split train / val / test (75 / 15 / 10 by
default, seeded), never one patient in two splits.

On disk (``OUT/``): ``dataset.json`` (configuration, cases, preprocessing hash), ``manifest.csv`` (one row per
slice: case, slice index, label, split...) and ``slices/CASE.npz`` (uint8 ``(n, size, size)``).
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from medfoundry.errors import InputError, OutputExistsError
from medfoundry.io.atomic import swap_in_dir
from medfoundry.io.image import MedicalImage
from medfoundry.preprocessing.resample import resample_volume

SPLITS = ("train", "val", "test")
MANIFEST_FIELDS = (
    "row",
    "case_id",
    "patient_id",
    "slice_index",
    "z_mm",
    "source_slice",
    "slice_max",
    "lesion_voxels",
    "label",
    "split",
)
FORMAT_VERSION = 1


@dataclass(frozen=True)
class SliceConfig:
    """How volumes become slices; everything that changes the stored pixels is in :meth:`pixel_params`."""

    grid: tuple[int, int, int] = (400, 400, 300)  # voxel counts (x, y, z); 0 keeps the native count
    size: int = 224
    min_lesion_voxels: int = 1
    min_slice_max: float = 0.0  # slices whose maximum is <= this are dropped (cannot be normalised)
    binarize: bool = False  # every non-zero mask label counts as lesion
    lesion_labels: tuple[int, ...] | None = None  # these labels count as lesion (others as background)

    def __post_init__(self) -> None:
        if len(self.grid) != 3 or any(int(g) < 0 for g in self.grid):
            raise InputError(None, f"grid must be three voxel counts >= 0 (x, y, z), got {self.grid}")
        if self.size < 8:
            raise InputError(None, f"slice size must be >= 8 pixels, got {self.size}")
        if self.min_lesion_voxels < 1:
            raise InputError(None, f"min_lesion_voxels must be >= 1, got {self.min_lesion_voxels}")

    def pixel_params(self) -> dict:
        """The parameters that determine the stored slice pixels (hashed into the preprocessing hash)."""
        return {
            "grid": [int(g) for g in self.grid],
            "size": int(self.size),
            "min_slice_max": float(self.min_slice_max),
            "intensity": "slice / slice max, uint8 [0, 255] -> [0, 1]",
            "resample": "MONAI Resize trilinear (image), nearest-exact (mask); slices: sitk linear + Gaussian AA",
            "format": FORMAT_VERSION,
        }


@dataclass
class CaseSpec:
    """One PET volume with its lesion mask; ``patient_id`` groups cases that must share a split."""

    case_id: str
    image: Path
    mask: Path | None
    patient_id: str = ""

    def __post_init__(self) -> None:
        self.image = Path(self.image)
        self.mask = None if self.mask is None else Path(self.mask)
        self.patient_id = self.patient_id or self.case_id


@dataclass
class SliceStack:
    """The slices of one volume: pixels in ``[0, 1]`` as uint8 plus per-slice facts."""

    images: np.ndarray  # (n, size, size) uint8
    slice_index: np.ndarray  # index along z of the resampled grid
    z_mm: np.ndarray  # physical z of the slice centre
    source_slice: np.ndarray  # nearest slice of the original volume
    slice_max: np.ndarray  # maximum value (SUV) of the grid slice before normalisation
    lesion_voxels: np.ndarray  # lesion voxels in the grid slice (-1 without a mask)
    grid_spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    n_grid_slices: int = 0
    meta: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------- volumes


def grid_geometry(img: MedicalImage, grid: Sequence[int]) -> tuple[tuple[int, ...], tuple[float, ...], tuple]:
    """Size, spacing and origin (ITK order) of ``grid`` voxels covering ``img``'s field of view."""
    size_in = np.array(img.array.shape[::-1][:3], dtype=float)  # (x, y, z)
    size = tuple(int(g) if int(g) > 0 else int(s) for g, s in zip(grid, size_in, strict=True))
    spacing_in = np.array(img.spacing, dtype=float)
    spacing = spacing_in * size_in / np.array(size, dtype=float)
    direction = np.array(img.direction, dtype=float).reshape(3, 3)
    # keep the outer voxel edges: the first voxel centre moves by half the change in spacing
    origin = np.array(img.origin, dtype=float) + direction @ ((spacing - spacing_in) / 2.0)
    return size, tuple(spacing.tolist()), tuple(origin.tolist())


def resample_to_grid(img: MedicalImage, grid: Sequence[int], label: bool = False) -> MedicalImage:
    """``img`` resampled (linear, or nearest for labels) onto ``grid`` voxels over the same field of view."""
    size, spacing, origin = grid_geometry(img, grid)
    if size == tuple(img.array.shape[::-1]):
        return img
    array = resample_volume(img.array, tuple(size[::-1]), is_label=label)
    return MedicalImage(array, spacing, origin, img.direction, img.modality, img.path, dict(img.meta))


def lesion_mask(mask: MedicalImage, config: SliceConfig) -> np.ndarray:
    """Binary lesion array from a label map, refusing labels other than {0, 1} unless configured."""
    labels = np.unique(mask.array)
    if config.lesion_labels is not None:
        wanted = set(int(v) for v in config.lesion_labels)
        missing = wanted - set(int(v) for v in labels)
        if missing == wanted:
            raise InputError(
                mask.path,
                f"the mask holds labels {sorted(int(v) for v in labels)}, none of the lesion labels "
                f"{sorted(wanted)} asked for with --lesion-labels",
            )
        return np.isin(mask.array, sorted(wanted)).astype(np.uint8)
    extra = [int(v) for v in labels if v not in (0, 1)]
    if extra and not config.binarize:
        raise InputError(
            mask.path,
            f"the mask holds labels {sorted(int(v) for v in labels)}, expected only 0 and 1; pass --binarize "
            "to count every non-zero label as lesion, or --lesion-labels L [L ...] to pick the lesion labels",
        )
    return (mask.array > 0).astype(np.uint8)


def _resize_stack(stack: np.ndarray, size: int) -> np.ndarray:
    """(n, h, w) -> (n, size, size) float32: SimpleITK linear resampling, Gaussian anti-aliasing when shrinking."""
    import SimpleITK as sitk

    n, h, w = stack.shape
    if (h, w) == (size, size):
        return stack.astype(np.float32, copy=False)
    img = sitk.GetImageFromArray(stack.astype(np.float32, copy=False))  # unit spacing, origin 0
    fx, fy = w / size, h / size
    variance = [((fx - 1) / 2) ** 2 if fx > 1 else 0.0, ((fy - 1) / 2) ** 2 if fy > 1 else 0.0, 0.0]
    if any(variance):
        img = sitk.DiscreteGaussian(img, variance, 32, 0.01, False)
    out = sitk.Resample(
        img,
        [size, size, n],
        sitk.Transform(),
        sitk.sitkLinear,
        ((fx - 1) / 2, (fy - 1) / 2, 0.0),  # outer pixel edges kept
        (fx, fy, 1.0),
        img.GetDirection(),
        0.0,
        sitk.sitkFloat32,
    )
    return sitk.GetArrayFromImage(out)


def to_uint8_unit(stack: np.ndarray) -> np.ndarray:
    """Each slice divided by its own maximum, stored as uint8 (0..255 for 0..1); negatives clipped to 0."""
    stack = np.clip(stack, 0.0, None)
    peak = stack.reshape(stack.shape[0], -1).max(axis=1)
    peak = np.where(peak > 0, peak, 1.0)
    return np.round(stack / peak[:, None, None] * 255.0).astype(np.uint8)


def slice_volume(image: MedicalImage, mask: MedicalImage | None, config: SliceConfig) -> SliceStack:
    """Resample ``image`` (and ``mask``) to the grid, keep non-empty axial slices, normalise and resize."""
    if image.spatial_ndim != 3 or image.is_rgb:
        raise InputError(image.path, f"a 3D PET volume is needed, got an image of shape {image.array.shape}")
    img = resample_to_grid(image, config.grid)
    data = img.array.astype(np.float32, copy=False)
    nz = data.shape[0]
    slice_max = data.reshape(nz, -1).max(axis=1)
    keep = np.flatnonzero(slice_max > config.min_slice_max)
    if keep.size == 0:
        raise InputError(
            image.path,
            f"no slices left after filtering: all {nz} resampled slices have maximum <= "
            f"{config.min_slice_max:g} (empty scan?); lower --min-slice-max or check the file",
        )
    if mask is not None:
        lesions = resample_to_grid(mask.with_array(lesion_mask(mask, config)), config.grid, label=True)
        lesion_voxels = lesions.array.reshape(nz, -1).sum(axis=1)[keep].astype(np.int64)
    else:
        lesion_voxels = np.full(keep.size, -1, dtype=np.int64)
    direction = np.array(img.direction).reshape(3, 3)
    centres = np.array(img.origin)[None, :] + (direction @ (np.outer(keep, [0, 0, 1]) * img.spacing).T).T
    z_mm = centres[:, 2]
    # nearest original slice of each kept grid slice (both grids cover the same FOV)
    source = np.floor((keep + 0.5) * image.array.shape[0] / nz).astype(np.int64)
    pixels = to_uint8_unit(_resize_stack(data[keep], config.size))
    return SliceStack(
        images=pixels,
        slice_index=keep.astype(np.int64),
        z_mm=z_mm,
        source_slice=np.minimum(source, image.array.shape[0] - 1),
        slice_max=slice_max[keep].astype(np.float64),
        lesion_voxels=lesion_voxels,
        grid_spacing=tuple(float(s) for s in img.spacing),
        n_grid_slices=nz,
    )


def read_case(case: CaseSpec) -> tuple[MedicalImage, MedicalImage | None]:
    """Read a case's PET volume (SUV for DICOM) and its mask, checking that they share one grid."""
    from medfoundry.io import read_image, read_mask

    image = read_image(case.image, modality="PET")
    mask = None if case.mask is None else read_mask(case.mask, reference=image)
    return image, mask


# ------------------------------------------------------------------------------------------------ splits


def patient_split(
    patients: Sequence[str],
    fractions: Sequence[float] = (0.75, 0.15, 0.10),
    seed: int = 0,
    pinned: dict[str, str] | None = None,
) -> dict[str, str]:
    """Assign each distinct patient to train / val / test by a seeded shuffle; ``pinned`` forces some."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or sum(fractions) <= 0:
        raise InputError(None, f"split fractions must be three non-negative numbers, got {tuple(fractions)}")
    fr = np.array(fractions, dtype=float) / float(sum(fractions))
    unique = sorted(set(patients))
    pinned = dict(pinned or {})
    for pid, split in pinned.items():
        if split not in SPLITS:
            raise InputError(None, f"patient {pid}: unknown split {split!r}; use one of {SPLITS}")
        if pid not in unique:
            raise InputError(None, f"patient {pid} is pinned to {split} but is not among the cases")
    n = len(unique)
    want = {"test": int(round(fr[2] * n)), "val": int(round(fr[1] * n))}
    for name, f in (("test", fr[2]), ("val", fr[1])):  # at least one patient where a fraction asks for one
        if f > 0 and want[name] == 0 and n >= 3:
            want[name] = 1
    free = [p for p in unique if p not in pinned]
    order = np.random.default_rng(seed).permutation(len(free))
    assignment = dict(pinned)
    counts = {s: sum(1 for v in pinned.values() if v == s) for s in SPLITS}
    for idx in order:
        pid = free[idx]
        if counts["test"] < want["test"]:
            split = "test"
        elif counts["val"] < want["val"]:
            split = "val"
        else:
            split = "train"
        assignment[pid] = split
        counts[split] += 1
    return assignment


# ------------------------------------------------------------------------------------------------- cases


def read_case_table(path: str | Path) -> list[CaseSpec]:
    """Cases from a CSV with columns ``case_id,image,mask[,patient_id]`` (paths relative to the CSV)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "case table not found")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        need = {"case_id", "image", "mask"}
        if reader.fieldnames is None or not need <= set(reader.fieldnames):
            raise InputError(path, f"case table needs the columns {sorted(need)} (+ optional patient_id)")
        cases = []
        for line, row in enumerate(reader, start=2):
            if not (row.get("case_id") or "").strip() or not (row.get("image") or "").strip():
                raise InputError(path, f"line {line}: case_id and image are required")
            mask = (row.get("mask") or "").strip()
            cases.append(
                CaseSpec(
                    case_id=row["case_id"].strip(),
                    image=(path.parent / row["image"].strip()),
                    mask=(path.parent / mask) if mask else None,
                    patient_id=(row.get("patient_id") or "").strip(),
                )
            )
    if not cases:
        raise InputError(path, "the case table lists no cases")
    return cases


def _check_cases(cases: Sequence[CaseSpec]) -> None:
    seen: set[str] = set()
    for case in cases:
        if case.case_id in seen:
            raise InputError(case.image, f"case id {case.case_id!r} is listed twice")
        if not all(ch.isalnum() or ch in "-_." for ch in case.case_id):
            raise InputError(case.image, f"case id {case.case_id!r} may only hold letters, digits, '-', '_', '.'")
        if case.mask is None:
            raise InputError(case.image, f"case {case.case_id}: a lesion mask is needed to label the slices")
        seen.add(case.case_id)


# ---------------------------------------------------------------------------------------------- dataset


def _digest_json(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def build_slice_dataset(
    cases: Sequence[CaseSpec],
    out_dir: str | Path,
    config: SliceConfig = SliceConfig(),
    fractions: Sequence[float] = (0.75, 0.15, 0.10),
    seed: int = 0,
    pinned: dict[str, str] | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> SliceDataset:
    """Read, slice and store every case; the folder appears complete or not at all (atomic rename)."""
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise OutputExistsError(out_dir)
    _check_cases(cases)
    assignment = patient_split([c.patient_id for c in cases], fractions, seed, pinned)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        (tmp / "slices").mkdir()
        rows: list[dict] = []
        case_records = []
        digests = []
        for case in tqdm(cases, desc="slicing volumes", unit="case", disable=not progress):
            image, mask = read_case(case)
            stack = slice_volume(image, mask, config)
            np.savez_compressed(tmp / "slices" / f"{case.case_id}.npz", images=stack.images)
            digests.append(hashlib.sha256(stack.images.tobytes()).hexdigest())
            split = assignment[case.patient_id]
            for i in range(stack.images.shape[0]):
                rows.append(
                    {
                        "row": len(rows),
                        "case_id": case.case_id,
                        "patient_id": case.patient_id,
                        "slice_index": int(stack.slice_index[i]),
                        "z_mm": round(float(stack.z_mm[i]), 3),
                        "source_slice": int(stack.source_slice[i]),
                        "slice_max": round(float(stack.slice_max[i]), 5),
                        "lesion_voxels": int(stack.lesion_voxels[i]),
                        "label": int(stack.lesion_voxels[i] >= config.min_lesion_voxels),
                        "split": split,
                    }
                )
            case_records.append(
                {
                    "case_id": case.case_id,
                    "patient_id": case.patient_id,
                    "image": str(case.image),
                    "mask": str(case.mask),
                    "split": split,
                    "shape_zyx": list(image.array.shape),
                    "spacing": list(image.spacing),
                    "grid_spacing": list(stack.grid_spacing),
                    "n_grid_slices": stack.n_grid_slices,
                    "n_slices": int(stack.images.shape[0]),
                    "n_abnormal": int((stack.lesion_voxels >= config.min_lesion_voxels).sum()),
                }
            )
        with (tmp / "manifest.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=MANIFEST_FIELDS)
            writer.writeheader()
            writer.writerows(rows)
        info = {
            "format": FORMAT_VERSION,
            "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()},
            "pixel_params": config.pixel_params(),
            "preprocessing_hash": _digest_json({"params": config.pixel_params(), "cases": digests}),
            "split_fractions": list(fractions),
            "seed": seed,
            "pinned": dict(pinned or {}),
            "cases": case_records,
            "n_slices": len(rows),
            "n_abnormal": int(sum(r["label"] for r in rows)),
        }
        (tmp / "dataset.json").write_text(json.dumps(info, indent=1))
        swap_in_dir(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return SliceDataset(out_dir)


class SliceDataset:
    """A built slice dataset, read from its folder without touching the source volumes."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        info_path = self.root / "dataset.json"
        if not info_path.is_file() or not (self.root / "manifest.csv").is_file():
            raise InputError(
                self.root,
                "not a slice dataset (dataset.json / manifest.csv missing); run 'medfoundry classify build' first",
            )
        self.info = json.loads(info_path.read_text())
        with (self.root / "manifest.csv").open(newline="") as handle:
            self.rows = list(csv.DictReader(handle))
        for row in self.rows:
            for key in ("row", "slice_index", "source_slice", "lesion_voxels", "label"):
                row[key] = int(row[key])
            for key in ("z_mm", "slice_max"):
                row[key] = float(row[key])
        self._starts: dict[str, int] = {}
        for row in self.rows:
            self._starts.setdefault(row["case_id"], row["row"])
        self._cached: tuple[str, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def preprocessing_hash(self) -> str:
        """Identity of the stored pixels (preprocessing parameters + slice contents)."""
        return self.info["preprocessing_hash"]

    @property
    def config(self) -> SliceConfig:
        """The :class:`SliceConfig` the dataset was built with."""
        cfg = dict(self.info["config"])
        cfg["grid"] = tuple(cfg["grid"])
        if cfg.get("lesion_labels") is not None:
            cfg["lesion_labels"] = tuple(cfg["lesion_labels"])
        return SliceConfig(**cfg)

    @property
    def labels(self) -> np.ndarray:
        """0/1 label per row."""
        return np.array([r["label"] for r in self.rows], dtype=np.int64)

    def split_rows(self, split: str) -> np.ndarray:
        """Row indices of one split."""
        return np.array([r["row"] for r in self.rows if r["split"] == split], dtype=np.int64)

    def case_images(self, case_id: str) -> np.ndarray:
        """All stored slices of one case, uint8 ``(n, size, size)``."""
        if self._cached is None or self._cached[0] != case_id:
            path = self.root / "slices" / f"{case_id}.npz"
            if not path.is_file():
                raise InputError(path, "slice file missing from the dataset; rebuild it")
            with np.load(path) as data:
                self._cached = (case_id, data["images"])
        return self._cached[1]

    def images(self, rows: Sequence[int]) -> np.ndarray:
        """Slices of the given manifest rows as float32 ``(n, size, size)`` in ``[0, 1]``."""
        out = []
        for idx in rows:
            row = self.rows[int(idx)]
            out.append(self.case_images(row["case_id"])[row["row"] - self._starts[row["case_id"]]])
        return np.stack(out).astype(np.float32) / 255.0
