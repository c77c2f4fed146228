"""``medfoundry view``: open an image in a local web viewer to prompt, correct and save a segmentation."""

from __future__ import annotations

import argparse

from medfoundry.cli.common import (
    add_model_options,
    add_window_options,
    int_range,
    predictor_from_args,
    probability,
    window_from_args,
)

EPILOG = """examples:
  medfoundry view scan.nii.gz --out lesions.nii.gz
  medfoundry view pet_dicom_folder/ --labels lesions.nii.gz --out lesions_fixed.nii.gz --adapter run/best.pt
  medfoundry view ct.nrrd --modality CT --port 8765 --no-browser

The server listens on 127.0.0.1 (a random port unless --port) and prints a URL with a random token that every
request needs. It serves only IMAGE and --labels and writes only --out (replacing an existing file only after a
confirmation on the page). The HTTP API is documented in docs/viewer.md. Stop it with Ctrl-C.
"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "view",
        help="local web viewer: draw boxes/points, watch the mask, correct and save it",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("image", help="image file (NIfTI, NRRD, MHA, npz, PNG/TIFF) or DICOM series folder")
    p.add_argument("--labels", metavar="FILE", help="an existing label map on the image grid to correct")
    p.add_argument("--out", metavar="FILE", help="where 'save' writes the label map (.nii.gz, .nrrd, .mha, .npz)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int_range(0, 65535), default=0, help="port (default 0: a free random port)")
    p.add_argument("--no-browser", action="store_true", help="print the URL without opening a browser")
    p.add_argument(
        "--threshold",
        type=probability,
        default=0.5,
        help="probability threshold (default 0.5)",
    )
    add_window_options(p)
    add_model_options(p)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from medfoundry.api import read_for_segmentation
    from medfoundry.errors import InputError
    from medfoundry.io import check_writable, read_mask
    from medfoundry.io.readers import file_suffix
    from medfoundry.io.writers import WRITE_SUFFIXES
    from medfoundry.viewer import ViewerSession
    from medfoundry.viewer.server import ViewerServer

    if args.out and file_suffix(args.out) not in WRITE_SUFFIXES:
        raise InputError(args.out, f"cannot write this file type; use one of {', '.join(WRITE_SUFFIXES)}")
    if args.out and not Path(args.out).resolve().parent.is_dir():
        raise InputError(args.out, "the output folder does not exist")
    if args.out:  # a folder, /proc or an unwritable folder is refused now, not at the first save
        check_writable(args.out, overwrite=True)  # an existing file is replaced only when a save confirms it
    image = read_for_segmentation(args.image, args.modality)  # the modality rule of `segment` and training
    labels = read_mask(args.labels, reference=image) if args.labels else None
    session = ViewerSession(
        image,
        out=args.out,
        labels=labels,
        predictor=lambda: predictor_from_args(args),
        window=window_from_args(args),
        threshold=args.threshold,
    )
    try:
        server = ViewerServer(session, host=args.host, port=args.port)
    except OSError as exc:
        raise InputError(None, f"cannot listen on {args.host}:{args.port} ({exc.strerror or exc})") from exc
    session.predictor  # noqa: B018 - load the model before the URL is shown, not on the first prompt
    print(f"medfoundry view: {args.image} ({image.modality}, {'x'.join(map(str, image.spatial_shape))})")
    if args.out:
        print(f"saving to {args.out}" + (" (exists: saving asks for confirmation)" if Path(args.out).exists() else ""))
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {args.host}: other machines can reach the viewer (token required, no TLS)")
    print(f"open {server.url}\n(Ctrl-C to stop)", flush=True)
    server.run(open_browser=not args.no_browser)
    return 0
