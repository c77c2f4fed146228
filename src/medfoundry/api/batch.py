"""The one place that runs the rows of a manifest: locally (one model, built at the first row that needs it) or on
Ray actors (:mod:`medfoundry.api.ray_batch`: one model per actor). Every batch verb (``segment --manifest``,
``lesions --manifest``, ``classify embed``, ``classify predict --manifest``) hands its rows here with

* ``step(row, model)``: does one row and writes its outputs (atomically: an existing output is a finished row);
  ``model()`` returns the row's model, built by ``factory()`` once per process;
* ``on_done(row, outcome)``: called on the driver as each row finishes (a cohort table rewritten as the run goes);
* ``on_lost(row)``: removes what a row whose Ray worker died left behind, before it is redone.

A row's :class:`~medfoundry.errors.MedfoundryError` is its reason in the report; the run goes on. Without
``ray`` nothing of Ray is imported.
"""

from __future__ import annotations

import logging
import socket
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from medfoundry.errors import InputError, MedfoundryError


@dataclass
class RowOutcome:
    """One row's result: ``value`` (the step's return) or ``why`` it failed; on Ray the worker and node."""

    ok: bool
    value: Any = None
    why: str = ""
    seconds: float = 0.0
    model_seconds: float | None = None
    worker: int = -1
    node: str = ""


def run_rows(
    rows: list,
    step: Callable,
    factory: Callable,
    *,
    ray=None,
    progress: bool = True,
    desc: str = "scans",
    unit: str = "scan",
    done_before: int = 0,
    on_done: Callable[[Any, RowOutcome], None] | None = None,
    on_lost: Callable[[Any], None] | None = None,
    is_done: Callable[[Any], bool] | None = None,
) -> list[RowOutcome]:
    """Every row's :class:`RowOutcome` (in row order), locally or on Ray (``ray``: ``RayOptions``, an address or
    True). ``done_before``: rows finished by an earlier run (the progress bar starts there); ``is_done(row)``
    counts the rows written when Ctrl-C stops a Ray run (the message says a rerun resumes)."""
    bar = tqdm(total=len(rows) + done_before, initial=done_before, desc=desc, unit=unit, disable=not progress)
    try:
        if ray is not None and ray is not False and rows:
            mapped = run_on_ray(
                rows, step, factory, as_options(ray), bar=bar, on_done=on_done, on_lost=on_lost, is_done=is_done
            )
            return mapped.outcomes
        return _run_here(rows, step, factory, bar, on_done)
    finally:
        bar.close()


def _run_here(rows: list, step: Callable, factory: Callable, bar, on_done) -> list[RowOutcome]:
    built: list = []
    load: list[float] = []

    def model():
        if not built:
            start = time.perf_counter()
            built.append(factory())
            load.append(time.perf_counter() - start)
        return built[0]

    outcomes = []
    for row in rows:
        start = time.perf_counter()
        first = not load
        try:
            value = step(row, model)
        except MedfoundryError as exc:
            outcome = RowOutcome(False, why=str(exc))
        else:
            took = time.perf_counter() - start
            outcome = RowOutcome(True, value, seconds=took, model_seconds=load[0] if first and load else None)
        outcomes.append(outcome)
        if on_done is not None:
            on_done(row, outcome)
        bar.update(1)
    return outcomes


def scan_folder(image: Path, out_dir: Path, base: Path | None = None) -> Path:
    """A manifest row's output folder when it names none: its image's path under ``base`` (the manifest's folder)
    without the suffix, below ``out_dir`` (``scans/p1/SUV.nii.gz`` -> ``OUT/p1/SUV``, so that autoPET's many
    ``SUV.nii.gz`` stay apart); an image outside ``base``: ``OUT/<its folder>_<its name>``."""
    from medfoundry.io.paths import split_suffix

    name = image.name if image.is_dir() else split_suffix(image)[0]
    if base is not None and image.resolve().is_relative_to(base.resolve()):
        return out_dir / image.resolve().relative_to(base.resolve()).parent / name
    return out_dir / f"{image.parent.name}_{name}"


# Ray: the rows on actors (each builds its model once), and experiment grids as tasks.

LOCAL = "local"  # start Ray on this machine unless RAY_ADDRESS or a `ray start` cluster on it says otherwise
RESTART_WAIT_S = 300.0  # an actor that has not come back after a death within this long is given up
INLINE_BYTES = 64 * 1024  # actor arguments below Ray's inline limit (100 KiB) travel with the actor


