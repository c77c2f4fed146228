"""The state behind ``medfoundry view``: one image, its label map, the predictor and the per-slice embeddings.

Everything the HTTP API does is a method here, so it can be used (and tested) without a server. Prompts go through
the same functions as ``medfoundry segment`` (:func:`medfoundry.inference.propagation.segment_slice`,
:func:`~medfoundry.inference.propagation.propagate` on :func:`medfoundry.preprocessing.normalize_intensity`'s output),
so a box drawn in the viewer gives the mask :func:`medfoundry.api.segment_image` gives for the same box.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from medfoundry.errors import InputError, OutputExistsError
from medfoundry.inference.predictor import LiteMedSAMPredictor, Prompts
from medfoundry.inference.prompts import check_box
from medfoundry.inference.propagation import SliceEmbeddings, propagate, segment_slice
from medfoundry.io import MedicalImage, write_image, write_mask
from medfoundry.io.numbers import check_coordinates
from medfoundry.preprocessing.intensity import CT_WINDOWS, DEFAULT_PERCENTILES, IntensityWindow, normalize_intensity

AXES = {"z": 0, "y": 1, "x": 2}  # array axis of a slice; in-slice coordinates are (u, v) = the other two, x first
AXIS_COORDS = {"z": ("x", "y"), "y": ("x", "z"), "x": ("y", "z")}
MAX_UNDO = 30
MAX_POINTS = 64  # points in one prompt: a person clicks a handful; thousands only cost memory and time


class ViewerSession:
    """Holds an image, its editable label map and the model; every method is safe to call from several threads."""

    def __init__(
        self,
        image: MedicalImage,
        out: str | Path | None = None,
        labels: MedicalImage | None = None,
        predictor: LiteMedSAMPredictor | Callable[[], LiteMedSAMPredictor] | None = None,
        window: IntensityWindow | None = None,
        threshold: float = 0.5,
        max_cached_slices: int = 256,
    ) -> None:
        if image.is_rgb or image.spatial_ndim not in (2, 3):
            raise InputError(image.path, f"the viewer shows grey 2D images and 3D volumes, got {image.array.shape}")
        self.image = image
        self.out = None if out is None else Path(out)
        self.window = window or IntensityWindow()
        self.threshold = threshold
        self.max_cached_slices = max_cached_slices
        normalized = normalize_intensity(image, self.window)
        self.volume = normalized if image.spatial_ndim == 3 else normalized[None]  # (Z, Y, X) always
        self.labels = np.zeros(self.volume.shape, dtype=np.uint16)
        if labels is not None:
            if labels.spatial_shape != image.spatial_shape:
                raise InputError(labels.path, f"labels grid {labels.spatial_shape} != image {image.spatial_shape}")
            self.labels[...] = labels.array.reshape(self.volume.shape)
        self._predictor = predictor
        self._embeddings: dict[str, SliceEmbeddings] = {}
        self._undo: list[tuple[np.ndarray, np.ndarray, str]] = []
        self._lock = threading.RLock()

    # ----------------------------------------------------------------------------------------------- model
    @property
    def predictor(self) -> LiteMedSAMPredictor:
        """The predictor, built on first use when a factory was given."""
        with self._lock:
            if self._predictor is None:
                from medfoundry.api import make_predictor  # noqa: PLC0415 - heavy, only when needed

                self._predictor = make_predictor()
            elif not isinstance(self._predictor, LiteMedSAMPredictor):
                self._predictor = self._predictor()
            return self._predictor

    def _slices(self, axis: str) -> SliceEmbeddings:
        if axis not in self._embeddings:
            view = self.volume if axis == "z" else np.ascontiguousarray(np.moveaxis(self.volume, AXES[axis], 0))
            self._embeddings[axis] = SliceEmbeddings(self.predictor, view, max_slices=self.max_cached_slices)
        return self._embeddings[axis]

    # ----------------------------------------------------------------------------------------------- info
    def info(self) -> dict:
        """Shape, geometry, modality, window presets and the labels present."""
        img = self.image
        shape = self.volume.shape
        return {
            "image": Path(img.path).name if img.path else None,
            "out": str(self.out) if self.out else None,
            "modality": img.modality,
            "shape_zyx": list(shape),
            "spacing_xyz": list(img.spacing) + ([1.0] if img.spatial_ndim == 2 else []),
            "ras_to_voxel": self.ras_to_voxel().tolist(),
            "windows": self.window_presets(),
            "value_unit": "SUV" if img.modality == "PET" else ("HU" if img.modality == "CT" else ""),
            "labels": [int(v) for v in np.unique(self.labels) if v],
            "cached_slices": {a: len(e) for a, e in self._embeddings.items()},
        }

    def ras_to_voxel(self) -> np.ndarray:
        """4x4 matrix from NIfTI world coordinates (RAS mm, as NiiVue reports them) to voxel indices (x, y, z)."""
        img = self.image
        nd = img.spatial_ndim
        direction = np.eye(3)
        direction[:nd, :nd] = np.asarray(img.direction).reshape(nd, nd)
        spacing = np.ones(3)
        spacing[:nd] = img.spacing
        origin = np.zeros(3)
        origin[:nd] = img.origin
        index_to_lps = direction @ np.diag(spacing)
        lps_to_index = np.linalg.inv(index_to_lps)
        ras_to_lps = np.diag([-1.0, -1.0, 1.0])
        out = np.eye(4)
        out[:3, :3] = lps_to_index @ ras_to_lps
        out[:3, 3] = -lps_to_index @ origin
        return out

    def window_presets(self) -> list[dict]:
        """Display windows: the CLI's default for the modality first, then the usual alternatives."""
        img = self.image
        default_low, default_high = self.window.bounds_for(img.modality, img.array)
        presets = [{"name": f"default ({self.window.describe(img.modality)})", "min": default_low, "max": default_high}]
        if img.modality == "CT":
            for name, (level, width) in CT_WINDOWS.items():
                presets.append({"name": f"CT {name}", "min": level - width / 2, "max": level + width / 2})
        elif img.modality == "PET":
            for high in (5.0, 10.0, 20.0):
                presets.append({"name": f"SUV 0-{high:g}", "min": 0.0, "max": high})
        for lo, hi in (DEFAULT_PERCENTILES, (1.0, 99.0), (0.0, 100.0)):
            low, high = IntensityWindow(percentiles=(lo, hi)).bounds_for("MR", img.array)
            presets.append({"name": f"percentiles {lo:g}-{hi:g}", "min": low, "max": high})
        return [{**p, "min": float(p["min"]), "max": float(p["max"])} for p in presets]

    # ----------------------------------------------------------------------------------------------- editing
    def _check_object(self, label: int) -> int:
        if not isinstance(label, int) or not 1 <= label <= np.iinfo(self.labels.dtype).max:
            raise InputError(None, f"object label must be an integer in 1..65535, got {label!r}")
        return label

    def _check_index(self, axis: str, index: int) -> int:
        if axis not in AXES:
            raise InputError(None, f"axis must be one of {sorted(AXES)}, got {axis!r}")
        if axis != "z" and self.image.spatial_ndim == 2:
            raise InputError(None, "a 2D image has one slice: use axis 'z', index 0")
        n = self.volume.shape[AXES[axis]]
        if not isinstance(index, int) or not 0 <= index < n:
            raise InputError(None, f"slice {index!r} is outside 0..{n - 1} along {axis}")
        return index

    def _push_undo(self, before: np.ndarray, what: str) -> None:
        changed = np.flatnonzero(before != self.labels)
        if changed.size:
            self._undo.append((changed, before.ravel()[changed], what))
            del self._undo[:-MAX_UNDO]

    def prompt(
        self,
        label: int,
        index: int,
        axis: str = "z",
        box: list[float] | None = None,
        points: list[list[float]] | None = None,
        point_labels: list[int] | None = None,
    ) -> dict:
        """Segment one slice from a box and/or points (in-slice coordinates, see ``AXIS_COORDS``) into ``label``.

        The object's voxels on that slice are replaced by the new mask. Returns the voxel count and timings.
        """
        label = self._check_object(label)
        index = self._check_index(axis, index)
        if box is None and not points:
            raise InputError(None, "a prompt needs a box [u0, v0, u1, v1] and/or points [[u, v], ...]")
        if box is not None:  # the CLI's box check: 4 finite numbers, not inverted
            box = check_box(check_coordinates(box, "box", 4), "box")
        if points:
            if len(points) > MAX_POINTS:
                raise InputError("points", f"at most {MAX_POINTS} points per prompt, got {len(points)}")
            pts = np.asarray([check_coordinates(p, f"points[{i}]", 2) for i, p in enumerate(points)], np.float32)
            labs = np.ones(len(pts), dtype=np.int64) if point_labels is None else np.asarray(point_labels)
            if labs.shape != (len(pts),) or not np.isin(labs, (0, 1)).all():
                raise InputError(None, "point_labels: one 0 (negative) or 1 (positive) per point")
        else:
            pts = labs = None
        prompts = Prompts(
            boxes=None if box is None else box[None],
            points=None if pts is None else pts[None],
            point_labels=None if labs is None else labs[None],
        )
        with self._lock:
            embeddings = self._slices(axis)
            prompts.validate(embeddings.volume.shape[1:], self.image.path)
            start = time.perf_counter()
            computed_before = embeddings.computed
            mask = segment_slice(self.predictor, embeddings, index, prompts, self.threshold)[0]
            seconds = time.perf_counter() - start
            before = self.labels.copy()
            plane = np.moveaxis(self.labels, AXES[axis], 0)[index]  # a view: writes go to self.labels
            plane[plane == label] = 0
            plane[mask] = label
            self._push_undo(before, f"prompt {label} on {axis}={index}")
            return {
                "label": label,
                "axis": axis,
                "index": index,
                "voxels": int(mask.sum()),
                "seconds": round(seconds, 4),
                "embedded": embeddings.computed > computed_before,
            }

    def propagate(
        self,
        label: int,
        box: list[float] | None = None,
        start_z: int | None = None,
        from_slice: int | None = None,
        z_range: list[int] | None = None,
    ) -> dict:
        """Segment an object in 3D as ``medfoundry segment`` does.

        ``box`` ``[x0, y0, z0, x1, y1, z1]``: segmented on slice ``start_z`` (default the middle slice, as
        ``segment``), then propagated slice by slice within z0..z1 until the mask vanishes. Or ``from_slice``:
        propagate the object's current mask on that axial slice within ``z_range`` (default the whole volume).
        The object's other voxels are replaced.
        """
        label = self._check_object(label)
        depth = self.volume.shape[0]
        if box is not None:  # the CLI's box check (6 finite numbers, not inverted), before the model is asked for
            box = check_box(check_coordinates(box, "box [x0, y0, z0, x1, y1, z1]", 6), "box")
        with self._lock:
            embeddings = self._slices("z")
            start = time.perf_counter()
            computed_before = embeddings.computed
            mask3d = np.zeros(self.volume.shape, dtype=bool)
            if box is not None:
                b = box
                x0, y0, z0, x1, y1, z1 = b.tolist()
                if z1 < 0 or z0 > depth - 1:
                    raise InputError("box", f"{b.tolist()} lies outside slices 0..{depth - 1}")
                prompts = Prompts(boxes=np.array([[x0, y0, x1, y1]], dtype=np.float32))
                prompts.validate(self.volume.shape[1:], self.image.path)
                z_range = (max(0, int(round(z0))), min(depth - 1, int(round(z1))))
                z = (z_range[0] + z_range[1]) // 2 if start_z is None else self._check_index("z", start_z)
                if not z_range[0] <= z <= z_range[1]:
                    raise InputError(None, f"start_z {z} is outside the box's slices {z_range}")
                mask3d[z] = segment_slice(self.predictor, embeddings, z, prompts, self.threshold)[0]
            elif from_slice is not None:
                z = self._check_index("z", from_slice)
                if z_range is None:
                    z_range = (0, depth - 1)
                else:
                    if len(z_range) != 2:
                        raise InputError(None, f"z_range takes [z0, z1], got {z_range}")
                    z_range = (self._check_index("z", z_range[0]), self._check_index("z", z_range[1]))
                if not z_range[0] <= z <= z_range[1]:
                    raise InputError(None, f"from_slice {z} is outside z_range {list(z_range)}")
                mask3d[z] = self.labels[z] == label
                if not mask3d[z].any():
                    raise InputError(None, f"object {label} has no voxels on slice {z} to propagate")
            else:
                raise InputError(None, "propagate needs a 3D box or from_slice")
            propagate(self.predictor, embeddings, z, mask3d[z], z_range, mask3d, self.threshold)
            seconds = time.perf_counter() - start
            before = self.labels.copy()
            self.labels[self.labels == label] = 0
            self.labels[mask3d] = label
            self._push_undo(before, f"propagate {label}")
            slices = np.flatnonzero(mask3d.any(axis=(1, 2)))
            return {
                "label": label,
                "voxels": int(mask3d.sum()),
                "slices": [int(slices.min()), int(slices.max())] if slices.size else [],
                "seconds": round(seconds, 4),
                "slices_embedded": embeddings.computed - computed_before,
            }

    def erase(self, label: int, axis: str | None = None, index: int | None = None, everywhere: bool = False) -> dict:
        """Remove an object on one slice (``axis``, ``index``) or, with ``everywhere``, on every slice."""
        label = self._check_object(label)
        if (index is None) != everywhere:
            raise InputError(None, 'erase needs the slice (axis, index) or everywhere=True ("all": true)')
        with self._lock:
            before = self.labels.copy()
            if everywhere:
                self.labels[self.labels == label] = 0
            else:
                index = self._check_index(axis or "z", index)
                plane = np.moveaxis(self.labels, AXES[axis or "z"], 0)[index]
                plane[plane == label] = 0
            removed = int((before == label).sum() - (self.labels == label).sum())
            self._push_undo(before, f"erase {label}")
            return {"label": label, "removed": removed}

    def undo(self) -> dict:
        """Revert the last change (prompt, propagate or erase)."""
        with self._lock:
            if not self._undo:
                raise InputError(None, "nothing to undo")
            changed, values, what = self._undo.pop()
            self.labels.ravel()[changed] = values
            return {"undone": what, "remaining": len(self._undo)}

    # ----------------------------------------------------------------------------------------------- output
    def label_image(self) -> MedicalImage:
        """The label map on the image grid."""
        return self.image.with_array(self.labels.reshape(self.image.spatial_shape).copy(), modality="OTHER")

    def stats(self) -> list[dict]:
        """Per label: voxel count, volume (mL; area for 2D) and, for PET, SUVmax / SUVmean."""
        rows = []
        values = self.image.array.reshape(self.volume.shape)
        for value in (int(v) for v in np.unique(self.labels) if v):
            inside = self.labels == value
            n = int(inside.sum())
            row = {"label": value, "voxels": n, "volume_ml": round(n * self.image.voxel_volume_ml, 4)}
            if self.image.modality == "PET":
                row["suv_max"] = round(float(values[inside].max()), 4)
                row["suv_mean"] = round(float(values[inside].mean()), 4)
            rows.append(row)
        return rows

    def save(self, confirm: bool = False) -> dict:
        """Write the label map to the output path (same writer as the CLI); an existing file needs ``confirm``."""
        if self.out is None:
            raise InputError(None, "no output path: start the viewer with --out FILE to save")
        with self._lock:
            if self.out.exists() and not confirm:
                raise OutputExistsError(self.out)
            path = write_mask(self.label_image(), self.out, reference=self.image, overwrite=confirm)
            return {"path": str(path), "labels": [int(v) for v in np.unique(self.labels) if v]}

    def image_nifti(self) -> bytes:
        """The image as NIfTI bytes (written by medfoundry's writer, so any input format can be shown)."""
        return _nifti_bytes(lambda p: write_image(self.image, p))

    def labels_nifti(self) -> bytes:
        """The current label map as NIfTI bytes on the image grid."""
        with self._lock:
            labels = self.label_image()
        return _nifti_bytes(lambda p: write_mask(labels, p, reference=self.image))


def _nifti_bytes(write: Callable[[Path], object]) -> bytes:
    with tempfile.TemporaryDirectory(prefix="medfoundry-view-") as tmp:
        path = Path(tmp) / "volume.nii.gz"
        write(path)
        return path.read_bytes()
