"""``segment --manifest --ray``: the rows of a manifest on a local Ray instance (2 CPUs) give the same files as the
local loop; a killed actor is restarted and its row redone; bad rows are reported; the local path imports no Ray."""

from __future__ import annotations

import functools
import logging
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch

from medfoundry.errors import BatchFailures, InputError
from medfoundry.inference.manifest import read_manifest
from medfoundry.io import read_mask

ray = pytest.importorskip("ray")

CASES = ("STS_001", "STS_002", "STS_003", "STS_004")


@pytest.fixture(scope="module")
def cluster():
    """One local Ray instance for the module (2 CPUs: 2 actors of 1 thread)."""
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20, logging_level=logging.ERROR)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def factory(tiny_model):
    """A picklable model factory: every actor unpickles its own copy of the tiny model (torch backend)."""
    from medfoundry.inference.predictor import LiteMedSAMPredictor

    return functools.partial(LiteMedSAMPredictor, model=tiny_model, backend="torch")


def _manifest(folder, shared_data, extra: str = "") -> str:
    """4 real PET crops, each with a 3D box around its tumour over two slices (kept short: a test)."""
    lines = ["image,box,out"]
    for case in CASES:
        mask = read_mask(shared_data / "pet-sts" / case / "PET_mask.nii.gz").array > 0
        z, y, x = np.nonzero(mask)
        zm = int(np.median(z))
        image = shared_data / "pet-sts" / case / "PET_image.nii.gz"
        lines.append(f"{image},{x.min()} {y.min()} {zm} {x.max()} {y.max()} {zm + 1},{case}_seg.nii.gz")
    path = folder / "scans.csv"
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


