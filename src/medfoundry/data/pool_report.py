"""Tables of a pool config: per-source sampling shares and the label remapping table (source ids -> pool class)."""

from __future__ import annotations

from collections.abc import Iterable

from medfoundry.data.pool import PoolConfig


def id_ranges(ids: Iterable[int]) -> str:
    """Label ids as sorted ranges, e.g. ``[3, 1, 2, 5]`` -> ``"1-3, 5"``."""
    values = sorted(set(int(i) for i in ids))
    parts: list[str] = []
    start = prev = None
    for v in values + [None]:
        if start is not None and (v is None or v != prev + 1):
            parts.append(str(start) if start == prev else f"{start}-{prev}")
            start = None
        if v is not None and start is None:
            start = v
        prev = v
    return ", ".join(parts)


def sampling_rows(config: PoolConfig) -> list[dict]:
    """One row per source: name, modality, cases, annotated pool classes, P(one case), share of all draws.

    The share of a source with n cases is sqrt(n) / sum over sources of sqrt(n_s) (each case has weight
    1/sqrt(n)).
    """
    weights = config.sampling_weights()
    rows, i = [], 0
    for s in config.sources:
        w = weights[i : i + len(s.cases)]
        i += len(s.cases)
        rows.append(
            {
                "source": s.name,
                "modality": s.modality,
                "cases": len(s.cases),
                "classes": ", ".join(s.annotated),
                "p_case": w[0],
                "share": sum(w),
            }
        )
    return rows


def format_sampling_table(rows: list[dict]) -> str:
    """The sampling rows as fixed-width text (what ``medfoundry pool`` prints)."""
    lines = [f"{'source':<22}{'modality':<9}{'cases':>6}{'P(case)':>10}{'share':>8}  classes"]
    for r in rows:
        lines.append(
            f"{r['source']:<22}{r['modality']:<9}{r['cases']:>6}{r['p_case']:>10.3f}{r['share']:>8.1%}  {r['classes']}"
        )
    return "\n".join(lines)


def remap_rows(config: PoolConfig) -> list[dict]:
    """The label remapping table: one row per (source, pool class) with the source ids mapped to it.

    ``pool_id`` is the class's label id in the pool (1..K); ids absent from a source's table become
    background only when the source says ``unmapped: background`` (column ``unmapped``).
    """
    ids = config.class_ids
    rows = []
    for s in config.sources:
        for cls in s.annotated:
            rows.append(
                {
                    "source": s.name,
                    "source_ids": id_ranges(i for i, c in s.labels.items() if c == cls),
                    "pool_class": cls,
                    "pool_id": ids[cls],
                    "unmapped": s.unmapped,
                }
            )
    return rows


def format_remap_table(rows: list[dict]) -> str:
    """The remap rows as fixed-width text: source, source ids, pool class (pool id)."""
    lines = [f"{'source':<22}{'source ids':<28}pool class (id)"]
    for r in rows:
        lines.append(f"{r['source']:<22}{r['source_ids']:<28}{r['pool_class']} ({r['pool_id']})")
    return "\n".join(lines)
