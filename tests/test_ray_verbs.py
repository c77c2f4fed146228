"""``--ray`` beyond ``segment``: ``lesions --manifest``, ``classify embed`` and ``classify predict --manifest`` on a
local Ray instance (2 CPUs) give the same files as the local run (one model load per actor, the same resume rule,
bad rows at the end); ``classify predict --manifest`` runs locally with one model load; the local paths import no
Ray."""

from __future__ import annotations

import csv
import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from test_classify_data import synthetic_case

from medfoundry.errors import BatchFailures
from medfoundry.inference.lesions.features import HANDCRAFTED
from medfoundry.modeling.lesion_classifier import LesionClassifier

ray = pytest.importorskip("ray")

TABLE_COLUMNS = ("scan", "status", "lesion_count", "total_mtv_ml", "total_tlg", "threshold_suv", "error")


@pytest.fixture(scope="module")
def cluster():
    """One local Ray instance for the module (2 CPUs: 2 actors of 1 thread)."""
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20, logging_level=logging.ERROR)
    yield
    ray.shutdown()


@pytest.fixture
def one_thread():
    """The local run with 1 torch thread, as each actor has (the same sums: the same bytes)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def suvmax_model(tmp_path_factory):
    """A handcrafted-feature lesion classifier (SUVmax >= 4; no encoder needed)."""
    coef = np.zeros(len(HANDCRAFTED))
    coef[HANDCRAFTED.index("log_suv_max")] = 5.0
    clf = LesionClassifier(list(HANDCRAFTED), np.zeros(len(coef)), np.ones(len(coef)), coef,
                           -5.0 * np.log(4.0), threshold=0.5, version="test")  # fmt: skip
    return clf.save(tmp_path_factory.mktemp("model") / "suvmax.json")


def _lesion_manifest(shared_data, folder, extra: str = ""):
    crops = shared_data / "pet-sts"
    path = folder / "scans.csv"
    lines = ["image,out"] + [f"{crops / c / 'PET_image.nii.gz'},{c}" for c in ("STS_021", "STS_022", "STS_025")]
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def _table(out):
    return [{k: r[k] for k in TABLE_COLUMNS} for r in csv.DictReader((out / "cohort.csv").open())]


def test_lesions_manifest_on_ray_gives_the_local_folders(cluster, shared_data, suvmax_model, tmp_path, one_thread):
    from medfoundry.api import lesions_manifest
    from medfoundry.api.ray_batch import RayOptions

    options = dict(model=suvmax_model, delineation="threshold", progress=False)
    here, there = tmp_path / "here", tmp_path / "there"
    for folder in (here, there):
        folder.mkdir()
    extra = f"{tmp_path / 'missing.nii.gz'},gone\n"
    with pytest.raises(BatchFailures):
        lesions_manifest(_lesion_manifest(shared_data, here, extra), here / "out", **options)
    with pytest.raises(BatchFailures) as info:
        lesions_manifest(
            _lesion_manifest(shared_data, there, extra), there / "out", ray=RayOptions(actors=2), **options
        )
    result = info.value.result
    assert [p.name for p in result.written] == ["STS_021", "STS_022", "STS_025"]
    ((name, why),) = result.failed  # the missing input: reported at the end, the others done
    assert "missing.nii.gz" in name and "no such file" in why.lower()
    assert _table(here / "out") == _table(there / "out")  # the cohort table, in manifest order
    for case in ("STS_021", "STS_022", "STS_025"):
        for name in ("lesions.nii.gz", "lesions.csv"):
            assert (here / case / name).read_bytes() == (there / case / name).read_bytes(), (case, name)
    again = lesions_manifest(_lesion_manifest(shared_data, there, ""), there / "out", ray=True, **options)
    assert len(again.kept) == 3 and not again.written  # resume: a folder with lesions.json is a finished row


@pytest.fixture(scope="module")
def slice_data(tmp_path_factory):
    """A small slice dataset (10 synthetic cases, 100 slices of 32 px) and new scans to predict on."""
    from medfoundry.api import classify_build

    folder = tmp_path_factory.mktemp("slices")
    lines = ["case_id,image,mask,patient_id"]
    for i in range(10):
        lesions = (2, 3, 4) if i % 2 == 0 else (5, 6)
        image, label, _, _ = synthetic_case(folder, f"s{i}", seed=i, nz=10, lesion_slices=lesions)
        lines.append(f"s{i},{image.name},{label.name},p{i}")
    (folder / "cases.csv").write_text("\n".join(lines) + "\n")
    dataset = folder / "ds"
    classify_build(out=dataset, cases=folder / "cases.csv", grid=(16, 16, 0), size=32, test_patients=["p0"])
    return folder, dataset


def test_classify_embed_on_ray_writes_the_local_cache(cluster, slice_data, tmp_path, one_thread):
    from medfoundry.api import ClassifyEmbedOptions, classify_embed

    _, dataset = slice_data
    options = ClassifyEmbedOptions(dataset, encoder="dinov2_small", tiny=True, backend="torch", chunk_rows=32)
    local = classify_embed(options, cache=tmp_path / "here", progress=False)
    far = classify_embed(options, cache=tmp_path / "there", progress=False, ray="local")
    assert far.chunks_done == 4 and far.cache.path.name == local.cache.path.name
    assert (far.cache.path / "embeddings.npy").read_bytes() == (local.cache.path / "embeddings.npy").read_bytes()
    manifest = json.loads((far.cache.path / "manifest.json").read_text())
    assert manifest["complete"] and manifest["done"] == 100 and not (far.cache.path / "chunks").exists()
    again = classify_embed(options, cache=tmp_path / "there", progress=False, ray="local")
    assert again.chunks_done == 0  # a complete cache is reused


@pytest.fixture(scope="module")
def bundle(slice_data):
    """A linear head on the tiny encoder's cache: predicting runs the encoder (built once per process)."""
    from medfoundry.api import classify_compare, classify_embed

    folder, dataset = slice_data
    classify_embed(dataset=dataset, encoder="dinov2_small", tiny=True, backend="torch", progress=False)
    classify_compare(dataset=dataset, out=folder / "cmp", no_cnn=True, head_epochs=40)
    return folder / "cmp" / "models" / "dinov2_small.pt"


