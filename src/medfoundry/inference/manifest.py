"""Many scans in one ``medfoundry segment`` run: the rows of a CSV / JSON manifest, or every image of a folder.

A row names an ``image``, its prompts (the CLI's: ``box``, ``point``, ``negative``, ``prompts`` = a prompt file)
and an ``out`` path (optional ``overlay``). Relative paths are relative to the manifest's folder (``out`` of a row
that gives none: ``OUT_DIR/<image name>_seg<suffix>``). A row's ``out`` / ``overlay`` must stay inside the
manifest's folder or ``OUT_DIR`` (``../`` that climbs out is refused for that row); an absolute one is refused
unless ``allow_absolute_out`` (``--allow-absolute-out``).

* CSV: a header with ``image`` and prompt columns; numbers separated by spaces, several boxes / points by ``;``
  (``box`` = ``"10 20 30 40; 50 60 70 80"`` is two objects, all ``point`` cells of a row make one object).
* JSON: a list of rows (or ``{"rows": [...]}``); ``box`` is one box or a list of boxes, ``points`` /
  ``negative`` lists of coordinates, ``prompts`` a prompt file (docs/segmentation.md).

A row that cannot be used (bad numbers, missing image) is kept with its ``error`` so that the run reports it at
the end instead of stopping; a manifest that cannot be read at all is an :class:`InputError`.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from medfoundry.errors import InputError, MedfoundryError
from medfoundry.inference.prompts import ObjectPrompt, objects_from_prompts
from medfoundry.io.paths import FORMAT_SUFFIXES, split_suffix

PROMPT_KEYS = ("box", "boxes", "point", "points", "negative", "prompts")
RASTER_OUT = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclass
class ManifestRow:
    """One scan to segment; ``error`` is set (and ``objects`` empty) when the row itself cannot be used."""

    name: str
    image: Path | None
    out: Path | None
    objects: list[ObjectPrompt] = field(default_factory=list)
    overlay: Path | None = None
    error: str | None = None
    fields: dict = field(default_factory=dict)  # the row's cells as given (other verbs' columns, e.g. suv_factor)


def default_output(image: Path, out_dir: Path) -> Path:
    """``OUT_DIR/<name>_seg<suffix>``: PNG for raster images, ``.npz`` for npz, else ``.nii.gz`` (DICOM too)."""
    stem, suffix = split_suffix(image)
    if image.is_dir() or suffix not in FORMAT_SUFFIXES or suffix in (".dcm", ".dicom", ".ima"):
        stem, suffix = image.name, ".nii.gz"
    elif suffix in RASTER_OUT:
        suffix = ".png"
    elif suffix not in (".npz", ".nrrd", ".mha", ".nii.gz", ".nii"):
        suffix = ".nii.gz"
    return out_dir / f"{stem}_seg{suffix}"


def _numbers(text: str, key: str) -> list[list[float]]:
    """``"1 2 3 4; 5 6 7 8"`` (or with commas) -> ``[[1, 2, 3, 4], [5, 6, 7, 8]]``."""
    groups = []
    for part in str(text).split(";"):
        cells = part.replace(",", " ").split()
        if cells:
            try:
                groups.append([float(c) for c in cells])
            except ValueError:
                raise InputError(None, f"{key}: expected numbers, got {part.strip()!r}") from None
    return groups


def _nested(value, key: str) -> list[list[float]]:
    """A JSON prompt value: one coordinate list or a list of them (a CSV-style string works too)."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return _numbers(value, key)
    if not isinstance(value, list):
        raise InputError(None, f"{key}: expected a list of numbers or of lists, got {value!r}")
    if value and all(isinstance(v, (int, float)) for v in value):
        return [list(map(float, value))]
    if not all(isinstance(v, list) for v in value):
        raise InputError(None, f"{key}: expected a list of numbers or of lists, got {value!r}")
    return [list(map(float, v)) for v in value]


def _resolve(base: Path, value) -> Path | None:
    if value is None or str(value).strip() == "":
        return None
    path = Path(str(value).strip()).expanduser()
    return path if path.is_absolute() else base / path


def _output(base: Path, out_dir: Path | None, value, key: str, allow_absolute: bool) -> Path | None:
    """A row's output path: relative ones resolved under ``base`` and kept inside ``base`` or ``out_dir``;
    absolute ones only with ``allow_absolute``."""
    if value is None or str(value).strip() == "":
        return None
    given = str(value).strip()
    path = Path(given).expanduser()
    if path.is_absolute():
        if not allow_absolute:
            raise InputError(
                None,
                f"{key} {given} is an absolute path; write under the manifest's folder or `out_dir`, or pass "
                "`allow_absolute_out`",
            )
        return path
    full = Path(os.path.abspath(base / path))
    roots = [Path(os.path.abspath(base))] + ([Path(os.path.abspath(out_dir))] if out_dir is not None else [])
    if not any(full.is_relative_to(root) for root in roots):
        inside = " or `out_dir`" if out_dir is not None else ""
        raise InputError(None, f"{key} {given} climbs out of the manifest's folder{inside}; outputs stay inside it")
    return base / path


