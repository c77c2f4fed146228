"""``medfoundry segment``: promptable segmentation of one image or volume file."""

from __future__ import annotations

import argparse

from medfoundry.cli.common import (
    add_model_options,
    add_overwrite,
    add_progress,
    add_window_options,
    finite_float,
    predictor_from_args,
    probability,
    window_from_args,
)

EPILOG = """examples:
  medfoundry segment ct.nii.gz --box 120 80 30 180 140 45 --out tumour.nii.gz --overlay tumour.png
  medfoundry segment slice.png --box 10 20 90 120 --box 140 40 200 110 --out masks.png
  medfoundry segment scan.nrrd --boxes boxes.json --out labels.nii.gz
  medfoundry segment pet_dicom_folder/ --point 64 70 40 --negative 80 70 40 --out lesion.nii.gz

Coordinates are voxel indices: x = column, y = row, z = slice. A 3D box [x0 y0 z0 x1 y1 z1] is segmented on its
middle slice and propagated slice by slice within z0..z1 (previous mask's box + margin) until the mask vanishes.
Points (x y, or x y z on one slice in 3D) with --negative points make one more object. Object i gets label i.
"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "segment",
        help="segment objects in an image from box or point prompts",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("image", help="image file (NIfTI, NRRD, MHA, npz, PNG/JPEG/TIFF) or DICOM series folder")
    prompts = p.add_argument_group("prompts (one of --box / --boxes / --point is required)")
    prompts.add_argument(
        "--box",
        type=finite_float,
        nargs="+",
        action="append",
        default=[],
        metavar="N",
        help="one object's box: X0 Y0 X1 Y1 (2D) or X0 Y0 Z0 X1 Y1 Z1 (3D); repeat for more",
    )
    prompts.add_argument(
        "--boxes", metavar="FILE", help="JSON or CSV file of boxes / objects (format in docs/segmentation.md)"
    )
    prompts.add_argument(
        "--point",
        type=finite_float,
        nargs="+",
        action="append",
        default=[],
        metavar="N",
        help="a positive point X Y (2D) or X Y Z (3D); repeat for more",
    )
    prompts.add_argument(
        "--negative",
        type=finite_float,
        nargs="+",
        action="append",
        default=[],
        metavar="N",
        help="a negative (background) point for the point object",
    )
    p.add_argument("--out", required=True, help="output label map (.nii.gz, .nrrd, .mha, .npz or .png)")
    p.add_argument("--overlay", metavar="PNG", help="also write a picture of the mask over the image")
    p.add_argument("--threshold", type=probability, default=0.5, help="probability threshold (default 0.5)")
    add_overwrite(p, "existing output files")
    add_progress(p)
    add_window_options(p)
    add_model_options(p)


def objects_from_args(args: argparse.Namespace) -> list:
    """The objects described by --box / --boxes / --point / --negative."""
    import numpy as np

    from medfoundry.errors import InputError
    from medfoundry.inference.prompts import ObjectPrompt, check_box, load_prompt_file

    objects = []
    for box in args.box:
        if len(box) not in (4, 6):
            raise InputError(None, f"--box takes 4 (2D) or 6 (3D) numbers, got {len(box)}: {box}")
        objects.append(ObjectPrompt(box=check_box(box, "--box", need_area=True)))
    if args.boxes:
        objects.extend(load_prompt_file(args.boxes))
    if args.negative and not args.point:
        raise InputError(None, "--negative needs at least one --point")
    if args.point:
        coords = args.point + args.negative
        if len({len(c) for c in coords}) != 1 or len(coords[0]) not in (2, 3):
            raise InputError(None, "every --point / --negative takes the same 2 (X Y) or 3 (X Y Z) numbers")
        labels = [1] * len(args.point) + [0] * len(args.negative)
        objects.append(ObjectPrompt(points=np.asarray(coords), point_labels=np.asarray(labels)))
    if not objects:
        raise InputError(None, "give at least one --box, --boxes FILE or --point")
    return objects


def run(args: argparse.Namespace) -> int:
    from medfoundry.api import segment

    objects = objects_from_args(args)
    labels = segment(
        args.image,
        objects,
        args.out,
        overlay=args.overlay,
        modality=args.modality,
        window=window_from_args(args),
        predictor=lambda: predictor_from_args(args),  # built once the image and outputs are checked
        threshold=args.threshold,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    counts = [int((labels.array == i).sum()) for i in range(1, len(objects) + 1)]
    unit = "voxels" if labels.spatial_ndim == 3 else "pixels"
    print(f"wrote {args.out}: {len(objects)} object(s), {', '.join(map(str, counts))} {unit}")
    if args.overlay:
        print(f"wrote {args.overlay}")
    return 0
