"""MedSAM npz files: ``imgs`` / ``gts`` / ``boxes`` / ``spacing`` in, ``segs`` out.

The MedSAM pipelines (and the CVPR 2024 MedSAM-on-laptop challenge) save ``spacing`` as SimpleITK's
``GetSpacing()``, i.e. in (x, y, z) order, next to (z, y, x) arrays. :class:`NpzCase` gives it in array
order; files written here keep the MedSAM convention so that both directions agree.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from medfoundry.errors import InputError
from medfoundry.io.atomic import atomic_path
from medfoundry.io.checks import check_image_array, to_labels
from medfoundry.io.image import MedicalImage


@dataclass
class NpzCase:
    """One MedSAM npz case. ``spacing`` is in array order ((z, y, x) or (y, x)); ``boxes`` in pixels."""

    imgs: np.ndarray
    gts: np.ndarray | None
    boxes: np.ndarray | None
    spacing: tuple[float, ...]
    origin: tuple[float, ...] = ()
    direction: tuple[float, ...] = ()
    path: str | None = None

    @property
    def is_rgb(self) -> bool:
        """True for a 2D colour case (imgs of shape (H, W, 3))."""
        return self.imgs.ndim == 3 and self.imgs.shape[-1] == 3 and len(self.spacing) == 2

    def to_image(self, modality: str | None = None) -> MedicalImage:
        """``imgs`` as a MedicalImage (spacing converted back to ITK (x, y, z) order)."""
        return MedicalImage(
            array=self.imgs,
            spacing=tuple(reversed(self.spacing)),
            origin=self.origin,
            direction=self.direction,
            modality=modality or ("RGB" if self.is_rgb else "OTHER"),
            path=self.path,
            meta={"rgb": True} if self.is_rgb else {},
        )

    def gts_image(self) -> MedicalImage | None:
        """``gts`` on the image grid (None when the file has no ground truth)."""
        if self.gts is None:
            return None
        return self.to_image().with_array(self.gts)


def _load(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise InputError(path, "no such file")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except ValueError as exc:
        raise InputError(path, f"the npz holds Python objects, which are not loaded for safety ({exc})") from exc
    except (zipfile.BadZipFile, OSError, EOFError, KeyError) as exc:
        raise InputError(path, f"unreadable or truncated npz file ({type(exc).__name__}: {exc})") from exc


def read_npz_case(path: str | Path, spacing_order: Literal["xyz", "zyx"] = "xyz") -> NpzCase:
    """Read a MedSAM npz; ``spacing_order`` says how the file stores ``spacing`` (MedSAM: "xyz")."""
    path = Path(path)
    data = _load(path)
    if "imgs" not in data:
        raise InputError(path, f"no 'imgs' array in the npz (keys: {sorted(data)})")
    raw = data["imgs"]
    if raw.size == 0:
        raise InputError(path, f"the image is empty ('imgs' has shape {raw.shape})")
    if raw.ndim == 4:
        raise InputError(path, f"4D image with shape {raw.shape}, give one 3D volume")
    if raw.ndim not in (2, 3):
        raise InputError(path, f"'imgs' has shape {raw.shape}: expected (H, W), (H, W, 3) or (D, H, W)")
    rgb = raw.ndim == 3 and raw.shape[-1] == 3
    nd = 2 if raw.ndim == 2 or rgb else 3
    imgs = check_image_array(raw, path, rgb=rgb)
    spatial = imgs.shape[:nd]
    spacing = _spacing(data.get("spacing"), nd, spacing_order, path)
    gts = data.get("gts")
    if gts is not None:
        if gts.shape != spatial:
            raise InputError(path, f"'gts' has shape {gts.shape}, 'imgs' {imgs.shape}")
        gts = to_labels(gts, path)
    boxes = data.get("boxes")
    if boxes is not None:
        boxes = np.asarray(boxes, dtype=np.float64)
        width = 2 * nd
        if boxes.ndim == 1 and boxes.size == width:
            boxes = boxes[None]
        if boxes.ndim != 2 or boxes.shape[1] != width:
            form = "[x0, y0, x1, y1]" if nd == 2 else "[x0, y0, z0, x1, y1, z1]"
            raise InputError(path, f"'boxes' has shape {boxes.shape}; a {nd}D case needs (N, {width}) rows {form}")
    origin = _geometry(data.get("origin"), nd, path, "origin")
    direction = _geometry(data.get("direction"), nd * nd, path, "direction")
    return NpzCase(imgs, gts, boxes, spacing, origin, direction, str(path))


def _spacing(value, nd: int, order: str, path: Path) -> tuple[float, ...]:
    if value is None:
        return (1.0,) * nd
    values = [float(v) for v in np.asarray(value, dtype=np.float64).ravel()]
    if nd == 2 and len(values) == 3:
        values = values[:2] if order == "xyz" else values[1:]  # a 2D slice saved with its volume's spacing
    if len(values) != nd:
        raise InputError(path, f"'spacing' has {len(values)} values for a {nd}D image")
    if any(not np.isfinite(v) or v <= 0 for v in values):
        raise InputError(path, f"'spacing' must be positive, got {values}")
    return tuple(reversed(values)) if order == "xyz" else tuple(values)


def _geometry(value, size: int, path: Path, name: str) -> tuple[float, ...]:
    if value is None:
        return ()
    values = tuple(float(v) for v in np.asarray(value, dtype=np.float64).ravel())
    if len(values) != size:
        raise InputError(path, f"'{name}' has {len(values)} values, expected {size}")
    return values


def _write_npz(path: str | Path, arrays: dict[str, np.ndarray], overwrite: bool) -> Path:
    path = Path(path)
    if path.suffix.lower() != ".npz":
        raise InputError(path, "an npz output needs the .npz suffix")
    with atomic_path(path, overwrite) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
    return path


def write_npz_segs(path: str | Path, segs: np.ndarray, overwrite: bool = False) -> Path:
    """Write a challenge-format result: key ``segs`` with integer labels in the smallest unsigned dtype."""
    return _write_npz(path, {"segs": to_labels(segs, path)}, overwrite)


def write_npz_image(img: MedicalImage, path: str | Path, key: str = "imgs", overwrite: bool = False) -> Path:
    """Write ``img.array`` under ``key`` with ``spacing`` (MedSAM (x, y, z) order), origin and direction."""
    return _write_npz(
        path,
        {
            key: img.array,
            "spacing": np.asarray(img.spacing, dtype=np.float64),
            "origin": np.asarray(img.origin, dtype=np.float64),
            "direction": np.asarray(img.direction, dtype=np.float64),
        },
        overwrite,
    )


def read_npz_image(path: str | Path, modality: str | None = None, key: str = "imgs") -> MedicalImage:
    """One array of an npz (``imgs`` by default) as a MedicalImage with the file's geometry."""
    path = Path(path)
    if key == "imgs":
        return read_npz_case(path).to_image(modality)
    data = _load(path)
    if key not in data:
        raise InputError(path, f"no '{key}' array in the npz (keys: {sorted(data)})")
    array = data[key]
    nd = 2 if array.ndim == 2 else 3
    if array.ndim > 3:
        raise InputError(path, f"'{key}' has shape {array.shape}: 4D image, give one 3D volume")
    return MedicalImage(
        array=check_image_array(array, path),
        spacing=tuple(reversed(_spacing(data.get("spacing"), nd, "xyz", path))),
        origin=_geometry(data.get("origin"), nd, path, "origin"),
        direction=_geometry(data.get("direction"), nd * nd, path, "direction"),
        modality=modality or "OTHER",
        path=str(path),
    )
