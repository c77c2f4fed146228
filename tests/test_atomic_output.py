"""No output lost: folders are swapped in whole, old outputs survive a failure, no temporary is left behind;
outputs get the mode a plain write would give."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from medfoundry.errors import InputError, OutputExistsError
from medfoundry.io.atomic import atomic_dir, atomic_path, check_outputs, check_writable


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` with its size and mtime: the disk as a user would see it."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


@pytest.fixture
def old_output(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    (out / "result.txt").write_text("old result")
    return out


def test_atomic_dir_swaps_in_a_complete_folder(old_output, tmp_path):
    with atomic_dir(old_output, overwrite=True) as tmp:
        assert tmp.parent == tmp_path and tmp != old_output and not any(tmp.iterdir())
        (tmp / "new.txt").write_text("new")
        assert (old_output / "result.txt").read_text() == "old result"  # still there while writing
    assert sorted(p.name for p in old_output.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary, no old copy left


def test_atomic_dir_failure_keeps_the_old_output(old_output, tmp_path):
    before = _tree(tmp_path)
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_dir(old_output, overwrite=True) as tmp:
            (tmp / "half.txt").write_text("half written")
            raise RuntimeError("disk full")
    assert _tree(tmp_path) == before


def test_atomic_dir_refuses_existing_or_file(old_output, tmp_path):
    with pytest.raises(OutputExistsError):
        with atomic_dir(old_output):
            pass
    (tmp_path / "afile.txt").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        with atomic_dir(tmp_path / "afile.txt", overwrite=True):
            pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile.txt", "out"]


def test_failed_swap_puts_the_old_folder_back(old_output, tmp_path, monkeypatch):
    """If the final rename fails, the old output is renamed back (it is never missing), and the failure is one
    line naming the output, not a traceback."""
    real = os.replace
    calls = []

    def flaky(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:  # old -> aside succeeded, new -> target fails
            raise OSError("rename failed")
        return real(src, dst)

    monkeypatch.setattr("medfoundry.io.atomic.os.replace", flaky)
    before = _tree(tmp_path)
    with pytest.raises(InputError, match="out: cannot replace the output \\(rename failed\\); the previous output"):
        with atomic_dir(old_output, overwrite=True) as tmp:
            (tmp / "new.txt").write_text("new")
    monkeypatch.undo()
    assert _tree(tmp_path) == before


def _pool(tmp_path: Path) -> Path:
    from medfoundry.io import MedicalImage, write_image, write_mask

    src = tmp_path / "src"
    src.mkdir()
    for i in range(2):
        img = np.random.default_rng(i).normal(100, 20, (10, 24, 24)).astype(np.float32)
        lbl = np.zeros(img.shape, np.uint8)
        lbl[4:6, 8:14, 8:14] = 1
        image = MedicalImage(img, (2.0, 2.0, 2.0), modality="MR")
        write_image(image, src / f"c{i}_image.nii.gz")
        write_mask(lbl, src / f"c{i}_mask.nii.gz", reference=image)
    cfg = {
        "name": "t",
        "spacing_xyz_mm": [4.0, 4.0, 4.0],
        "patch_size_zyx": [4, 8, 8],
        "classes": ["tumour"],
        "sources": [
            {"name": "s", "modality": "MR", "root": "src", "image_glob": "*_image.nii.gz", "labels": {1: "tumour"}}
        ],
    }
    import json

    (tmp_path / "pool.json").write_text(json.dumps(cfg))
    return tmp_path / "pool.json"


def test_build_pool_failure_mid_write_keeps_the_old_pool(tmp_path, monkeypatch):
    """A failure while the second case is written (``--overwrite``) leaves the previous pool as it was."""
    from medfoundry.data import pool as pool_module

    cfg = pool_module.load_pool_config(_pool(tmp_path))
    out = tmp_path / "pool"
    pool_module.build_pool(cfg, out)
    before = _tree(tmp_path)
    real, written = np.savez_compressed, []

    def fail_second(path, **arrays):
        if written:
            raise OSError(28, "No space left on device")
        written.append(path)
        return real(path, **arrays)

    monkeypatch.setattr(pool_module.np, "savez_compressed", fail_second)
    with pytest.raises(OSError, match="No space"):
        pool_module.build_pool(cfg, out, overwrite=True)
    monkeypatch.undo()
    assert written and _tree(tmp_path) == before
    pool_module.build_pool(cfg, out, overwrite=True)  # and a complete run replaces it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pool", "pool.json", "src"]


def test_tsfm_bench_refuses_an_existing_work_folder(old_output, tmp_path):
    import importlib.util

    import torch

    path = Path(__file__).resolve().parents[1] / "bench" / "tsfm_transfer.py"
    spec = importlib.util.spec_from_file_location("bench_tsfm_transfer", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    before = _tree(tmp_path)
    with pytest.raises(OutputExistsError):
        bench.main(["--work", str(old_output), "--threads", str(torch.get_num_threads())])
    assert _tree(tmp_path) == before


# --- output checks before any work -------------------------------------------------------------------------


def test_check_writable_refuses_bad_places(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(InputError, match="is a file, not a folder"):
        check_writable(tmp_path / "afile" / "out.nii.gz")
    with pytest.raises(InputError, match="is a file, not a folder"):
        check_writable(tmp_path / "afile" / "deeper" / "out.nii.gz")
    with pytest.raises(InputError, match="virtual system folder"):
        check_writable("/proc/x.nii.gz")
    with pytest.raises(InputError, match="is a folder"):
        check_writable(tmp_path)
    with pytest.raises(InputError, match="two outputs"):
        check_outputs(tmp_path / "same.png", tmp_path / "." / "same.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]
    assert check_writable(tmp_path / "new" / "sub" / "x.png") == tmp_path / "new" / "sub" / "x.png"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_check_writable_refuses_a_read_only_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    with pytest.raises(InputError, match="no write permission"):
        check_writable(ro / "x.png")


# --- file modes -----------------------------------------------------------------------------------------------


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield 0o027
    os.umask(old)


def test_outputs_get_the_mode_of_a_normal_write(tmp_path, umask_027):
    from medfoundry.io import MedicalImage, write_image

    with atomic_path(tmp_path / "a.txt") as tmp:
        tmp.write_text("x")
    write_image(MedicalImage(np.zeros((3, 4, 5), np.float32), (1.0, 1.0, 1.0)), tmp_path / "img.nii.gz")
    with atomic_dir(tmp_path / "folder") as tmp:
        (tmp / "inside.txt").write_text("y")
    (tmp_path / "plain.txt").write_text("z")  # what a normal write gives under this umask
    plain = stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode)
    assert plain == 0o640
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == plain
    assert stat.S_IMODE((tmp_path / "img.nii.gz").stat().st_mode) == plain
    assert stat.S_IMODE((tmp_path / "folder").stat().st_mode) == 0o750
    assert stat.S_IMODE((tmp_path / "folder" / "inside.txt").stat().st_mode) == plain


def test_modes_follow_a_permissive_umask(tmp_path):
    old = os.umask(0o002)
    try:
        with atomic_path(tmp_path / "a.txt") as tmp:
            tmp.write_text("x")
        with atomic_dir(tmp_path / "d"):
            pass
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o664
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o775


# --- nothing left behind (issue 29) ---------------------------------------------------------------------------


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_temporaries_carry_the_process_id(tmp_path):
    with atomic_path(tmp_path / "best.pt") as tmp:
        assert tmp.name.startswith(f".best.pt.{os.getpid()}-") and tmp.suffix == ".pt"
        tmp.write_bytes(b"x")
    with atomic_dir(tmp_path / "res") as tmp:
        assert tmp.name.startswith(f".res.{os.getpid()}-") and tmp.name.endswith(".tmp")
    assert _hidden(tmp_path) == []


@pytest.mark.parametrize("folder", [True, False], ids=["folder", "file"])
def test_leftovers_of_a_killed_run_are_removed_by_the_next_write_there_with_a_notice(tmp_path, killed_write, folder):
    from medfoundry.errors import MedfoundryWarning

    target = tmp_path / ("res" if folder else "best.pt")
    killed_write(target, folder)
    (left,) = _hidden(tmp_path)  # what kill -9 leaves: a partial folder / a 0-byte file
    assert left.startswith(f".{target.name}.") and not target.exists()
    alive = tmp_path / f".{target.name}.1-{left.split('-')[1]}-running"  # pid 1 runs: its files are kept
    other_host = tmp_path / f".{target.name}.999999-000000-elsewhere"  # another machine's: kept
    alive.write_text("x")
    other_host.write_text("x")
    with pytest.warns(MedfoundryWarning, match=rf"removed 1 temporary file\(s\) left by an interrupted run \({left}"):
        with atomic_dir(target) if folder else atomic_path(target) as tmp:
            (tmp / "new.txt" if folder else tmp).write_text("new")
    assert _hidden(tmp_path) == sorted([alive.name, other_host.name])


def test_a_swap_killed_midway_gets_the_old_output_back(old_output, tmp_path, killed_write):
    from medfoundry.errors import MedfoundryWarning

    killed_write(old_output, folder=True, moment="swap")
    assert not old_output.exists()  # the old output was moved aside, the new one not yet in
    with pytest.warns(MedfoundryWarning) as notices:
        with pytest.raises(RuntimeError, match="stop"):
            with atomic_dir(old_output, overwrite=True):
                raise RuntimeError("stop")
    said = [str(n.message) for n in notices]
    assert "put back the previous output" in said[0] and "removed 1 temporary file(s)" in said[1]
    assert (old_output / "result.txt").read_text() == "old result"
    assert _hidden(tmp_path) == []  # the killed run's new folder (renamed aside as a temporary) is gone too


def test_an_output_given_as_a_link_is_written_where_it_points(old_output, tmp_path):
    link = tmp_path / "link"
    link.symlink_to(old_output)
    with atomic_dir(link, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert link.is_symlink() and sorted(p.name for p in old_output.iterdir()) == ["new.txt"]
    (tmp_path / "real.txt").write_text("old")
    (tmp_path / "file_link.txt").symlink_to(tmp_path / "real.txt")
    with atomic_path(tmp_path / "file_link.txt", overwrite=True) as tmp:
        tmp.write_text("new")
    assert (tmp_path / "file_link.txt").is_symlink() and (tmp_path / "real.txt").read_text() == "new"
    assert _hidden(tmp_path) == []  # no '.link.old-*' left behind


def test_a_file_that_cannot_be_replaced_is_one_line(tmp_path, monkeypatch):
    (tmp_path / "a.txt").write_text("old")

    def refuse(src, dst):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("medfoundry.io.atomic.os.replace", refuse)
    with pytest.raises(InputError, match=r"a.txt: cannot replace the output \(Permission denied\)"):
        with atomic_path(tmp_path / "a.txt", overwrite=True) as tmp:
            tmp.write_text("new")
    assert (tmp_path / "a.txt").read_text() == "old" and _hidden(tmp_path) == []
