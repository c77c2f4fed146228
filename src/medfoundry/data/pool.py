"""Dataset pool: several labelled 3D datasets remapped into one label space, preprocessed and sampled.

A pool config (JSON or YAML) lists the pool's classes and its sources::

    name: demo
    spacing_xyz_mm: [3.0, 3.0, 3.0]      # target spacing, (x, y, z) like ITK
    patch_size_zyx: [32, 64, 64]          # training patch in voxels, array order
    foreground_share: 0.33                # share of patches centred on an annotated voxel
    pad_to_patch: false                   # pad volumes smaller than the patch (default: error)
    classes: [liver, kidney, tumour]      # pool label ids 1..K in this order
    sources:
      - name: organs_ct
        modality: CT
        root: ../shared/data/totalsegmentator        # relative to the config file
        cases: [{image: example_ct_sm.nii.gz, label: example_seg.nii.gz}]
        labels: {2: kidney, 3: kidney, 5: liver}     # source label id -> pool class
        unmapped: background                          # other ids: 'background' or 'error' (default)
      - name: lung_tumours
        modality: CT
        root: ../shared/data/pet-sts
        image_glob: "STS_*/CT_image.nii.gz"           # instead of 'cases'
        label_from_image: ["_image", "_mask"]         # label path = image path with this replacement
        labels: {1: tumour}

Each case is drawn with probability proportional to 1/sqrt(n) of its source's case count, and the loss only
counts the classes its source annotates (its ``labels`` values).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from medfoundry.data.patches import check_patch_fits, class_locations, sample_patch
from medfoundry.data.preprocess3d import ct_statistics, preprocess_volume, target_shape
from medfoundry.errors import InputError
from medfoundry.io.atomic import atomic_dir, check_writable
from medfoundry.io.paths import split_suffix

POOL_FORMAT = "medfoundry-pool/1"
MODALITIES_3D = ("CT", "MR", "PET", "OTHER")


@dataclass
class SourceSpec:
    """One source dataset of the pool: its cases and its label remapping into the pool classes."""

    name: str
    modality: str
    cases: list[tuple[Path, Path]]
    labels: dict[int, str]
    unmapped: str = "error"

    @property
    def annotated(self) -> list[str]:
        """Pool classes this source labels (in first-seen order)."""
        return list(dict.fromkeys(self.labels.values()))


@dataclass
class PoolConfig:
    """A parsed and validated pool config."""

    name: str
    classes: list[str]
    sources: list[SourceSpec]
    spacing_xyz_mm: tuple[float, float, float]
    patch_size_zyx: tuple[int, int, int]
    foreground_share: float = 0.33
    pad_to_patch: bool = False
    path: Path | None = None
    extra: dict = field(default_factory=dict)

    @property
    def class_ids(self) -> dict[str, int]:
        """Pool class name -> pool label id (1..K)."""
        return {c: i + 1 for i, c in enumerate(self.classes)}

    def sampling_weights(self) -> list[float]:
        """Per-case probability, proportional to 1/sqrt(n) of its source's case count (sums to 1)."""
        raw = [1.0 / math.sqrt(len(s.cases)) for s in self.sources for _ in s.cases]
        total = sum(raw)
        return [w / total for w in raw]


def _load_mapping(path: Path) -> dict:
    if not path.is_file():
        raise InputError(path, "pool config not found")
    text = path.read_text()
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # noqa: BLE001 - parser errors vary by format
        detail = " ".join(str(exc).split())  # YAML's messages span several lines
        raise InputError(path, f"cannot parse the pool config: {detail}") from None
    if not isinstance(data, dict):
        raise InputError(path, "the pool config must be a mapping with 'classes' and 'sources'")
    _check_schema(data, path)
    return data


def _kind(value) -> str:
    return "a mapping" if isinstance(value, dict) else "a list" if isinstance(value, list) else repr(value)[:40]