@dataclass
class RayOptions:
    """Where and how wide: ``address`` ``"local"`` (this machine: a cluster it belongs to, else a new local Ray),
    ``"auto"`` (the cluster this machine belongs to, error if none), ``HOST:PORT`` or ``ray://HOST:PORT``;
    ``actors`` (default: as many as the cluster's CPUs / GPUs allow, at most one per row); the CPUs (threads)
    and GPUs each actor reserves; ``retries``: how often a row is redone after its worker died."""

    address: str = LOCAL
    actors: int | None = None
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0
    retries: int = 2

    def __post_init__(self) -> None:
        self.address = (self.address or LOCAL).strip()
        if self.actors is not None and self.actors < 1:
            raise InputError("--ray-actors", f"expected at least 1 actor, got {self.actors}")
        if self.cpus_per_actor <= 0 or self.gpus_per_actor < 0 or self.retries < 0:
            raise InputError("--ray", "CPUs per actor must be > 0, GPUs per actor and retries >= 0")

    @property
    def threads(self) -> int:
        """Torch threads per actor: its whole CPUs (at least one)."""
        return max(1, int(self.cpus_per_actor))


def as_options(ray: RayOptions | str | bool) -> RayOptions:
    """``ray=`` of the API: options, an address, or True for the local default."""
    if isinstance(ray, RayOptions):
        return ray
    return RayOptions(LOCAL if ray is True else str(ray))


def _check_reachable(address: str, timeout: float = 10.0) -> None:
    """:class:`InputError` (one line) when nothing listens at ``HOST:PORT`` (``ray.init`` would retry for
    minutes against a wrong address)."""
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise InputError("--ray", f"{address!r}: expected HOST:PORT, ray://HOST:PORT, 'auto' or 'local'")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise InputError(
            "--ray", f"cannot reach a Ray cluster at {address} ({why}); start one there with 'ray start --head'"
        ) from None


def connect(options: RayOptions) -> bool:
    """Join (or start) the Ray cluster ``options.address`` names; True when this call did (the caller shuts it
    down again), False when this process was already connected."""
    import ray

    if ray.is_initialized():
        return False
    address = None if options.address == LOCAL else options.address
    if address not in (None, "auto"):
        _check_reachable(address)
    try:
        ray.init(address=address, include_dashboard=False, logging_level=logging.ERROR)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise InputError("--ray", f"cannot join the Ray cluster at {options.address}: {first}") from None
    return True


