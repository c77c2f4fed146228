"""Per-object prompts for whole images and volumes, and the prompt-file format of ``medfoundry segment --boxes``."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medfoundry.errors import InputError
from medfoundry.io.numbers import MAX_COORDINATE


@dataclass
class ObjectPrompt:
    """The prompt for one object (one output label).

    2D images: ``box`` ``[x0, y0, x1, y1]`` and/or ``points`` (P, 2) ``(x, y)``.
    3D volumes: ``box`` ``[x0, y0, z0, x1, y1, z1]`` (segmented on its middle slice, then propagated within
    z0..z1), or ``points`` (P, 3) ``(x, y, z)`` on one slice (propagated until the mask vanishes), or
    ``slice_boxes`` ``{z: [x0, y0, x1, y1]}`` (each slice segmented with its own box, no propagation).
    ``point_labels``: 1 positive, 0 negative (default all positive). Coordinates are voxel indices.
    """

    box: np.ndarray | None = None
    points: np.ndarray | None = None
    point_labels: np.ndarray | None = None
    slice_boxes: dict[int, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.box is not None:
            self.box = check_box(self.box)
        if self.points is not None:
            self.points = np.asarray(self.points, dtype=np.float32)
            if not np.isfinite(self.points).all():
                raise InputError(None, "point coordinates must be finite numbers (a voxel index)")
            self.points = self.points.reshape(-1, self.points.shape[-1])
            labels = np.ones(len(self.points)) if self.point_labels is None else self.point_labels
            self.point_labels = np.asarray(labels, dtype=np.int64).ravel()
            if len(self.point_labels) != len(self.points):
                raise InputError(None, f"{len(self.points)} points but {len(self.point_labels)} point labels")
        self.slice_boxes = {int(z): check_box(b) for z, b in self.slice_boxes.items()}
        if self.box is None and self.points is None and not self.slice_boxes:
            raise InputError(None, "an object needs a box, points or per-slice boxes")


def check_box(values, path: str | Path | None = None, need_area: bool = False) -> np.ndarray:
    """A box as float32 ``[x0, y0, x1, y1]`` or ``[x0, y0, z0, x1, y1, z1]`` (inclusive voxel indices); refused
    when a value is not finite or absurdly large, or the box is inverted (x1 < x0, y1 < y0, z1 < z0). With
    ``need_area`` (boxes typed by a user) a box without area (x0 == x1 or y0 == y1) is refused too."""
    raw = np.asarray(values, dtype=np.float64).ravel()
    shown = "[" + " ".join(f"{v:g}" for v in raw) + "]"
    if not np.isfinite(raw).all():
        raise InputError(path, f"box {shown}: every coordinate must be a finite number")
    if np.abs(raw).max(initial=0) > MAX_COORDINATE:
        raise InputError(path, f"box {shown}: coordinates are voxel indices; {np.abs(raw).max():g} is far too large")
    if raw.size in (4, 6):
        half = raw.size // 2
        lo, hi = raw[:half], raw[half:]
        if hi[0] < lo[0] or hi[1] < lo[1]:
            raise InputError(path, f"box {shown} is inverted (x1 < x0 or y1 < y0): give x0 <= x1 and y0 <= y1")
        if need_area and (hi[0] == lo[0] or hi[1] == lo[1]):
            raise InputError(path, f"box {shown} has no area (zero width or height): give x0 < x1 and y0 < y1")
        if half == 3 and hi[2] < lo[2]:
            raise InputError(path, f"box {shown} has z1 < z0")
    return raw.astype(np.float32)


def objects_from_prompts(
    boxes: list | None = None,
    points: list | None = None,
    negatives: list | None = None,
    prompt_file: str | Path | None = None,
    where: str | Path | None = None,
) -> list[ObjectPrompt]:
    """The objects of the CLI's prompt options: one per box (4 or 6 numbers), those of ``prompt_file``, and one
    object from all positive ``points`` plus ``negatives`` (each 2 or 3 numbers). ``where`` names the source in
    messages (a manifest row; ``None`` for the command line)."""
    boxes, points, negatives = list(boxes or []), list(points or []), list(negatives or [])
    objects = []
    for box in boxes:
        if len(box) not in (4, 6):
            raise InputError(where, f"`box` takes 4 (2D) or 6 (3D) numbers, got {len(box)}: {list(box)}")
        objects.append(ObjectPrompt(box=check_box(box, where or "`box`", need_area=True)))
    if prompt_file:
        objects.extend(load_prompt_file(prompt_file))
    if negatives and not points:
        raise InputError(where, "`negative` needs at least one `point`")
    if points:
        coords = points + negatives
        if len({len(c) for c in coords}) != 1 or len(coords[0]) not in (2, 3):
            raise InputError(where, "every `point` / `negative` takes the same 2 (X Y) or 3 (X Y Z) numbers")
        labels = [1] * len(points) + [0] * len(negatives)
        objects.append(ObjectPrompt(points=np.asarray(coords, dtype=np.float32), point_labels=np.asarray(labels)))
    if not objects:
        raise InputError(where, "give at least one `box`, `boxes` FILE or `point`")
    return objects


def load_prompt_file(path: str | Path) -> list[ObjectPrompt]:
    """Objects from a prompt file.

    * ``.json``: a list whose items are boxes (4 or 6 numbers) or objects
      ``{"box": [...], "points": [[x, y(, z)], ...], "negative": [[...]], "slice_boxes": {"z": [x0, y0, x1, y1]}}``;
      or ``{"boxes": [...]}``.
    * ``.csv`` / ``.txt``: one box per line (4 or 6 numbers, comma or space separated; a header line is skipped).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "prompt file not found")
    try:
        if path.suffix.lower() == ".json":
            return _objects_from_json(json.loads(path.read_text()), path)
        rows = []
        for row in csv.reader(path.read_text().splitlines()):
            cells = [c for part in row for c in part.split()]
            if not cells or cells[0].startswith("#"):
                continue
            try:
                rows.append([float(c) for c in cells])
            except ValueError:
                if rows:  # only the first line may be a header
                    raise
        return [ObjectPrompt(box=_box(r, path)) for r in rows] or _empty(path)
    except (ValueError, TypeError, KeyError, json.JSONDecodeError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(path, f"cannot read prompts ({exc})") from exc


def _empty(path: Path) -> list[ObjectPrompt]:
    raise InputError(path, "the prompt file holds no boxes or points")


def _box(values, path: Path) -> np.ndarray:
    box = np.asarray(values, dtype=np.float64).ravel()
    if box.size not in (4, 6):
        raise InputError(path, f"a box has 4 (2D) or 6 (3D) numbers, got {box.size}: {values}")
    return check_box(box, path, need_area=True)


def _objects_from_json(data, path: Path) -> list[ObjectPrompt]:
    if isinstance(data, dict):
        data = data.get("objects", data.get("boxes"))
    if not isinstance(data, list):
        raise InputError(path, "expected a list of boxes or objects, or {'boxes': [...]}")
    objects = []
    for item in data:
        if isinstance(item, dict):
            pos = item.get("points") or []
            neg = item.get("negative") or []
            points = np.asarray(list(pos) + list(neg), dtype=np.float32) if pos or neg else None
            labels = np.array([1] * len(pos) + [0] * len(neg)) if points is not None else None
            objects.append(
                ObjectPrompt(
                    box=None if item.get("box") is None else _box(item["box"], path),
                    points=points,
                    point_labels=labels,
                    slice_boxes={int(z): _box(b, path) for z, b in (item.get("slice_boxes") or {}).items()},
                )
            )
        else:
            objects.append(ObjectPrompt(box=_box(item, path)))
    return objects or _empty(path)
