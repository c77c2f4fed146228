"""``medfoundry segment``: promptable segmentation of one image or volume file."""

from __future__ import annotations

import argparse

from medfoundry.cli.cluster import add_ray_options, ray_from_args
from medfoundry.cli.common import (
    add_model_options,
    add_overwrite,
    add_progress,
    add_window_options,
    finite_float,
    options_from_args,
    positive_int,
    probability,
)

EPILOG = """examples:
  medfoundry segment ct.nii.gz --box 120 80 30 180 140 45 --out tumour.nii.gz --overlay tumour.png
  medfoundry segment slice.png --box 10 20 90 120 --box 140 40 200 110 --out masks.png
  medfoundry segment scan.nrrd --boxes boxes.json --out labels.nii.gz
  medfoundry segment pet_dicom_folder/ --point 64 70 40 --negative 80 70 40 --out lesion.nii.gz
  medfoundry segment --manifest scans.csv --out masks/      # columns: image,box,out (docs/segmentation.md)
  medfoundry segment --manifest pngs/ --box 10 20 90 120 --out masks/
  medfoundry segment --manifest scans.csv --out masks/ --ray head-node:6379 --ray-cpus-per-actor 4

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
    p.add_argument("image", nargs="?", help="image file (NIfTI, NRRD, MHA, npz, PNG/JPEG/TIFF) or DICOM series folder")
    p.add_argument(
        "--manifest",
        metavar="FILE|DIR",
        help="many scans with one model load: a CSV / JSON of rows (image, box / point / negative / prompts, out, "
        "overlay) or a folder of images (prompts from the options or IMAGE.prompts.json); --out is then the folder "
        "for rows without 'out'. Existing outputs are skipped (resume); bad rows are reported at the end (exit 2)",
    )
    p.add_argument(
        "--allow-absolute-out",
        action="store_true",
        help="with --manifest: accept rows whose out / overlay is an absolute path (by default outputs stay inside "
        "the manifest's folder or --out)",
    )
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
    p.add_argument(
        "--out", help="output label map (.nii.gz, .nrrd, .mha, .npz or .png); with --manifest: the output folder"
    )
    p.add_argument("--overlay", metavar="PNG", help="also write a picture of the mask over the image")
    p.add_argument("--threshold", type=probability, default=0.5, help="probability threshold (default 0.5)")
    p.add_argument(
        "--slice-step",
        type=positive_int,
        default=1,
        metavar="K",
        help="3D: segment every K-th slice from the box's middle slice and interpolate the masks between (fewer "
        "encoder calls, ~K x quicker; costs DSC, see docs/segmentation.md); default 1: every slice",
    )
    add_overwrite(p, "existing output files")
    add_progress(p)
    add_window_options(p)
    add_model_options(p)
    add_ray_options(p)


def objects_from_args(args: argparse.Namespace) -> list:
    """The objects described by --box / --boxes / --point / --negative."""
    from medfoundry.inference.prompts import objects_from_prompts

    return objects_from_prompts(args.box, args.point, args.negative, args.boxes)


def run(args: argparse.Namespace) -> int:
    from medfoundry.errors import InputError

    if args.manifest:
        if args.image:
            raise InputError(args.image, "give an image or --manifest, not both")
        return run_manifest(args)
    if not args.image or not args.out:
        raise InputError(None, "give an IMAGE and --out (or --manifest FILE|DIR)")
    from medfoundry.api import segment

    objects = objects_from_args(args)
    labels = segment(args.image, objects, args.out, segment_options(args))
    counts = [int((labels.array == i).sum()) for i in range(1, len(objects) + 1)]
    unit = "voxels" if labels.spatial_ndim == 3 else "pixels"
    print(f"wrote {args.out}: {len(objects)} object(s), {', '.join(map(str, counts))} {unit}")
    if args.overlay:
        print(f"wrote {args.overlay}")
    return 0


def segment_options(args: argparse.Namespace):
    """The :class:`medfoundry.api.SegmentOptions` of the command line; the model is built once the image (or the
    first usable row) and the outputs are checked."""
    from medfoundry.api import SegmentOptions

    return options_from_args(SegmentOptions, args)


def run_manifest(args: argparse.Namespace) -> int:
    """``--manifest``: every row with one model; summary lines, exit code 2 if any row failed."""
    from medfoundry.api import segment_many
    from medfoundry.errors import BatchFailures
    from medfoundry.inference.manifest import read_manifest

    options = segment_options(args).for_manifest()
    given = args.box or args.boxes or args.point or args.negative
    defaults = objects_from_args(args) if given else None
    rows = read_manifest(args.manifest, args.out, defaults, allow_absolute_out=args.allow_absolute_out)
    ray = ray_from_args(args)
    try:
        if ray is None:
            result = segment_many(rows, options)
        else:  # imports Ray
            from medfoundry.api.ray_batch import segment_many_ray

            result = segment_many_ray(rows, ray, options)
    except BatchFailures as exc:
        _summary(exc.result)
        for name, why in exc.failed:
            print(f"failed: {name}: {why}")
        raise
    _summary(result)
    return 0


def _summary(result) -> None:
    """One line: rows written / skipped / failed, and the model-load and per-scan times."""
    import statistics

    timing = ""
    if result.seconds:
        warm = result.seconds[1:] or result.seconds
        timing = (
            f"; model ready in {result.model_seconds:.1f} s, first scan {result.seconds[0]:.1f} s, "
            f"then {statistics.median(warm):.2f} s per scan (median)"
        )
    counts = f"wrote {len(result.written)}, skipped {len(result.skipped)} (output exists)"
    redone = f"; {len(result.retried)} redone after a worker died" if result.retried else ""
    print(f"{counts}, failed {len(result.failed)}{timing}{redone}")
