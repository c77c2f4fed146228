"""``pool``: check a dataset-pool config and preprocess its cases for pretraining."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medfoundry.api.common import resolve_options
from medfoundry.errors import InputError


@dataclass
class PoolOptions:
    """``config``: the pool config (JSON / YAML, docs/tsfm.md); ``out`` the folder of the preprocessed pool
    (needed unless ``check``); ``check``: only validate the config."""

    config: Path
    out: Path | None = None
    check: bool = False
    overwrite: bool = False


@dataclass
class PoolResult:
    """The config read, its sampling and label-remapping tables (Markdown), and the index written (None with
    ``check``)."""

    config: Any
    sampling_table: str
    remap_table: str
    index: dict | None = None


def pool_check(config: str | Path) -> PoolResult:
    """Read and validate a pool config: its sources' sampling shares and the label remapping."""
    from medfoundry.data.pool import load_pool_config
    from medfoundry.data.pool_report import format_remap_table, format_sampling_table, remap_rows, sampling_rows

    cfg = load_pool_config(config)
    return PoolResult(cfg, format_sampling_table(sampling_rows(cfg)), format_remap_table(remap_rows(cfg)))


def pool(options: PoolOptions | None = None, **fields) -> PoolResult:
    """Validate the config, then (unless ``check``) preprocess every case into ``out`` (one .npz per case plus
    pool.json). The checked config is in ``.config`` either way."""
    o = resolve_options(PoolOptions, options, fields)
    checked = pool_check(o.config)
    if o.check:
        return checked
    if not o.out:
        raise InputError(o.config, "give --out FOLDER for the preprocessed pool (or --check)")
    from medfoundry.data.pool import build_pool

    checked.index = build_pool(checked.config, o.out, overwrite=o.overwrite)
    return checked
