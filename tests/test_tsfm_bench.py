"""bench/tsfm_transfer.py: the pool holds no transfer or test patient; one transfer point reproduces exactly."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from medfoundry.data.pool import load_pool_config
from medfoundry.data.pool_report import sampling_rows

BENCH = Path(__file__).resolve().parents[1] / "bench" / "tsfm_transfer.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_tsfm_transfer", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _load(bench, shared_data, tmp_path, pool_pet):
    path = tmp_path / f"pool_{pool_pet}.json"
    path.write_text(json.dumps(bench.pool_config(shared_data, 4.0, [16, 32, 32], pool_pet)))
    return load_pool_config(path)


def test_pool_has_every_source_but_no_transfer_or_test_patient(bench, shared_data, tmp_path):
    cfg = _load(bench, shared_data, tmp_path, "disjoint")
    files = [str(p) for s in cfg.sources for case in s.cases for p in case]
    held_out = bench.CANDIDATES + bench.TEST
    assert not [f for f in files if any(f"/{p}/" in f or f"/{p}_" in f for p in held_out)]
    rows = {r["source"]: r for r in sampling_rows(cfg)}
    assert rows["sarcoma_pet"]["cases"] == 10 and rows["deeplesion_ct"]["cases"] == 3
    assert rows["sarcoma_ct"]["cases"] == rows["sarcoma_mr"]["cases"] == 4
    assert {"totalseg_ct", "totalseg_mr", "brats_edema_mr", "lung_tumour_ct", "sarcoma_pet_wholebody"} <= set(rows)
    assert sum(r["share"] for r in rows.values()) == pytest.approx(1.0)
    # 1/sqrt(n): the 10-case PET source is drawn sqrt(10) times as often as a one-case source
    assert rows["sarcoma_pet"]["share"] / rows["brats_edema_mr"]["share"] == pytest.approx(10**0.5)
    assert set(bench.CLASSES) == {c for s in cfg.sources for c in s.annotated}  # every class is taught
    no_pet = _load(bench, shared_data, tmp_path, "none")
    assert {s.modality for s in no_pet.sources} == {"CT", "MR", "OTHER"}
    # the transfer patients: nested in k, drawn from the candidates, changed by the seed
    picks = [bench.choose_patients(k, 0) for k in (1, 3, 5)]
    assert picks[0] == picks[1][:1] and picks[1] == picks[2][:3] and set(picks[2]) <= set(bench.CANDIDATES)
    assert bench.choose_patients(5, 1) != picks[2]


def test_one_transfer_point_reproduces_and_check_point_says_so(bench, shared_data, tmp_path, capsys, monkeypatch):
    argv = ["--data", str(shared_data), "--transfer-epochs", "1", "--transfer-iters", "2", "--point-threads", "1"]
    args = bench.parse_args(argv)
    test = bench.TEST[:1]
    point = bench.Point(1, "from scratch", 0)
    task = tmp_path / "task"
    bench.build(bench.task_config(shared_data, bench.choose_patients(1, 0), 4.0, [16, 32, 32]), task)
    first = bench.run_point(point, args, task, tmp_path / "none.pt", tmp_path / "a", test)
    assert first["patients"] == bench.choose_patients(1, 0) and len(first["dice"]) == 1 and len(first["loss"]) == 1

    # --check-point re-trains the point from scratch (a new process state, a new task pool) and compares
    work = tmp_path / "work"
    work.mkdir()
    stored = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
    stored |= {"split": {"test": test}, "points": [first]}
    (work / "results.json").write_text(json.dumps(stored))
    check = ["--data", str(shared_data), "--work", str(work), "--check-point", "1", "scratch", "0"]
    assert bench.main(check) == 0
    assert "identical" in capsys.readouterr().out
    # a re-run that differs in the last digit is reported as different
    real = bench.run_point
    monkeypatch.setattr(bench, "run_point", lambda *a: real(*a) | {"loss": [first["loss"][0] + 1e-9]})
    assert bench.main(check) == 1
    assert "DIFFERENT" in capsys.readouterr().out