def _want(ok: bool, path: Path, key: str, expected: str, value) -> None:
    if not ok:
        raise InputError(path, f"'{key}' must be {expected}, got {_kind(value)}")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_schema(data: dict, path: Path) -> None:
    """The types of every known key (the key path is named in the message); values are checked later."""
    opt = data.get
    _want(isinstance(opt("name", ""), str), path, "name", "a string", opt("name"))
    classes = opt("classes", [])
    _want(isinstance(classes, list), path, "classes", "a list of class names", classes)
    for i, c in enumerate(classes):
        _want(isinstance(c, (str, int)) and not isinstance(c, bool), path, f"classes[{i}]", "a name", c)
    for key, kind in (("spacing_xyz_mm", "numbers"), ("patch_size_zyx", "integers")):
        if key in data:
            value = data[key]
            ok = isinstance(value, list) and all(
                _is_number(v) if kind == "numbers" else isinstance(v, int) and not isinstance(v, bool) for v in value
            )
            _want(ok, path, key, f"a list of three {kind}", value)
    if "foreground_share" in data:
        _want(
            _is_number(data["foreground_share"]),
            path,
            "foreground_share",
            "a number in [0, 1]",
            data["foreground_share"],
        )
    sources = opt("sources", [])
    _want(isinstance(sources, list), path, "sources", "a list of source mappings", sources)
    for i, src in enumerate(sources):
        where = f"sources[{i}]"
        _want(isinstance(src, dict), path, where, "a mapping (name, modality, root, labels, ...)", src)
        for key in ("name", "modality", "root", "image_glob", "unmapped"):
            if src.get(key) is not None:
                _want(isinstance(src[key], str), path, f"{where}.{key}", "a string", src[key])
        if "labels" in src:
            labels = src["labels"]
            _want(isinstance(labels, dict), path, f"{where}.labels", "a mapping of label id -> class name", labels)
            for sid, cls in labels.items():
                _want(isinstance(cls, str), path, f"{where}.labels.{sid}", "a class name", cls)
        if "cases" in src:
            _want(isinstance(src["cases"], list), path, f"{where}.cases", "a list of {image, label}", src["cases"])
            for j, case in enumerate(src["cases"]):
                ok = isinstance(case, dict) and all(isinstance(case.get(k), str) for k in ("image", "label"))
                _want(ok, path, f"{where}.cases[{j}]", "a mapping with 'image' and 'label' paths", case)
        if "label_from_image" in src:
            value = src["label_from_image"]
            ok = isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value)
            _want(ok, path, f"{where}.label_from_image", "two strings [old, new]", value)


def _triple(value, kind, path: Path, key: str) -> tuple:
    try:
        out = tuple(kind(v) for v in value)
    except (TypeError, ValueError):
        out = ()
    if len(out) != 3 or any(v <= 0 for v in out):
        raise InputError(path, f"'{key}' must be three positive numbers, got {value!r}")
    return out


def _source_cases(src: dict, root: Path, cfg_path: Path, name: str) -> list[tuple[Path, Path]]:
    if not root.exists():
        raise InputError(cfg_path, f"source {name!r}: dataset folder {root} does not exist")
    cases: list[tuple[Path, Path]] = []
    if "cases" in src:
        for i, case in enumerate(src["cases"] or []):
            if not isinstance(case, dict) or "image" not in case or "label" not in case:
                raise InputError(cfg_path, f"source {name!r}: case {i} needs 'image' and 'label'")
            cases.append((root / case["image"], root / case["label"]))
    elif "image_glob" in src:
        old, new = src.get("label_from_image", ["_image", "_mask"])
        for img in sorted(root.glob(src["image_glob"])):
            cases.append((img, img.with_name(img.name.replace(old, new))))
    else:
        raise InputError(cfg_path, f"source {name!r}: give 'cases' or 'image_glob'")
    if not cases:
        raise InputError(cfg_path, f"source {name!r}: no cases found under {root}")
    for img, lbl in cases:
        for p in (img, lbl):
            if not p.exists():
                raise InputError(cfg_path, f"source {name!r}: missing file {p}")
    return cases