def _row(
    index: int,
    item: dict,
    base: Path,
    out_dir: Path | None,
    defaults: list[ObjectPrompt] | None,
    allow_absolute_out: bool = False,
    default_out: Callable[[Path, Path], Path] = default_output,
) -> ManifestRow:
    """One manifest row; its problems are recorded in ``error`` (never raised)."""
    image = _resolve(base, item.get("image"))
    name = f"row {index}" + (f" ({image.name})" if image is not None else "")
    row = ManifestRow(name, image, None, fields=dict(item))
    try:
        if image is None:
            raise InputError(None, "no image given")
        key = "out" if item.get("out") not in (None, "") else "output"
        out = _output(base, out_dir, item.get(key), key, allow_absolute_out)
        if out is None:
            if out_dir is None:
                raise InputError(None, "no 'out' given; add an out column or pass `out_dir` OUT_DIR")
            out = default_out(image, out_dir)
        row.out = out
        row.overlay = _output(base, out_dir, item.get("overlay"), "overlay", allow_absolute_out)
        given = {k: item.get(k) for k in PROMPT_KEYS if item.get(k) not in (None, "", [])}
        if not given:
            if defaults is None:
                raise InputError(None, "no prompts (box, point or prompts column) and none on the command line")
            row.objects = list(defaults)
            return row
        prompt_file = _resolve(base, given.get("prompts"))
        boxes = _nested(given.get("box", given.get("boxes")), "box")
        points = _nested(given.get("point", given.get("points")), "point")
        row.objects = objects_from_prompts(boxes, points, _nested(given.get("negative"), "negative"), prompt_file)
    except MedfoundryError as exc:
        row.error = getattr(exc, "problem", None) or str(exc)
    return row


def read_manifest(
    path: str | Path,
    out_dir: str | Path | None = None,
    defaults: list[ObjectPrompt] | None = None,
    allow_absolute_out: bool = False,
    default_out: Callable[[Path, Path], Path] = default_output,
) -> list[ManifestRow]:
    """The rows of a ``.csv`` / ``.json`` manifest, or one row per image of a folder (prompts: ``defaults``, the
    command line's, or a ``<name>.prompts.json`` / ``.csv`` file beside each image). Two rows writing the same
    output (mask or overlay): the later one is marked bad; so is a row whose output climbs out of the manifest's
    folder and ``out_dir``, or is absolute without ``allow_absolute_out``. ``default_out(image, out_dir)`` is a
    row's output when it names none (``medfoundry lesions`` writes a folder per scan)."""
    path = Path(path)
    out_dir = None if out_dir is None else Path(out_dir)
    if path.is_dir():
        rows = _folder_rows(path, out_dir, defaults, default_out)
    elif not path.is_file():
        raise InputError(path, "manifest not found")
    else:
        suffix = path.suffix.lower()
        if suffix == ".json":
            items = _json_items(path)
        elif suffix in (".csv", ".tsv", ".txt"):
            items = _csv_items(path)
        else:
            raise InputError(path, "a manifest is a .csv or .json file, or a folder of images")
        base = path.parent
        rows = [
            _row(i, item, base, out_dir, defaults, allow_absolute_out, default_out)
            for i, item in enumerate(items, start=1)
        ]
    if not rows:
        raise InputError(path, "the manifest holds no rows" if path.is_file() else "no images in the folder")
    seen: dict[Path, str] = {}
    for row in rows:
        for output in (row.out, row.overlay):
            if row.error is None and output is not None:
                key = output.resolve()
                if key in seen:
                    row.error = f"output {output} is also written by {seen[key]}"
                seen.setdefault(key, row.name)
    return rows


def _json_items(path: Path) -> list[dict]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(path, f"cannot read the manifest ({exc})") from None
    if isinstance(data, dict):
        data = data.get("rows")
    if not isinstance(data, list):
        raise InputError(path, 'expected a list of rows or {"rows": [...]}')
    return [item if isinstance(item, dict) else {"error": item} for item in data]


def _csv_items(path: Path) -> list[dict]:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read the manifest ({exc})") from None
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    delimiter = "\t" if lines and "\t" in lines[0] else ","
    reader = csv.DictReader(lines, delimiter=delimiter)
    fields = [f.strip().lower() for f in reader.fieldnames or []]
    if "image" not in fields:
        raise InputError(path, f"the header needs an 'image' column (found: {', '.join(fields) or 'none'})")
    reader.fieldnames = fields
    return [{k: (v.strip() if isinstance(v, str) else v) for k, v in row.items() if k} for row in reader]


def _folder_rows(
    folder: Path, out_dir: Path | None, defaults: list[ObjectPrompt] | None, default_out=default_output
) -> list[ManifestRow]:
    if out_dir is None:
        raise InputError(folder, "a folder of images needs `out_dir` OUT_DIR for the masks")
    images = sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and split_suffix(p)[1] in FORMAT_SUFFIXES and not p.name.startswith(".")
    )
    rows = []
    for i, image in enumerate(images, start=1):
        stem = split_suffix(image)[0]
        sidecar = next(
            (s for s in (folder / f"{stem}.prompts.json", folder / f"{stem}.prompts.csv") if s.is_file()), None
        )
        item = {"image": str(image), "prompts": str(sidecar) if sidecar else None}
        rows.append(_row(i, item, folder, out_dir, defaults, default_out=default_out))
    return rows
