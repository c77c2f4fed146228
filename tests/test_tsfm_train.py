"""TSFM training: 2-process gloo runs on loopback (DDP, and FSDP with activation checkpointing against DDP),
pretrain -> transfer -> predict CLI, crash and resume."""

from __future__ import annotations

import json
import os
import shutil
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from medfoundry.data.pool import PoolDataset, build_pool, load_pool_config
from medfoundry.errors import InputError
from medfoundry.io import MedicalImage, read_mask, write_image, write_mask
from medfoundry.modeling.tsfm import build_tsfm, load_checkpoint, set_activation_checkpointing
from medfoundry.training.distributed import barrier, init_distributed
from medfoundry.training.tsfm import TrainingStopped, TrainSettings, fit

PATCH = [8, 16, 16]
SMALL_PATCH = [32, 32, 32]


def _case(folder, name, labels, seed, modality="CT", shape=(12, 32, 32)):
    rng = np.random.default_rng(seed)
    img = rng.normal(0, 30, shape).astype(np.float32) - 100
    lbl = np.zeros(shape, np.uint8)
    for i, v in enumerate(labels):
        lbl[4:8, 6 + 10 * i : 12 + 10 * i, 8:20] = v
        img[lbl == v] += 200 * (i + 1)
    image = MedicalImage(img, (2.0, 2.0, 3.0), origin=(10.0, -5.0, 3.0), modality=modality)
    write_image(image, folder / f"{name}_image.nii.gz")
    write_mask(lbl, folder / f"{name}_mask.nii.gz", reference=image)


def _make_pool(root, name, classes, sources, patch=PATCH):
    cfg = {"name": name, "spacing_xyz_mm": [2.0, 2.0, 3.0], "patch_size_zyx": patch, "foreground_share": 0.5}
    cfg["classes"] = classes
    cfg["sources"] = sources
    path = root / f"{name}.json"
    path.write_text(json.dumps(cfg))
    build_pool(load_pool_config(path), root / name)
    return root / name


@pytest.fixture(scope="module")
def pools(tmp_path_factory):
    """A 2-source pretraining pool (organs / tumours, partial labels) and a 1-class transfer pool."""
    root = tmp_path_factory.mktemp("tsfm_pools")
    for sub in ("organs", "tumours", "new"):
        (root / sub).mkdir()
    for i in range(3):
        _case(root / "organs", f"o{i}", (1, 2), seed=i)
    _case(root / "tumours", "t0", (1,), seed=10)
    for i in range(2):
        _case(root / "new", f"n{i}", (1,), seed=20 + i, modality="MR")
    pre = _make_pool(
        root,
        "pre",
        ["liver", "kidney", "tumour"],
        [
            {
                "name": "organs",
                "modality": "CT",
                "root": "organs",
                "image_glob": "*_image.nii.gz",
                "labels": {"1": "liver", "2": "kidney"},
            },
            {
                "name": "tumours",
                "modality": "CT",
                "root": "tumours",
                "image_glob": "*_image.nii.gz",
                "labels": {"1": "tumour"},
            },
        ],
    )
    new = _make_pool(
        root,
        "new_task",
        ["lesion"],
        [{"name": "new", "modality": "MR", "root": "new", "image_glob": "*_image.nii.gz", "labels": {"1": "lesion"}}],
    )
    (root / "deep").mkdir()
    for i in range(2):  # the small preset (stride 16) needs 32-voxel patches
        _case(root / "deep", f"d{i}", (1, 2), seed=30 + i, shape=(32, 32, 32))
    organs = {"modality": "CT", "image_glob": "*_image.nii.gz", "labels": {"1": "liver", "2": "kidney"}}
    small = _make_pool(root, "small", ["liver", "kidney"], [{"name": "deep", "root": "deep", **organs}], SMALL_PATCH)
    return {"root": root, "pre": pre, "new": new, "small": small}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, pool: str, out: str, torchrun: bool = False) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    if torchrun:
        os.environ["TORCHELASTIC_RUN_ID"] = "test"  # what torchrun sets, also for --nproc_per_node 1
    torch.set_num_threads(1)
    env = init_distributed("cpu")
    group = {"joined": torch.distributed.is_initialized(), "distributed": env.distributed}
    with open(os.path.join(out, f"group{rank}.json"), "w") as fh:
        json.dump(group, fh)
    torch.manual_seed(100 + rank)  # different initial weights: DDP must broadcast rank 0's
    model = build_tsfm("tiny", num_classes=3, patch_size=tuple(PATCH))
    torch.save(model.state_dict(), os.path.join(out, f"init{rank}.pt"))
    settings = TrainSettings(epochs=1, iters_per_epoch=1, batch_size=1, lr=0.1, optimizer="sgd", mirror=False)
    fit(model, pool, os.path.join(out, "run"), settings, env, progress=False)
    torch.save(model.state_dict(), os.path.join(out, f"rank{rank}.pt"))
    torch.distributed.destroy_process_group()


