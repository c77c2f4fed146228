"""``medfoundry pool``: check a dataset-pool config and preprocess its cases for pretraining."""

from __future__ import annotations

import argparse

from medfoundry.cli.common import add_overwrite, options_from_args


def add_parser(subparsers) -> None:
    """Register the sub-command (no heavy imports here)."""
    p = subparsers.add_parser(
        "pool",
        help="build a preprocessed dataset pool (several labelled 3D datasets, one label space)",
        description="Read every case of a pool config (JSON/YAML), remap its labels into the pool's classes, "
        "resample to the pool spacing, normalise (CT: clip + z-score over the pool; others: per image) and "
        "write one .npz per case plus pool.json into OUT. Prints the per-source sampling shares and the label "
        "remapping table.",
    )
    p.add_argument("config", help="pool config (.json, .yaml); see docs/tsfm.md")
    p.add_argument("--out", help="output folder for the preprocessed pool (needed unless --check)")
    p.add_argument("--check", action="store_true", help="only validate the config and list its sources")
    add_overwrite(p, "an existing pool in OUT")


def run(args: argparse.Namespace) -> int:
    """Validate, then (unless --check) preprocess the pool."""
    from medfoundry.api import PoolOptions, pool, pool_check

    checked = pool_check(args.config)
    cfg = checked.config
    print(f"pool {cfg.name!r}: {len(cfg.classes)} classes {cfg.classes}, spacing {cfg.spacing_xyz_mm} mm (x, y, z)")
    print(checked.sampling_table)
    print("label remapping:")
    print(checked.remap_table)
    if args.check:
        return 0
    result = pool(options_from_args(PoolOptions, args))
    print(f"wrote {len(result.index['cases'])} cases to {args.out} (pool.json)")
    return 0
