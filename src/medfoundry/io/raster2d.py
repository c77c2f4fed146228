"""2D raster images: PNG / JPEG / BMP through Pillow, TIFF through tifffile (spacing 1 x 1)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medfoundry.errors import InputError
from medfoundry.io.atomic import atomic_path
from medfoundry.io.checks import check_image_array
from medfoundry.io.image import MedicalImage

PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
TIFF_SUFFIXES = (".tif", ".tiff")
RASTER_SUFFIXES = PIL_SUFFIXES + TIFF_SUFFIXES


def read_raster(path: str | Path, modality: str | None = None, labels: bool = False) -> MedicalImage:
    """Read PNG/JPEG/BMP/TIFF: grey -> (y, x), colour -> (y, x, 3) with meta["rgb"], TIFF stack -> (z, y, x).

    With ``labels`` a palette PNG gives its palette indices (the labels), not the colours they show.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such file")
    if path.suffix.lower() in TIFF_SUFFIXES:
        array, rgb = _read_tiff(path)
    else:
        array, rgb = _read_pil(path, labels)
    array = check_image_array(array, path, rgb=rgb)
    nd = array.ndim - 1 if rgb else array.ndim
    return MedicalImage(
        array=array,
        spacing=(1.0,) * nd,
        modality=modality or ("RGB" if rgb else "OTHER"),
        path=str(path),
        meta={"rgb": True, "spacing_missing": True} if rgb else {"spacing_missing": True},
    )


def _read_pil(path: Path, labels: bool) -> tuple[np.ndarray, bool]:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode == "P" and not labels:
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            elif mode in ("LA", "PA") or (mode == "P" and labels):
                im = im.getchannel(0) if mode != "P" else im
            elif mode in ("RGBA", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
                im = im.convert("RGB")
            array = np.array(im)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(path, f"cannot read the image (truncated or not a valid image?): {exc}") from exc
    if array.ndim == 3 and array.shape[-1] == 4:
        array = array[..., :3]
    return array, array.ndim == 3


def _read_tiff(path: Path) -> tuple[np.ndarray, bool]:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            axes = series.axes
            array = series.asarray()
    except Exception as exc:  # tifffile raises many types on damaged files
        raise InputError(path, f"cannot read the TIFF (truncated or not a valid image?): {exc}") from exc
    if "S" in axes and array.shape[axes.index("S")] in (3, 4):
        array = np.moveaxis(array, axes.index("S"), -1)[..., :3]
        axes = axes.replace("S", "") + "S"
    squeezed = [i for i, a in enumerate(axes) if array.shape[i] == 1 and a not in "YX"]
    array = np.squeeze(array, axis=tuple(squeezed)) if squeezed else array
    rgb = axes.endswith("S") and array.shape[-1] == 3
    spatial = array.ndim - (1 if rgb else 0)
    if spatial > 3 or (rgb and spatial > 2):
        raise InputError(path, f"4D image with shape {array.shape} (axes {axes}), give one 3D volume")
    return array, rgb


def write_png(array: np.ndarray, path: str | Path, overwrite: bool = False, rgb: bool = False) -> Path:
    """Write a 2D uint8/uint16 grey array (or uint8 (y, x, 3) colour with ``rgb``) as PNG, atomically."""
    from PIL import Image

    path = Path(path)
    array = np.asarray(array)
    if array.ndim != (3 if rgb else 2):
        raise InputError(path, f"PNG holds one 2D image; got shape {array.shape} (use .nii.gz, .nrrd or .npz)")
    if array.dtype == bool:
        array = array.astype(np.uint8)
    if not np.issubdtype(array.dtype, np.integer):
        raise InputError(path, f"PNG holds 8/16-bit integers, not {array.dtype} (use .nii.gz, .nrrd or .npz)")
    lo, hi = int(array.min()), int(array.max())
    top = 255 if rgb else 65535
    if lo < 0 or hi > top:
        raise InputError(path, f"values {lo}..{hi} do not fit a PNG (0..{top}); use .nii.gz, .nrrd or .npz")
    array = array.astype(np.uint8 if hi <= 255 else np.uint16)
    with atomic_path(path, overwrite) as tmp:
        Image.fromarray(np.ascontiguousarray(array)).save(tmp, format="PNG")
    return path