def test_two_processes_gloo_hold_equal_weights_after_a_step(pools, tmp_path):
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(pools["pre"]), str(tmp_path)), nprocs=2, join=True)
    w0 = torch.load(tmp_path / "rank0.pt")
    w1 = torch.load(tmp_path / "rank1.pt")
    init0 = torch.load(tmp_path / "init0.pt")
    init1 = torch.load(tmp_path / "init1.pt")
    assert not torch.equal(init0["stem.weight"], init1["stem.weight"])
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
    assert not torch.equal(w0["stem.weight"], init0["stem.weight"])  # the step changed the weights
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")  # written once, by rank 0
    assert ckpt["epoch"] == 1 and torch.equal(ckpt["model"]["stem.weight"], w0["stem.weight"])


def test_one_process_under_torchrun_joins_a_process_group(pools, tmp_path):
    """torchrun --nproc_per_node 1 (one GPU: NCCL) joins a group of one and trains through DDP."""
    mp.spawn(_ddp_worker, args=(1, _free_port(), str(pools["pre"]), str(tmp_path), True), nprocs=1, join=True)
    assert json.loads((tmp_path / "group0.json").read_text()) == {"joined": True, "distributed": True}
    assert load_checkpoint(tmp_path / "run" / "model.pt")["epoch"] == 1
    assert not init_distributed("cpu").distributed  # without torchrun's variables: alone, no group