def _predict_manifest(folder, extra: str = ""):
    lines = ["image,mask"]
    for i, lesions in enumerate(((7, 8), (2, 3), (4,))):
        image, label, _, _ = synthetic_case(folder, f"new{i}", seed=40 + i, nz=10, lesion_slices=lesions)
        lines.append(f"{image.name},{label.name}")
    path = folder / "scans.csv"
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def test_classify_predict_manifest_locally_and_on_ray(cluster, bundle, tmp_path, monkeypatch, one_thread):
    import medfoundry.inference.slice_classifier as sc
    from medfoundry.api import classify_predict_many

    built = []
    real = sc.bundle_encoder
    monkeypatch.setattr(sc, "bundle_encoder", lambda *a: built.append(1) or real(*a))
    here, there = tmp_path / "here", tmp_path / "there"
    for folder in (here, there):
        folder.mkdir()
    extra = "missing.nii.gz,\nnew0_pet.nii.gz,\n"  # a missing scan; a second row into new0's folder
    options = dict(model=bundle, backend="torch", embedding_cache=False, progress=False)
    with pytest.raises(BatchFailures) as info:
        classify_predict_many(manifest=_predict_manifest(here, extra), out=here / "out", **options)
    local = info.value.result
    assert [p.name for p in local.written] == ["new0_pet", "new1_pet", "new2_pet"] and len(built) == 1  # one load
    (missing, why_missing), (twice, why_twice) = local.failed
    assert "missing.nii.gz" in missing and "also written by" in why_twice
    with pytest.raises(BatchFailures) as info:
        classify_predict_many(manifest=_predict_manifest(there, extra), out=there / "out", ray="local", **options)
    far = info.value.result
    assert [p.name for p in far.written] == ["new0_pet", "new1_pet", "new2_pet"]
    assert [name for name, _ in far.failed] == [missing, twice] and "also written by" in far.failed[1][1]
    for name in ("new0_pet", "new1_pet", "new2_pet"):
        csv_name = "slice_probabilities.csv"
        assert (here / "out" / name / csv_name).read_bytes() == (there / "out" / name / csv_name).read_bytes()
    again = classify_predict_many(manifest=_predict_manifest(there), out=there / "out", ray="local", **options)
    assert len(again.kept) == 3 and not again.written  # resume


def _cli(args: list[str], code: str = "") -> subprocess.CompletedProcess:
    """``medfoundry ARGS`` in a fresh interpreter, then ``code`` (without MEDFOUNDRY_RAY in the environment)."""
    env = {k: v for k, v in os.environ.items() if k != "MEDFOUNDRY_RAY"}
    script = f"import sys\nfrom medfoundry.cli.main import main\nrc = main({args!r})\n{code}\nsys.exit(rc)"
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)


def test_the_local_batch_paths_import_no_ray(shared_data, suvmax_model, bundle, tmp_path):
    no_ray = "assert 'ray' not in sys.modules, 'ray was imported'"
    manifest = _lesion_manifest(shared_data, tmp_path)
    manifest.write_text("\n".join(manifest.read_text().splitlines()[:2]) + "\n")
    args = ["lesions", "--manifest", str(manifest), "--out", str(tmp_path / "cohort"), "--model", str(suvmax_model),
            "--delineation", "threshold", "--no-progress"]  # fmt: skip
    run = _cli(args, no_ray)
    assert run.returncode == 0, run.stderr
    assert "1 scan(s) done" in run.stdout
    scans = _predict_manifest(tmp_path)
    args = ["classify", "predict", "--manifest", str(scans), "--model", str(bundle), "--out", str(tmp_path / "p"),
            "--backend", "torch", "--no-embedding-cache", "--no-progress"]  # fmt: skip
    run = _cli(args, no_ray)
    assert run.returncode == 0, run.stderr
    assert "3 scan(s) done, 0 kept from an earlier run, 0 failed" in run.stdout
    assert (tmp_path / "p" / "new2_pet" / "flagged_ranges.json").is_file()