def actor_count(options: RayOptions, rows: int) -> int:
    """How many actors: ``options.actors``, else what the cluster's CPUs (and GPUs) hold; at most ``rows``.
    :class:`InputError` when the cluster has less than one actor's worth of CPUs or GPUs."""
    import ray

    have = ray.cluster_resources()
    cpus, gpus = float(have.get("CPU", 0)), float(have.get("GPU", 0))
    if cpus < options.cpus_per_actor:
        raise InputError("--ray-cpus-per-actor", f"{options.cpus_per_actor:g} per actor; the cluster has {cpus:g}")
    if gpus < options.gpus_per_actor:
        raise InputError("--ray-gpus-per-actor", f"{options.gpus_per_actor:g} per actor; the cluster has {gpus:g}")
    fit = int(cpus // options.cpus_per_actor)
    if options.gpus_per_actor:
        fit = min(fit, int(gpus // options.gpus_per_actor))
    return max(1, min(options.actors or fit, rows))


def _node() -> str:
    import ray

    return ray.util.get_node_ip_address()


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


class RowWorker:
    """The body of one Ray actor: ``run(row)`` applies ``step(row, model)``, where ``model()`` builds the model
    with ``factory`` at the first row that asks for it and returns the same one afterwards."""

    def __init__(self, step: Callable, factory: Callable, threads: int, tag_node: bool):
        import torch

        torch.set_num_threads(threads)  # (segment_row reads without the DICOM bar: the driver's bar counts rows)
        self.step, self.factory, self.tag_node = step, factory, tag_node
        self.built: list = []

    def ping(self) -> str:
        """The node this actor runs on (answers once the actor is up, e.g. after a restart)."""
        return _node()

    def run(self, row) -> dict:
        """``{"ok": True, "value", "seconds", "model_seconds", "node"}`` or ``{"ok": False, "why"}``: a row's own
        problem is returned, never raised, so that the driver reports it and goes on."""
        start = time.perf_counter()
        load: list[float] = []

        def model():
            if not self.built:
                t0 = time.perf_counter()
                self.built.append(self.factory())
                load.append(time.perf_counter() - t0)
            return self.built[0]

        where = f" (on node {_node()})" if self.tag_node else ""
        try:
            value = self.step(row, model)
        except MedfoundryError as exc:
            return {"ok": False, "why": str(exc) + where}
        except Exception as exc:  # noqa: BLE001 - one row's unexpected failure is reported, the run goes on
            return {"ok": False, "why": _one_line(exc) + where}
        took = time.perf_counter() - start
        return {
            "ok": True,
            "value": value,
            "seconds": took,
            "model_seconds": load[0] if load else None,
            "node": _node(),
        }


@dataclass
class MapResult:
    """Every row's outcome (in row order), the rows redone after a worker died, and the actors used."""

    outcomes: list[RowOutcome]
    retried: list[str]
    actors: int


def _death_cause(exc: BaseException) -> str:
    text = str(exc)
    if "memory" in text.lower():
        return "the worker ran out of memory"
    return _one_line(exc)


def map_rows(
    rows: list,
    step: Callable,
    factory: Callable,
    options: RayOptions,
    *,
    bar: tqdm | None = None,
    on_lost: Callable[[Any], None] | None = None,
    on_done: Callable[[Any, RowOutcome], None] | None = None,
) -> MapResult:
    """Apply ``step(row, model)`` to every row on a pool of Ray actors (connected already: :func:`connect`).

        ``factory`` builds an actor's model once (at the actor's first row that needs it); ``on_lost(row)`` cleans
        up after a row whose worker died (its temporary files) before it is redone; ``on_done(row, outcome)`` is called
    here, on the driver, as each row finishes (or fails for good). Ctrl-C stops every actor, cleans
        up the rows in flight and re-raises :class:`KeyboardInterrupt`.
    """
    import ray
    from ray.exceptions import ActorUnavailableError, RayActorError

    n_actors = actor_count(options, len(rows))
    tag_node = len([n for n in ray.nodes() if n.get("Alive")]) > 1
    remote = ray.remote(RowWorker)
    run_id = uuid.uuid4().hex[:8]
    # a restarted actor is built again from its arguments: small ones travel inline with it, large ones (a model
    # pickled into the factory) go to the object store and are held here for the whole run
    step_ref, factory_ref = (ray.put(a) if len(ray.cloudpickle.dumps(a)) > INLINE_BYTES else a for a in (step, factory))
    actors = [
        remote.options(
            name=f"medfoundry-{run_id}-{i}",
            num_cpus=options.cpus_per_actor,
            num_gpus=options.gpus_per_actor,
            max_restarts=-1,
            max_task_retries=0,
            max_concurrency=1,
        ).remote(step_ref, factory_ref, options.threads, tag_node)
        for i in range(n_actors)
    ]
    outcomes: list[RowOutcome | None] = [None] * len(rows)
    attempts = [0] * len(rows)
    retried: list[str] = []
    pending = deque(range(len(rows)))
    idle = deque(range(n_actors))
    running: dict = {}  # ObjectRef -> (actor, row)
    pings: dict = {}  # ObjectRef -> actor
    waiting: list[tuple[float, int, float]] = []  # (ping again at, actor, given up at)
    causes: list[str] = []  # why actors were given up

    def lost(row: int, exc: BaseException) -> None:
        attempts[row] += 1
        retried.append(rows[row].name)
        if on_lost is not None:
            on_lost(rows[row])
        if attempts[row] > options.retries:
            why = f"its Ray worker died {attempts[row]} times ({_death_cause(exc)})"
            outcomes[row] = RowOutcome(False, why=why)
            if on_done is not None:
                on_done(rows[row], outcomes[row])
            if bar is not None:
                bar.update(1)
        else:
            pending.appendleft(row)

    def ping(actor: int, give_up: float) -> None:
        pings[actors[actor].ping.remote()] = (actor, give_up)

    try:
        while pending or running:
            while idle and pending:
                actor, row = idle.popleft(), pending.popleft()
                running[actors[actor].run.remote(rows[row])] = (actor, row)
            now = time.monotonic()
            for item in [w for w in waiting if w[0] <= now]:
                waiting.remove(item)
                ping(item[1], item[2])
            if not (running or pings or waiting or idle):
                why = f" ({causes[-1]})" if causes else ""
                raise MedfoundryError(f"no Ray worker is left to run the {len(pending)} remaining row(s){why}")
            ready, _ = ray.wait([*running, *pings], num_returns=1, timeout=0.5)
            for ref in ready:
                if ref in pings:
                    actor, give_up = pings.pop(ref)
                    try:
                        ray.get(ref)
                        idle.append(actor)
                    except ActorUnavailableError:  # still restarting
                        if time.monotonic() < give_up:
                            waiting.append((time.monotonic() + 0.5, actor, give_up))
                        else:
                            causes.append(f"a worker did not come back within {RESTART_WAIT_S:.0f} s")
                    except RayActorError as exc:  # could not be restarted
                        causes.append(_death_cause(exc))
                    continue
                actor, row = running.pop(ref)
                try:
                    out = ray.get(ref)
                except RayActorError as exc:  # the worker died on this row: Ray restarts it
                    lost(row, exc)
                    ping(actor, time.monotonic() + RESTART_WAIT_S)
                    continue
                outcomes[row] = (
                    RowOutcome(
                        True,
                        out["value"],
                        seconds=out["seconds"],
                        model_seconds=out["model_seconds"],
                        worker=actor,
                        node=out["node"],
                    )
                    if out["ok"]
                    else RowOutcome(False, why=out["why"], worker=actor)
                )
                if on_done is not None:
                    on_done(rows[row], outcomes[row])
                idle.append(actor)
                if bar is not None:
                    bar.update(1)
    except KeyboardInterrupt:
        for handle in actors:
            ray.kill(handle, no_restart=True)
        ray.wait(list(running), num_returns=len(running), timeout=10)  # the killed writers are gone
        for _, row in running.values():
            if on_lost is not None:
                on_lost(rows[row])
        raise
    for handle in actors:
        ray.kill(handle, no_restart=True)
    return MapResult([o for o in outcomes if o is not None], retried, n_actors)


def run_on_ray(
    rows: list,
    step: Callable,
    factory: Callable,
    options: RayOptions,
    *,
    bar: tqdm | None = None,
    on_done: Callable[[Any, RowOutcome], None] | None = None,
    on_lost: Callable[[Any], None] | None = None,
    is_done: Callable[[Any], bool] | None = None,
) -> MapResult:
    """:func:`map_rows` in a Ray session of its own (joined or started here, shut down after when this call
    started it). Ctrl-C: :class:`KeyboardInterrupt` saying how many rows were written (``is_done(row)``) and
    that a rerun resumes."""
    ours = connect(options)
    try:
        return map_rows(rows, step, factory, options, bar=bar, on_lost=on_lost, on_done=on_done)
    except KeyboardInterrupt:
        done = sum(1 for row in rows if is_done(row)) if is_done is not None else 0
        raise KeyboardInterrupt(
            f"{done} of {len(rows)} rows were written and stay; run the same command again to resume"
        ) from None
    finally:
        if bar is not None:
            bar.close()
        if ours:
            import ray as ray_module

            ray_module.shutdown()


def _call_with_threads(fn: Callable, threads: int, *job):
    """Inside a Ray task: ``fn(*job)`` with ``threads`` torch threads (the task's CPU budget)."""
    import torch

    torch.set_num_threads(threads)
    return fn(*job)


def run_tasks(
    fn: Callable,
    jobs: list[tuple],
    names: list[str],
    options: RayOptions,
    *,
    gpus: float = 0.0,
    on_result: Callable[[int, Any], None] | None = None,
    progress: bool = True,
    desc: str = "points",
) -> list:
    """Every ``fn(*job)`` as a Ray task (an experiment grid's points) with ``options.cpus_per_actor`` CPUs (its
    torch threads) and ``gpus`` GPUs each; results in job order, each also handed to ``on_result(index, result)``
    as it arrives (so that finished points are kept if others fail or the run is stopped). A point that raises is
    reported with the others' results kept: :class:`MedfoundryError` naming the failed points at the end. Ray
    retries a task whose node was lost (``options.retries`` times); Ctrl-C cancels what is left."""
    import ray

    ours = connect(options)
    remote = ray.remote(_call_with_threads).options(
        num_cpus=options.cpus_per_actor, num_gpus=gpus, max_retries=options.retries, retry_exceptions=False
    )
    results: list = [None] * len(jobs)
    failed: list[str] = []
    refs = {remote.remote(fn, options.threads, *job): i for i, job in enumerate(jobs)}
    bar = tqdm(total=len(jobs), desc=desc, unit="point", disable=not progress)
    try:
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1)
            i = refs.pop(ready[0])
            try:
                results[i] = ray.get(ready[0])
            except Exception as exc:  # noqa: BLE001 - one point's failure is reported, the others go on
                cause = getattr(exc, "cause", None) or exc
                failed.append(f"{names[i]}: {_one_line(cause)}")
            else:
                if on_result is not None:
                    on_result(i, results[i])
            bar.update(1)
    except KeyboardInterrupt:
        for ref in refs:
            ray.cancel(ref, force=True)
        raise
    finally:
        bar.close()
        if ours:
            ray.shutdown()
    if failed:
        raise MedfoundryError(f"{len(failed)} of {len(jobs)} points failed: " + "; ".join(failed))
    return results
