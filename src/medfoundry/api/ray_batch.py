"""Batch work on a Ray cluster: the rows of a manifest spread over Ray actors, each of which builds its model once.

``segment --manifest ... --ray [ADDRESS]`` and :func:`segment_many_ray` (the twin of ``api.segment_many``) run
the same per-row step as the local loop (:func:`medfoundry.api.segment_row`, the same readers and writers: the
same outputs) on a pool of actors:

* the driver (this process) reads the manifest, skips rows whose output exists (the resume rule), hands one row
  at a time to each idle actor and shows one progress bar; inputs and outputs must be on paths every node sees;
* an actor builds its model at its first usable row and keeps it; ``cpus_per_actor`` is its thread budget
  (``torch.set_num_threads``), ``gpus_per_actor`` what Ray reserves for it;
* a row that fails (bad input, a node that cannot see a path) is recorded with its reason and reported at the
  end (:class:`~medfoundry.errors.BatchFailures`), the others go on;
* an actor that dies (out of memory, a killed process, a lost node) is restarted by Ray; its row's leftover
  temporary files are removed and the row is redone on the next idle actor, up to ``retries`` times;
* Ctrl-C stops the actors and removes what the rows in flight left; finished rows stay and a rerun resumes.

Actors rather than Ray Data's ``map_batches``: a row is a few paths and prompts (nothing for Ray Data to
stream), one row in flight per actor makes a worker's death attributable to exactly one row (retried, then
failed with its reason instead of retried for ever), and the driver keeps the single progress bar and the
per-row report. The machinery (:class:`RayOptions`, :func:`map_rows`, :func:`run_on_ray`, :func:`run_tasks`) lives
in :mod:`medfoundry.api.batch`, the one place every batch verb runs its rows (locally or here); Ray itself is
imported only inside its functions, when a run asks for Ray.
"""

from __future__ import annotations

from functools import partial

from tqdm.auto import tqdm

from medfoundry.api.batch import (  # noqa: F401 - the Ray machinery's names, also importable from here
    INLINE_BYTES,
    LOCAL,
    RESTART_WAIT_S,
    MapResult,
    RayOptions,
    RowOutcome,
    RowWorker,
    actor_count,
    as_options,
    connect,
    map_rows,
    run_on_ray,
    run_tasks,
)
from medfoundry.errors import InputError


def _forget_unfinished(row) -> None:
    """After a worker died on ``row``: remove the temporaries it left beside the row's outputs (an overlay without
    its mask is written again by the redo, as after any interrupted run)."""
    from medfoundry.io.atomic import remove_temporaries_of

    for path in (row.out, row.overlay):
        if path is not None:
            remove_temporaries_of(path)


def segment_many_ray(rows: list, ray: RayOptions | str | bool, options=None, **fields):
    """:func:`medfoundry.api.segment_many` on Ray actors (same outputs, resume rule and failure report); the
    options are its :class:`~medfoundry.api.SegmentOptions` (or their fields as keywords)."""
    from medfoundry.api import ManyResult, SegmentOptions, raise_if_failed, resolve_options, segment_row
    from medfoundry.inference.predictor import LiteMedSAMPredictor

    o = resolve_options(SegmentOptions, options, fields).for_manifest()
    options = as_options(ray)
    if isinstance(o.predictor, LiteMedSAMPredictor):
        raise InputError(None, "with Ray, give the predictor as a factory (each actor builds its own model)")
    result = ManyResult([], [], [], [])
    todo = []
    for row in rows:  # the resume rule and the manifest's own bad rows, here on the driver
        if row.error is not None:
            result.failed.append((row.name, row.error))
        elif row.out.exists() and not o.overwrite:
            result.skipped.append(row.out)
        else:
            todo.append(row)
    bar = tqdm(total=len(rows), initial=len(rows) - len(todo), desc="scans", unit="scan", disable=not o.progress)
    if todo:
        step = partial(
            segment_row,
            modality=o.modality,
            window=o.intensity_window(),
            threshold=o.threshold,
            overwrite=o.overwrite,
            slice_step=o.slice_step,
        )
        mapped = run_on_ray(
            todo,
            step,
            o.predictor_factory(),
            options,
            bar=bar,
            on_lost=_forget_unfinished,
            is_done=lambda row: row.out.exists(),
        )
        by_row = dict(zip(map(id, todo), mapped.outcomes, strict=True))
        for row in rows:
            outcome = by_row.get(id(row))
            if outcome is None:
                continue
            if outcome.ok:
                result.written.append(row.out)
                result.seconds.append(outcome.seconds)
                result.phases.append({**outcome.value, "worker": outcome.worker, "node": outcome.node})
                if outcome.model_seconds is not None and not result.model_seconds:
                    result.model_seconds = outcome.model_seconds
            else:
                result.failed.append((row.name, outcome.why))
        result.retried = mapped.retried
    bar.close()
    order = {row.name: i for i, row in enumerate(rows)}
    result.failed.sort(key=lambda item: order.get(item[0], len(rows)))
    return raise_if_failed(result)