def load_pool_config(path: str | Path) -> PoolConfig:
    """Parse a pool config; raises :class:`InputError` (naming the config) on a missing dataset or file,
    an unknown modality or a remap entry that points at a class not in ``classes``."""
    path = Path(path)
    data = _load_mapping(path)
    for key in ("classes", "sources"):
        if not data.get(key):
            raise InputError(path, f"the pool config needs a non-empty '{key}' list")
    classes = [str(c) for c in data["classes"]]
    if len(set(classes)) != len(classes):
        raise InputError(path, f"duplicate class names in 'classes': {classes}")
    spacing = _triple(data.get("spacing_xyz_mm", (1.0, 1.0, 1.0)), float, path, "spacing_xyz_mm")
    patch = _triple(data.get("patch_size_zyx", (64, 64, 64)), int, path, "patch_size_zyx")
    share = float(data.get("foreground_share", 0.33))
    if not 0.0 <= share <= 1.0:
        raise InputError(path, f"'foreground_share' must be within [0, 1], got {share}")
    sources: list[SourceSpec] = []
    for i, src in enumerate(data["sources"]):
        name = str(src.get("name", f"source{i}"))
        if any(s.name == name for s in sources):
            raise InputError(path, f"duplicate source name {name!r}")
        modality = str(src.get("modality", "OTHER")).upper()
        if modality not in MODALITIES_3D:
            raise InputError(path, f"source {name!r}: modality {modality!r} is not one of {MODALITIES_3D}")
        if not src.get("labels"):
            raise InputError(path, f"source {name!r}: needs a 'labels' remap table (source id -> pool class)")
        labels: dict[int, str] = {}
        for sid, cls in src["labels"].items():
            try:
                sid_int = int(sid)
            except (TypeError, ValueError):
                raise InputError(path, f"source {name!r}: label id {sid!r} is not an integer") from None
            if sid_int <= 0:
                raise InputError(path, f"source {name!r}: label id {sid_int} must be positive (0 = background)")
            if str(cls) not in classes:
                raise InputError(
                    path,
                    f"source {name!r}: label {sid_int} maps to {cls!r}, which is not in classes {classes}",
                )
            labels[sid_int] = str(cls)
        unmapped = str(src.get("unmapped", "error"))
        if unmapped not in ("error", "background"):
            raise InputError(path, f"source {name!r}: 'unmapped' must be 'error' or 'background'")
        root = Path(src.get("root", "."))
        root = (root if root.is_absolute() else (path.parent / root)).resolve()
        cases = _source_cases(src, root, path, name)
        sources.append(SourceSpec(name, modality, cases, labels, unmapped))
    pad = data.get("pad_to_patch", False)
    if not isinstance(pad, bool):
        raise InputError(path, f"'pad_to_patch' must be true or false, got {pad!r}")
    known = {
        "name",
        "classes",
        "sources",
        "spacing_xyz_mm",
        "patch_size_zyx",
        "foreground_share",
        "pad_to_patch",
    }
    return PoolConfig(
        name=str(data.get("name", path.stem)),
        classes=classes,
        sources=sources,
        spacing_xyz_mm=spacing,
        patch_size_zyx=patch,
        foreground_share=share,
        pad_to_patch=pad,
        path=path,
        extra={k: v for k, v in data.items() if k not in known},
    )


def remap_labels(label: np.ndarray, source: SourceSpec, class_ids: dict[str, int], path) -> np.ndarray:
    """Source label ids -> pool ids; ids missing from the remap table raise unless ``unmapped: background``."""
    label = np.asarray(label)
    present = [int(v) for v in np.unique(label) if v != 0]
    missing = [v for v in present if v not in source.labels]
    if missing and source.unmapped == "error":
        raise InputError(
            path,
            f"label ids {missing} are not in the remap table of source {source.name!r} "
            f"(known: {sorted(source.labels)}); add them or set 'unmapped: background'",
        )
    lut = np.zeros(max(present + [0]) + 1, dtype=np.int16)
    for sid, cls in source.labels.items():
        if sid < len(lut):
            lut[sid] = class_ids[cls]
    if label.min() < 0:
        raise InputError(path, "negative label ids")
    return lut[label.astype(np.int64)]


