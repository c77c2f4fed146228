"""Promptable segmentation of a whole 2D image or 3D volume (intensities in [0, 1]) into a label map."""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from medfoundry.errors import InputError
from medfoundry.inference.predictor import LiteMedSAMPredictor, Prompts, fmt_box
from medfoundry.inference.prompts import ObjectPrompt
from medfoundry.inference.propagation import SliceEmbeddings, propagate, segment_slice
from medfoundry.io.checks import label_dtype


def _check_box3d(box: np.ndarray, shape: tuple[int, int, int], path: str | None) -> tuple[np.ndarray, int, int]:
    if box.size != 6:
        raise InputError(path, f"a 3D image needs boxes [x0, y0, z0, x1, y1, z1]; got {fmt_box(box)}")
    x0, y0, z0, x1, y1, z1 = box.tolist()
    if z1 < z0:
        raise InputError(path, f"box {fmt_box(box)} has z1 < z0")
    if z1 < 0 or z0 > shape[0] - 1:
        raise InputError(path, f"box {fmt_box(box)} lies outside slices 0..{shape[0] - 1}")
    box2d = np.array([x0, y0, x1, y1], dtype=np.float32)
    Prompts(boxes=box2d).validate(shape[1:], path)
    return box2d, max(0, int(round(z0))), min(shape[0] - 1, int(round(z1)))


def _check_2d(objects: list[ObjectPrompt], size: tuple[int, int], path: str | None) -> None:
    for obj in objects:
        if obj.slice_boxes or (obj.box is not None and obj.box.size != 4):
            raise InputError(path, "a 2D image takes boxes [x0, y0, x1, y1] (no z)")
        if obj.points is not None and obj.points.shape[1] != 2:
            raise InputError(path, "a 2D image takes points (x, y) (no z)")
        Prompts(boxes=obj.box, points=obj.points, point_labels=obj.point_labels).validate(size, path)


def check_prompts(objects: list[ObjectPrompt], shape: tuple[int, ...], is_3d: bool, path: str | None = None) -> None:
    """Check every prompt against the image shape ((Z, H, W) or (H, W[, 3])) before any model work."""
    if not objects:
        raise InputError(path, "no prompts given: pass at least one box or point")
    if is_3d:
        for obj in objects:
            _plan_3d(obj, tuple(shape[:3]), path)
    else:
        _check_2d(objects, tuple(shape[:2]), path)


def _segment_2d(
    predictor: LiteMedSAMPredictor,
    image: np.ndarray,
    objects: list[ObjectPrompt],
    path: str | None,
    threshold: float,
) -> np.ndarray:
    size = image.shape[:2]
    _check_2d(objects, size, path)
    predictor.set_image(image)
    labels = np.zeros(size, dtype=label_dtype(len(objects), path))
    # decode objects with the same prompt layout together, in one batch each
    groups: dict[tuple[bool, int], list[int]] = {}
    for i, obj in enumerate(objects):
        groups.setdefault((obj.box is not None, 0 if obj.points is None else len(obj.points)), []).append(i)
    masks: dict[int, np.ndarray] = {}
    for (has_box, n_points), idx in groups.items():
        prompts = Prompts(
            boxes=np.stack([objects[i].box for i in idx]) if has_box else None,
            points=np.stack([objects[i].points for i in idx]) if n_points else None,
            point_labels=np.stack([objects[i].point_labels for i in idx]) if n_points else None,
        )
        for i, mask in zip(idx, predictor.predict(prompts, threshold=threshold), strict=False):
            masks[i] = mask
    for i in range(len(objects)):
        labels[masks[i]] = i + 1
    return labels


def _plan_3d(obj: ObjectPrompt, shape: tuple[int, int, int], path: str | None) -> list[tuple[int, Prompts, tuple]]:
    """Validate one 3D object and return its start slices: (z, prompts, propagation z-range or ())."""
    if obj.slice_boxes:
        steps = []
        for z, box in sorted(obj.slice_boxes.items()):
            if not 0 <= z < shape[0]:
                raise InputError(path, f"per-slice box on slice {z} is outside slices 0..{shape[0] - 1}")
            prompts = Prompts(boxes=box)
            prompts.validate(shape[1:], path)
            steps.append((z, prompts, ()))
        return steps
    if obj.box is not None:
        if obj.points is not None:
            raise InputError(path, "for 3D images give a box or points per object, not both")
        box2d, z0, z1 = _check_box3d(obj.box, shape, path)
        return [((z0 + z1) // 2, Prompts(boxes=box2d), (z0, z1))]
    pts = obj.points
    if pts.shape[1] != 3:
        raise InputError(path, "a 3D image takes points (x, y, z)")
    zs = np.unique(np.round(pts[:, 2]).astype(int))
    if len(zs) != 1 or not 0 <= zs[0] < shape[0]:
        raise InputError(path, f"an object's points must lie on one slice in 0..{shape[0] - 1}")
    prompts = Prompts(points=pts[None, :, :2], point_labels=obj.point_labels[None])
    prompts.validate(shape[1:], path)
    return [(int(zs[0]), prompts, (0, shape[0] - 1))]


def _segment_3d(
    predictor: LiteMedSAMPredictor,
    volume: np.ndarray,
    objects: list[ObjectPrompt],
    path: str | None,
    threshold: float,
    progress: bool,
    slice_step: int = 1,
) -> np.ndarray:
    shape = volume.shape
    plans = [_plan_3d(obj, shape, path) for obj in objects]  # every prompt is checked before any work
    labels = np.zeros(shape, dtype=label_dtype(len(objects), path))
    bar = tqdm(desc="slices encoded", unit="slice", disable=not progress, leave=False)
    embeddings = SliceEmbeddings(predictor, volume, on_compute=lambda z: bar.update(1))
    try:
        for label, plan in enumerate(plans, start=1):
            mask3d = np.zeros(shape, dtype=bool)
            for z, prompts, z_range in plan:
                mask3d[z] = segment_slice(predictor, embeddings, z, prompts, threshold)[0]
                if z_range:
                    propagate(predictor, embeddings, z, mask3d[z], z_range, mask3d, threshold, slice_step)
            labels[mask3d] = label
    finally:
        bar.close()
    return labels


def segment_array(
    predictor: LiteMedSAMPredictor,
    image: np.ndarray,
    objects: list[ObjectPrompt],
    *,
    is_3d: bool,
    path: str | None = None,
    threshold: float = 0.5,
    progress: bool = False,
    slice_step: int = 1,
) -> np.ndarray:
    """Label map for an intensity-normalised array: (H, W[, 3]) if not ``is_3d``, else (Z, H, W). ``slice_step``
    k > 1 propagates 3D objects on every k-th slice with interpolation between (opt-in: fewer encoder calls,
    see :func:`~medfoundry.inference.propagation.propagate`)."""
    if not objects:
        raise InputError(path, "no prompts given: pass at least one box or point")
    if int(slice_step) < 1:
        raise InputError(path, f"slice step must be >= 1, got {slice_step}")
    if is_3d:
        return _segment_3d(predictor, image, objects, path, threshold, progress, int(slice_step))
    return _segment_2d(predictor, image, objects, path, threshold)
