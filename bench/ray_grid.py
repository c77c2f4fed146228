"""The grid runner the benches share (nnunet_pet, adapt_pet, tsfm_transfer): each grid point's result in its own
JSON file, ``--only-missing`` (keep the points a folder already holds), and ``--ray [ADDRESS]``: the missing points
as Ray tasks (``medfoundry.api.ray_batch.run_tasks``), each with its own thread budget and GPUs, so that a grid's full
GPU setting runs as one command on a cluster (the work folder on a file system every node sees).

A bench imports it with ``sys.path.insert(0, str(Path(__file__).parent)); import ray_grid`` (bench/ is no
package); the point functions it ships to Ray travel by value, so the workers need medfoundry, not bench/.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path


def add_ray_args(p: argparse.ArgumentParser, cpus_help: str = "--threads") -> None:
    """``--ray [ADDRESS]`` and ``--ray-gpus-per-point`` (a point's CPUs are the bench's own thread option)."""
    p.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="run the grid points as Ray tasks: without ADDRESS on this machine, else a cluster's HOST:PORT, "
        f"'auto' or ray://HOST:PORT (each point gets {cpus_help} CPUs; pip install 'medfoundry[ray]')",
    )
    p.add_argument("--ray-gpus-per-point", type=float, default=0.0, metavar="G", help="GPUs per Ray task")


def point_file(folder: Path, name: str) -> Path:
    """Where a point's result is kept: ``FOLDER/NAME.json``."""
    return Path(folder) / f"{name}.json"


def _save(path: Path, result) -> None:
    from medfoundry.io.atomic import atomic_path

    with atomic_path(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(result, indent=1))


def run_points(
    fn: Callable,
    jobs: list[tuple],
    names: list[str],
    folder: Path,
    *,
    only_missing: bool = False,
    ray: str | None = None,
    threads: int = 1,
    gpus: float = 0.0,
    processes: int = 1,
    on_result: Callable[[dict], None] | None = None,
) -> list:
    """``fn(*job)`` for every point not already in ``folder`` (with ``only_missing``), each result written to
    ``folder/NAME.json`` as it arrives; returns every point's result in order (kept ones read back).

    Where: Ray tasks of ``threads`` CPUs and ``gpus`` GPUs (``ray``: an address or "local"), else ``processes``
    spawned processes (1: here, one after the other). ``on_result`` sees each new result (e.g. to print it).
    """
    folder = Path(folder)
    done = {}
    if only_missing:
        done = {n: json.loads(point_file(folder, n).read_text()) for n in names if point_file(folder, n).is_file()}
        if done:
            print(f"kept {len(done)} of {len(names)} points from {folder} (--only-missing)", flush=True)
    todo = [i for i, n in enumerate(names) if n not in done]

    def keep(k: int, result) -> None:
        name = names[todo[k]]
        _save(point_file(folder, name), result)
        done[name] = result
        if on_result is not None:
            on_result(result)

    todo_jobs = [jobs[i] for i in todo]
    if ray:
        import sys

        import ray as ray_module

        from medfoundry.api.ray_batch import RayOptions, run_tasks

        module = sys.modules.get(fn.__module__)
        if module is not None and not fn.__module__.startswith(("medfoundry", "__main__")):
            ray_module.cloudpickle.register_pickle_by_value(module)  # a bench imported by path, not installed

        options = RayOptions(ray, cpus_per_actor=float(threads))
        run_tasks(fn, todo_jobs, [names[i] for i in todo], options, gpus=gpus, on_result=keep)
    elif processes > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(processes, mp_context=mp.get_context("spawn")) as pool:
            futures = [pool.submit(fn, *job) for job in todo_jobs]
            for k, future in enumerate(futures):
                keep(k, future.result())
    else:
        for k, job in enumerate(todo_jobs):
            keep(k, fn(*job))
    return [done[n] for n in names]