def _read_case(image_path: Path, label_path: Path, modality: str):
    from medfoundry.io import read_image, read_mask

    image = read_image(image_path, modality=modality)
    if image.spatial_ndim != 3:
        raise InputError(image_path, f"the pool needs 3D volumes, got shape {image.array.shape}")
    mask = read_mask(label_path, reference=image)
    return image, mask


def build_pool(config: PoolConfig, out_dir: str | Path, overwrite: bool = False) -> dict:
    """Read, remap and preprocess every case of the pool into ``out_dir`` (one .npz per case + pool.json).

    CT statistics are computed over the foreground voxels of all CT sources together (nnU-Net style).
    Everything is checked (files, label ids, patch fit) before anything is written, and the pool is
    written into a temporary folder that replaces ``out_dir`` at the end. Returns the pool index.
    """
    out_dir = check_writable(out_dir, overwrite, folder=True, create=False)  # before any work
    if out_dir.exists() and not (out_dir / "pool.json").is_file():
        raise InputError(out_dir, "exists and is not a preprocessed pool; choose a new folder")
    class_ids = config.class_ids
    target_zyx = tuple(reversed(config.spacing_xyz_mm))
    # pass 1: read, remap and check (kept in memory: pools here are small); CT foreground statistics
    loaded = []
    ct_values = []
    all_cases = [(s, img, lbl) for s in config.sources for img, lbl in s.cases]
    for source, img_path, lbl_path in tqdm(all_cases, desc="reading pool", unit="case"):
        image, mask = _read_case(img_path, lbl_path, source.modality)
        pool_label = remap_labels(mask.array, source, class_ids, lbl_path)
        shape = target_shape(image.array.shape, image.spacing_zyx, target_zyx)
        if config.pad_to_patch:
            shape = tuple(max(n, p) for n, p in zip(shape, config.patch_size_zyx, strict=True))
        check_patch_fits(shape, config.patch_size_zyx, str(img_path))
        if source.modality == "CT":
            fg = image.array[pool_label > 0]
            step = max(1, fg.size // 100_000)
            ct_values.append(fg[::step])
        loaded.append((source, img_path, image, pool_label))
    ct = ct_statistics(np.concatenate(ct_values)) if ct_values else None
    weights = config.sampling_weights()
    with atomic_dir(out_dir, overwrite=overwrite) as work:
        (work / "cases").mkdir()
        entries = []
        for (source, img_path, image, pool_label), weight in tqdm(
            list(zip(loaded, weights, strict=True)), desc="preprocessing", unit="case"
        ):
            arr, lbl = preprocess_volume(
                image.array, image.spacing_zyx, target_zyx, source.modality, ct, label=pool_label
            )
            if config.pad_to_patch:
                arr, lbl = pad_to(arr, lbl, config.patch_size_zyx)
            case_id = f"{source.name}__{_case_stem(img_path)}"
            np.savez_compressed(
                work / "cases" / f"{case_id}.npz", image=arr.astype(np.float32), label=lbl.astype(np.int16)
            )
            entries.append(
                {
                    "id": case_id,
                    "file": f"cases/{case_id}.npz",
                    "source": source.name,
                    "image": str(img_path),
                    "modality": source.modality,
                    "annotated": [class_ids[c] for c in source.annotated],
                    "weight": weight,
                    "shape": list(arr.shape),
                    "present": sorted(int(v) for v in np.unique(lbl) if v),
                }
            )
        index = {
            "format": POOL_FORMAT,
            "name": config.name,
            "classes": config.classes,
            "spacing_xyz_mm": list(config.spacing_xyz_mm),
            "patch_size_zyx": list(config.patch_size_zyx),
            "foreground_share": config.foreground_share,
            "ct_stats": ct.to_dict() if ct else None,
            "sources": {
                s.name: {"modality": s.modality, "n": len(s.cases), "annotated": s.annotated} for s in config.sources
            },
            "cases": entries,
        }
        (work / "pool.json").write_text(json.dumps(index, indent=2))
    return index


def pad_to(image: np.ndarray, label: np.ndarray, size: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Pad a volume smaller than ``size`` (centred; image with its minimum, label with background)."""
    extra = [max(0, s - n) for n, s in zip(image.shape, size, strict=True)]
    pads = [(e // 2, e - e // 2) for e in extra]
    if not any(a or b for a, b in pads):
        return image, label
    return (
        np.pad(image, pads, constant_values=float(image.min())),
        np.pad(label, pads, constant_values=0),
    )


def _case_stem(path: Path) -> str:
    name = split_suffix(path)[0]
    parent = path.parent.name
    return f"{parent}_{name}" if parent else name


def load_pool_index(pool_dir: str | Path) -> dict:
    """The ``pool.json`` written by :func:`build_pool` (``medfoundry pool``)."""
    path = Path(pool_dir) / "pool.json"
    if not path.is_file():
        raise InputError(pool_dir, "not a preprocessed pool (no pool.json); run 'medfoundry pool' first")
    try:
        index = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(path, f"cannot read the pool index ({type(exc).__name__})") from None
    if not isinstance(index, dict) or index.get("format") != POOL_FORMAT:
        raise InputError(path, "not a medfoundry pool index (unknown format)")
    return index


class PoolDataset(Dataset):
    """Random training patches of a preprocessed pool: item ``i`` is a fresh patch of case ``i``.

    Returns dicts with ``image`` (1, z, y, x) float32, ``target`` (K, z, y, x) float32 (one channel per pool
    class) and ``annotated`` (K,) bool (the classes the case's source labels).
    """

    def __init__(
        self,
        pool_dir: str | Path,
        patch_size_zyx: tuple[int, int, int] | None = None,
        foreground_share: float | None = None,
        mirror: bool = True,
    ):
        self.pool_dir = Path(pool_dir)
        self.index = load_pool_index(self.pool_dir)
        self.classes: list[str] = list(self.index["classes"])
        self.patch_size = tuple(patch_size_zyx or self.index["patch_size_zyx"])
        self.foreground_share = self.index["foreground_share"] if foreground_share is None else float(foreground_share)
        self.mirror = mirror
        self.cases = self.index["cases"]
        for case in self.cases:
            check_patch_fits(tuple(case["shape"]), self.patch_size, case["image"])
        self._cache: dict[int, tuple] = {}

    def __len__(self) -> int:
        return len(self.cases)

    @property
    def weights(self) -> list[float]:
        """Per-case sampling probabilities (1/sqrt(n) of the source)."""
        return [c["weight"] for c in self.cases]

    def _load(self, i: int):
        if i not in self._cache:
            case = self.cases[i]
            path = self.pool_dir / case["file"]
            try:
                with np.load(path) as z:
                    image, label = z["image"], z["label"]
            except (OSError, ValueError, KeyError) as exc:
                raise InputError(path, f"cannot read the preprocessed case ({exc}); rebuild the pool") from None
            self._cache[i] = (image, label, class_locations(label, case["present"], seed=i))
        return self._cache[i]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        image, label, locations = self._load(i)
        rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,)).item()))
        img, lbl = sample_patch(
            image, label, self.patch_size, rng, locations, self.foreground_share, self.cases[i]["image"]
        )
        if self.mirror:
            axes = [a for a in range(3) if rng.random() < 0.5]
            if axes:
                img, lbl = np.flip(img, axes), np.flip(lbl, axes)
        k = len(self.classes)
        target = np.stack([lbl == c for c in range(1, k + 1)]).astype(np.float32)
        annotated = np.zeros(k, dtype=bool)
        annotated[[c - 1 for c in self.cases[i]["annotated"]]] = True
        return {
            "image": torch.from_numpy(np.ascontiguousarray(img)[None].astype(np.float32)),
            "target": torch.from_numpy(target),
            "annotated": torch.from_numpy(annotated),
        }
