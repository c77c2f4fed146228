"""``medfoundry view``: open an image in a local web viewer to prompt, correct and save a segmentation."""

from __future__ import annotations

import argparse

from medfoundry.cli.common import add_model_options, add_window_options, int_range, options_from_args, probability

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

    from medfoundry.api.view import ViewOptions, view_inputs
    from medfoundry.errors import InputError
    from medfoundry.viewer import ViewerSession
    from medfoundry.viewer.server import ViewerServer

    o = options_from_args(ViewOptions, args, open_browser=not args.no_browser)
    inputs = view_inputs(args.image, o)
    session = ViewerSession(inputs.image, out=o.out, labels=inputs.labels, predictor=o.predictor_factory(),
                            window=o.intensity_window(), threshold=o.threshold)  # fmt: skip
    try:
        server = ViewerServer(session, host=o.host, port=o.port)
    except OSError as exc:
        raise InputError(None, f"cannot listen on {o.host}:{o.port} ({exc.strerror or exc})") from exc
    session.predictor  # noqa: B018 - load the model before the URL is shown, not on the first prompt
    image = inputs.image
    print(f"medfoundry view: {args.image} ({image.modality}, {'x'.join(map(str, image.spatial_shape))})")
    if o.out:
        print(f"saving to {o.out}" + (" (exists: saving asks for confirmation)" if Path(o.out).exists() else ""))
    if o.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {o.host}: other machines can reach the viewer (token required, no TLS)")
    print(f"open {server.url}\n(Ctrl-C to stop)", flush=True)
    server.run(open_browser=o.open_browser)
    return 0
