"""``--ray [ADDRESS]`` and its sizing options, declared once for every verb with a batch mode (``segment
--manifest``, ``lesions --manifest``, ``classify embed``, ``classify predict --manifest``; docs/scale.md).
``MEDFOUNDRY_RAY`` gives the default: an address, ``local`` or ``1`` (Ray on this machine), ``0`` or empty
(off)."""

from __future__ import annotations

import argparse
import os

from medfoundry.cli.common import nonnegative_float, positive_float, positive_int

ENV = "MEDFOUNDRY_RAY"


def add_ray_options(parser: argparse.ArgumentParser) -> None:
    """``--ray [ADDRESS]``, ``--ray-actors``, ``--ray-cpus-per-actor``, ``--ray-gpus-per-actor``."""
    group = parser.add_argument_group("cluster (Ray; pip install 'medfoundry[ray]')")
    group.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="spread the rows over Ray actors (each loads the model once): without ADDRESS on this machine (or the "
        "cluster RAY_ADDRESS / 'ray start' names), else HOST:PORT of a cluster's head, 'auto' or ray://HOST:PORT; "
        f"inputs and outputs on paths every node sees. Default: ${ENV}",
    )
    group.add_argument("--ray-actors", type=positive_int, metavar="N", help="actors (default: what the CPUs hold)")
    group.add_argument(
        "--ray-cpus-per-actor",
        type=positive_float,
        metavar="C",
        help="CPUs (= threads) per actor (default: --threads, else 1)",
    )
    group.add_argument(
        "--ray-gpus-per-actor", type=nonnegative_float, default=0.0, metavar="G", help="GPUs per actor (default 0)"
    )


def ray_from_args(args: argparse.Namespace):
    """The :class:`medfoundry.api.ray_batch.RayOptions` the options (or ``MEDFOUNDRY_RAY``) ask for, or None: then
    nothing of Ray is imported."""
    address = args.ray
    if address is None:
        env = os.environ.get(ENV, "").strip()
        if env.lower() in ("", "0", "no", "off", "false"):
            return None
        address = "local" if env.lower() in ("1", "yes", "on", "true") else env
    from medfoundry.api.ray_batch import RayOptions

    cpus = args.ray_cpus_per_actor or float(getattr(args, "threads", None) or 1)
    return RayOptions(address, args.ray_actors, cpus, args.ray_gpus_per_actor)