def _parallel_worker(rank: int, world: int, port: int, pool: str, out: str) -> None:
    """The same two steps with DDP and with FSDP + activation checkpointing (the small preset, different initial
    weights per rank), then the DDP run resumed for a second epoch under FSDP."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    env = init_distributed("cpu")
    common = {"iters_per_epoch": 2, "batch_size": 1, "lr": 0.05, "mirror": False}
    for parallel, checkpointing in (("ddp", False), ("fsdp", True)):
        torch.manual_seed(100 + rank)  # both modes must start every rank from rank 0's weights
        model = build_tsfm("small", num_classes=2, patch_size=tuple(SMALL_PATCH))
        settings = TrainSettings(epochs=1, parallel=parallel, checkpointing=checkpointing, **common)
        fit(model, pool, os.path.join(out, parallel), settings, env, progress=False)
    if rank == 0:
        shutil.copytree(os.path.join(out, "ddp"), os.path.join(out, "resumed"))
    barrier(env)
    model = build_tsfm("small", num_classes=2, patch_size=tuple(SMALL_PATCH))
    settings = TrainSettings(epochs=2, parallel="fsdp", **common)
    fit(model, pool, os.path.join(out, "resumed"), settings, env, resume=True, progress=False)
    torch.distributed.destroy_process_group()


@pytest.mark.slow  # CI time (>15 s on 2 cores): python -m pytest -m slow
def test_fsdp_with_checkpointing_matches_ddp_and_resumes_its_checkpoint(pools, tmp_path):
    mp.spawn(_parallel_worker, args=(2, _free_port(), str(pools["small"]), str(tmp_path)), nprocs=2, join=True)
    torch.manual_seed(100)
    init = build_tsfm("small", num_classes=2, patch_size=tuple(SMALL_PATCH)).state_dict()
    ddp = load_checkpoint(tmp_path / "ddp" / "model.pt")
    fsdp = load_checkpoint(tmp_path / "fsdp" / "model.pt")
    assert ddp["model"].keys() == fsdp["model"].keys() == init.keys()  # full weights, plain names
    for k, v in ddp["model"].items():
        torch.testing.assert_close(fsdp["model"][k], v, rtol=1e-4, atol=1e-6, msg=k)
    assert not torch.equal(ddp["model"]["stem.weight"], init["stem.weight"])  # the steps changed the weights
    assert ddp["history"][0]["loss"] == pytest.approx(fsdp["history"][0]["loss"], rel=1e-5)
    assert fsdp["settings"]["parallel"] == "fsdp" and fsdp["settings"]["checkpointing"]
    resumed = load_checkpoint(tmp_path / "resumed" / "last.pt")
    assert resumed["epoch"] == 2 and resumed["history"][0] == ddp["history"][0]
    assert all(isinstance(p, str) for p in resumed["optimizer"]["param_groups"][0]["params"])  # gathered by name
    assert not torch.equal(resumed["model"]["stem.weight"], ddp["model"]["stem.weight"])


def test_activation_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = build_tsfm("tiny", num_classes=2, patch_size=tuple(PATCH))
    x = torch.randn(1, 1, *PATCH)
    grads = []
    for on in (False, True):
        set_activation_checkpointing(model, on)
        model.zero_grad()
        model(x).square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for n, g in grads[0].items():
        torch.testing.assert_close(grads[1][n], g, msg=n)
    with torch.no_grad():  # inference is untouched
        assert torch.equal(model(x), set_activation_checkpointing(model, False)(x))


def _cli(monkeypatch, argv):
    import medfoundry.cli.main as cli

    mine = ("pool", "pretrain", "transfer")
    monkeypatch.setattr(cli, "COMMANDS", {k: f"medfoundry.cli.{k}" for k in mine})
    return cli.main(argv)


def test_pretrain_transfer_and_predict_cli(pools, tmp_path, monkeypatch, capsys):
    common = ["--epochs", "1", "--iters", "2", "--batch-size", "1", "--threads", "1", "--quiet", "--device", "cpu"]
    pre_out = tmp_path / "pre"
    assert (
        _cli(monkeypatch, ["pretrain", "--pool", str(pools["pre"]), "--out", str(pre_out), "--preset", "tiny"] + common)
        == 0
    )
    pre = load_checkpoint(pre_out / "model.pt")
    assert pre["classes"] == ["liver", "kidney", "tumour"] and pre["config"]["preset"] == "tiny"
    assert (pre_out / "loss.png").stat().st_size > 0

    # a preset that does not match the checkpoint is refused
    bad = ["transfer", "--pool", str(pools["new"]), "--out", str(tmp_path / "x"), "--init", str(pre_out / "model.pt")]
    assert _cli(monkeypatch, bad + ["--preset", "small"] + common) == 2
    assert "checkpoint preset 'tiny' does not match the requested preset 'small'" in capsys.readouterr().err

    neither = ["transfer", "--pool", str(pools["new"]), "--out", str(tmp_path / "y")]
    assert _cli(monkeypatch, neither + common) == 2
    assert "either --init CHECKPOINT (transfer) or --from-scratch" in capsys.readouterr().err

    ft_out = tmp_path / "ft"
    args = ["transfer", "--pool", str(pools["new"]), "--out", str(ft_out), "--init", str(pre_out / "model.pt")]
    assert _cli(monkeypatch, args + common) == 0
    ft = load_checkpoint(ft_out / "model.pt")
    assert ft["classes"] == ["lesion"] and ft["config"]["num_classes"] == 1 and ft["kind"] == "transfer"
    assert ft["info"]["pretrained_classes"] == pre["classes"]

    # segment an image with a rotated grid: the label map comes back on that grid
    rng = np.random.default_rng(0)
    direction = (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0)
    img = MedicalImage(
        rng.normal(size=(11, 29, 35)).astype(np.float32), (1.7, 2.2, 3.1), (4.0, 5.0, 6.0), direction, modality="MR"
    )
    write_image(img, tmp_path / "new_image.nii.gz")
    pred = [
        "transfer",
        "--predict",
        str(tmp_path / "new_image.nii.gz"),
        "--model",
        str(ft_out / "model.pt"),
        "--out-dir",
        str(tmp_path / "pred"),
        "--threads",
        "1",
    ]
    assert _cli(monkeypatch, pred) == 0
    out = read_mask(tmp_path / "pred" / "new_image_tsfm.nii.gz", reference=img)
    assert out.array.shape == img.array.shape and set(np.unique(out.array)) <= {0, 1}
    assert _cli(monkeypatch, pred) == 2  # existing output refused
    assert "output exists" in capsys.readouterr().err


def test_crashed_worker_then_resume_from_last_checkpoint(pools, tmp_path, monkeypatch):
    out = tmp_path / "run"
    settings = TrainSettings(epochs=2, iters_per_epoch=2, batch_size=1, num_workers=1, mirror=False)
    original = PoolDataset.__getitem__
    calls = {"n": 0}

    def crashing(self, i):
        calls["n"] += 1  # counted inside the (persistent) worker process
        if calls["n"] > 2:  # the worker dies in epoch 2, after epoch 1's checkpoint
            os._exit(3)
        return original(self, i)

    monkeypatch.setattr(PoolDataset, "__getitem__", crashing)
    torch.manual_seed(0)
    with pytest.raises(TrainingStopped, match=r"stopped in epoch 2.*last checkpoint.*epoch 1.*`resume`"):
        fit(build_tsfm("tiny", num_classes=3, patch_size=tuple(PATCH)), pools["pre"], out, settings, progress=False)
    assert load_checkpoint(out / "last.pt")["epoch"] == 1
    assert not (out / "model.pt").exists()
    monkeypatch.setattr(PoolDataset, "__getitem__", original)

    with pytest.raises(InputError, match="`resume` to continue it or `overwrite`"):
        fit(build_tsfm("tiny", num_classes=3, patch_size=tuple(PATCH)), pools["pre"], out, settings, progress=False)
    with pytest.raises(InputError, match=r"cannot resume.*differs from this run.*\['width'\]"):
        fit(
            build_tsfm("tiny", num_classes=3, patch_size=tuple(PATCH), width=4),
            pools["pre"],
            out,
            settings,
            resume=True,
            progress=False,
        )
    first = load_checkpoint(out / "last.pt")
    model = build_tsfm("tiny", num_classes=3, patch_size=tuple(PATCH))
    history = fit(model, pools["pre"], out, settings, resume=True, progress=False)
    assert [h["epoch"] for h in history] == [1, 2]
    assert history[0] == first["history"][0]
    assert load_checkpoint(out / "model.pt")["epoch"] == 2


def _weights(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_training_is_reproducible_with_the_same_seed(pools, tmp_path):
    """Same seed: identical loss history and weights; another seed: another patch draw and other weights."""

    def run(seed: int, name: str):
        torch.manual_seed(0)  # same initial weights for every run
        model = build_tsfm("tiny", num_classes=3, patch_size=tuple(PATCH))
        settings = TrainSettings(epochs=2, iters_per_epoch=2, batch_size=2, lr=0.05, seed=seed)
        history = fit(model, pools["pre"], tmp_path / name, settings, progress=False)
        return [h["loss"] for h in history], _weights(model)

    loss_a, w_a = run(3, "a")
    loss_b, w_b = run(3, "b")
    loss_c, w_c = run(4, "c")
    assert loss_a == loss_b and all(torch.equal(w_a[k], w_b[k]) for k in w_a)
    assert loss_a != loss_c and not all(torch.equal(w_a[k], w_c[k]) for k in w_a)


def test_mixed_precision_is_refused_off_cuda(pools, tmp_path, monkeypatch, capsys):
    settings = TrainSettings(epochs=1, iters_per_epoch=1, batch_size=1, amp=True)
    model = build_tsfm("tiny", num_classes=3, patch_size=tuple(PATCH))
    with pytest.raises(InputError, match="`amp` .* needs a CUDA device; this run is on cpu"):
        fit(model, pools["pre"], tmp_path / "amp", settings, progress=False)
    assert not (tmp_path / "amp").exists()  # refused before any output
    args = ["pretrain", "--pool", str(pools["pre"]), "--out", str(tmp_path / "amp_cli"), "--preset", "tiny"]
    assert _cli(monkeypatch, args + ["--amp", "--device", "cpu", "--threads", "1", "--quiet"]) == 2
    assert "needs a CUDA device" in capsys.readouterr().err