@pytest.fixture(scope="module")
def local_run(shared_data, factory, tmp_path_factory):
    """The manifest and the bytes of every mask the local loop writes (1 torch thread, as each actor has)."""
    from medfoundry.api import segment_many

    folder = tmp_path_factory.mktemp("ray_local")
    manifest = _manifest(folder, shared_data)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = segment_many(read_manifest(manifest), predictor=factory, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert len(result.written) == 4
    return manifest, {case: (folder / f"{case}_seg.nii.gz").read_bytes() for case in CASES}


def _rows(manifest, out):
    rows = read_manifest(manifest)
    for row in rows:
        row.out = out / row.out.name
    return rows


def _no_temporaries(folder) -> bool:
    return not [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_ray_gives_the_same_files_as_the_local_loop(cluster, local_run, factory, tmp_path):
    from medfoundry.api.ray_batch import RayOptions, segment_many_ray

    manifest, local = local_run
    result = segment_many_ray(_rows(manifest, tmp_path), RayOptions(actors=2), predictor=factory, progress=False)
    assert [p.name for p in result.written] == [f"{c}_seg.nii.gz" for c in CASES] and not result.failed
    assert {ph["worker"] for ph in result.phases} == {0, 1}  # both actors took rows
    for case in CASES:
        assert (tmp_path / f"{case}_seg.nii.gz").read_bytes() == local[case], case  # bit for bit
        assert read_mask(tmp_path / f"{case}_seg.nii.gz").array.any()
    again = segment_many_ray(_rows(manifest, tmp_path), "local", predictor=factory, progress=False)
    assert len(again.skipped) == 4 and not again.written  # resume: every output is a finished row


def test_a_killed_actor_is_restarted_and_its_row_redone(cluster, local_run, factory, tmp_path):
    from medfoundry.api.ray_batch import RayOptions, segment_many_ray

    manifest, local = local_run
    done: dict = {}

    def run():
        try:
            done["result"] = segment_many_ray(
                _rows(manifest, tmp_path), RayOptions(actors=2), predictor=factory, progress=False
            )
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            done["error"] = exc

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.monotonic() + 240
    while not any(tmp_path.glob("*_seg.nii.gz")) and worker.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    names = [n for n in ray.util.list_named_actors() if n.startswith("medfoundry-")]
    assert len(names) == 2
    for name in names:  # the first row is written: both actors hold a row now
        ray.kill(ray.get_actor(name), no_restart=False)
    worker.join(timeout=300)
    assert "error" not in done, done.get("error")
    result = done["result"]
    assert result.retried and not result.failed and len(result.written) == 4
    for case in CASES:
        assert (tmp_path / f"{case}_seg.nii.gz").read_bytes() == local[case], case
    assert _no_temporaries(tmp_path)  # the killed writers left nothing behind


def test_bad_rows_are_reported_and_the_others_finish(cluster, shared_data, factory, tmp_path):
    from medfoundry.api.ray_batch import segment_many_ray
    from medfoundry.inference.predictor import LiteMedSAMPredictor

    extra = f"{tmp_path / 'missing.nii.gz'},1 1 0 5 5 1,missing_seg.nii.gz\n"
    extra += f"{shared_data / 'pet-sts' / 'STS_001' / 'PET_image.nii.gz'},1 2 x 4 5 6,typo_seg.nii.gz\n"
    rows = _rows(_manifest(tmp_path, shared_data, extra), tmp_path / "out")
    with pytest.raises(BatchFailures) as info:
        segment_many_ray(rows[2:], "local", predictor=factory, progress=False)
    result = info.value.result
    assert [p.name for p in result.written] == ["STS_003_seg.nii.gz", "STS_004_seg.nii.gz"]
    (missing, why_missing), (typo, why_typo) = result.failed
    assert "missing.nii.gz" in missing and "no such file" in why_missing
    assert "expected numbers" in why_typo
    assert _no_temporaries(tmp_path / "out")
    with pytest.raises(InputError, match="as a factory"):
        segment_many_ray(
            rows[:1], True, predictor=LiteMedSAMPredictor(model=factory.keywords["model"], backend="torch")
        )


def _die_on_bad(row, model) -> str:
    """A step whose worker process dies on the row named 'bad' (as one killed for memory would)."""
    if row.name == "bad":
        os._exit(1)
    return row.name.upper()


def test_a_row_that_keeps_killing_its_worker_fails_after_the_retries(cluster):
    from types import SimpleNamespace

    from medfoundry.api.ray_batch import RayOptions, map_rows

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the step travels by value, not by import
    rows = [SimpleNamespace(name=n) for n in ("a", "bad", "c")]
    lost = []
    result = map_rows(rows, _die_on_bad, lambda: None, RayOptions(actors=2, retries=1), on_lost=lost.append)
    a, bad, c = result.outcomes
    assert (a.ok, a.value, c.ok, c.value) == (True, "A", True, "C")
    assert not bad.ok and bad.why.startswith("its Ray worker died 2 times")
    assert result.retried == ["bad", "bad"] and [r.name for r in lost] == ["bad", "bad"]


def _cli(args: list[str], code: str = "") -> subprocess.CompletedProcess:
    """``medfoundry ARGS`` in a fresh interpreter, then ``code`` (without MEDFOUNDRY_RAY in the environment)."""
    env = {k: v for k, v in os.environ.items() if k != "MEDFOUNDRY_RAY"}
    script = f"import sys\nfrom medfoundry.cli.main import main\nrc = main({args!r})\n{code}\nsys.exit(rc)"
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)


def test_the_local_path_imports_no_ray_and_a_bad_address_is_one_line(shared_data, tmp_path):
    manifest = _manifest(tmp_path, shared_data)
    rows = manifest.read_text().splitlines()
    manifest.write_text("\n".join(rows[:2]) + "\n")  # one scan
    args = ["segment", "--manifest", str(manifest), "--out", str(tmp_path), "--backend", "torch", "--no-progress"]
    local = _cli(args, "assert 'ray' not in sys.modules, 'ray was imported'")
    assert local.returncode == 0, local.stderr
    assert "wrote 1, skipped 0" in local.stdout and (tmp_path / "STS_001_seg.nii.gz").is_file()
    (tmp_path / "STS_001_seg.nii.gz").unlink()  # a row to do, so that the run needs the cluster
    port = _closed_port()
    bad = _cli([*args, "--ray", f"127.0.0.1:{port}"])
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        f"medfoundry segment: error: --ray: cannot reach a Ray cluster at 127.0.0.1:{port} (Connection refused); "
        "start one there with 'ray start --head'"
    ]


def _closed_port() -> int:
    """A local port with nothing listening on it."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
