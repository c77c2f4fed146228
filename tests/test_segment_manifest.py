"""``medfoundry segment --manifest``: many real scans with one model, bad rows reported, resume, folder mode."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from medfoundry.cli.main import main
from medfoundry.errors import BatchFailures, InputError
from medfoundry.evaluation import dice
from medfoundry.inference.manifest import read_manifest
from medfoundry.io import read_image, read_mask

CASES = ("STS_001", "STS_002", "STS_003")


def _png_slice(shared_data, case: str, folder) -> tuple[str, list[int], np.ndarray]:
    """The tumour's largest axial slice of a real PET crop as an 8-bit PNG; returns its path, box and mask."""
    image = read_image(shared_data / "pet-sts" / case / "PET_image.nii.gz").array
    gt = read_mask(shared_data / "pet-sts" / case / "PET_mask.nii.gz").array > 0
    z = int(np.argmax(gt.reshape(len(gt), -1).sum(1)))
    sl = np.clip(image[z] / 10.0, 0, 1)  # SUV 0..10
    path = folder / f"{case}.png"
    Image.fromarray((sl * 255).astype(np.uint8)).save(path)
    ys, xs = np.nonzero(gt[z])
    return path.name, [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())], gt[z]


@pytest.fixture(scope="module")
def pngs(shared_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("pngs")
    return folder, {case: _png_slice(shared_data, case, folder) for case in CASES}


def _write_csv(folder, rows) -> str:
    path = folder / "scans.csv"
    path.write_text("image,box,out\n" + "".join(f"{a},{b},{c}\n" for a, b, c in rows))
    return str(path)


def test_manifest_segments_good_rows_reports_bad_row_and_resumes(pngs, tmp_path, capsys):
    folder, cases = pngs
    out = tmp_path / "out"
    rows = [(name, " ".join(map(str, box)), str(out / f"{case}_seg.png")) for case, (name, box, _) in cases.items()]
    rows.insert(1, ("missing.png", "1 1 5 5", str(out / "missing_seg.png")))  # image not there
    rows.insert(2, (cases["STS_001"][0], "1 2 x 4", str(out / "typo_seg.png")))  # not numbers
    manifest = _write_csv(folder, rows)
    args = ["segment", "--manifest", manifest, "--no-progress", "--allow-absolute-out"]  # out is elsewhere
    capsys.readouterr()
    assert main(args) == 2  # two rows failed, the others were written
    captured = capsys.readouterr()
    assert "wrote 3, skipped 0 (output exists), failed 2" in captured.out
    assert "missing.png" in captured.out and "expected numbers" in captured.out
    assert len(captured.err.strip().splitlines()) == 1 and "Traceback" not in captured.err
    masks = {}
    for case, (_, _, gt) in cases.items():
        masks[case] = np.asarray(Image.open(out / f"{case}_seg.png"))
        assert masks[case].shape == gt.shape and dice(masks[case] > 0, gt) > 0.6, case
    assert not (out / "missing_seg.png").exists() and not (out / "typo_seg.png").exists()
    # resume: nothing is redone; a deleted output is written again, the same as before
    stamps = {case: (out / f"{case}_seg.png").stat().st_mtime_ns for case in CASES}
    (out / "STS_002_seg.png").unlink()
    assert main(args) == 2
    assert "wrote 1, skipped 2 (output exists), failed 2" in capsys.readouterr().out
    for case in ("STS_001", "STS_003"):
        assert (out / f"{case}_seg.png").stat().st_mtime_ns == stamps[case]
    assert np.array_equal(np.asarray(Image.open(out / "STS_002_seg.png")), masks["STS_002"])
    assert not any(p.name.startswith(".") for p in out.iterdir())  # no temporary files left


def test_manifest_builds_the_model_once_and_not_when_all_done(pngs, tmp_path, real_model):
    from medfoundry.api import segment_many
    from medfoundry.inference.predictor import LiteMedSAMPredictor

    folder, cases = pngs
    for name, _, _ in cases.values():  # image and output paths are relative to the manifest's folder
        (tmp_path / name).write_bytes((folder / name).read_bytes())
    rows_json = [{"image": name, "box": box, "out": f"masks/{case}.png"} for case, (name, box, _) in cases.items()]
    manifest = tmp_path / "rows.json"
    manifest.write_text(json.dumps({"rows": rows_json}))
    built = []

    def factory():
        built.append(1)
        return LiteMedSAMPredictor(model=real_model, backend="onnx")

    rows = read_manifest(manifest)
    result = segment_many(rows, predictor=factory, progress=False)
    assert len(built) == 1 and len(result.written) == 3 and not result.failed
    for case, (_, _, gt) in cases.items():
        assert dice(np.asarray(Image.open(tmp_path / "masks" / f"{case}.png")) > 0, gt) > 0.6
    again = segment_many(read_manifest(manifest), predictor=factory, progress=False)
    assert len(built) == 1 and len(again.skipped) == 3 and not again.written  # resume: no model load at all


def test_manifest_folder_mode_with_command_line_prompts(pngs, tmp_path, capsys):
    folder, cases = pngs
    name, box, gt = cases["STS_003"]
    src = tmp_path / "in"
    src.mkdir()
    (src / name).write_bytes((folder / name).read_bytes())
    (src / "notes.txt").write_text("not an image")
    out = tmp_path / "masks"
    assert main(["segment", "--manifest", str(src), "--box", *map(str, box), "--out", str(out), "--no-progress"]) == 0
    assert "wrote 1, skipped 0" in capsys.readouterr().out
    assert dice(np.asarray(Image.open(out / "STS_003_seg.png")) > 0, gt) > 0.6


def test_manifest_problems_that_stop_before_any_work(pngs, tmp_path):
    folder, _ = pngs
    bad = tmp_path / "bad.csv"
    bad.write_text("file,box\na.png,1 2 3 4\n")
    with pytest.raises(InputError, match="'image' column"):
        read_manifest(bad)
    with pytest.raises(InputError, match="manifest not found"):
        read_manifest(tmp_path / "none.csv")
    with pytest.raises(InputError, match="needs `out_dir`"):
        read_manifest(folder)
    dup = tmp_path / "dup.csv"
    dup.write_text("image,box,out\na.png,1 2 3 4,m.png\nb.png,1 2 3 4,m.png\nc.png,,n.png\n")
    rows = read_manifest(dup)
    assert rows[0].error is None and "also written by row 1" in rows[1].error and "no prompts" in rows[2].error
    assert len(rows[0].objects) == 1 and rows[0].objects[0].box.tolist() == [1, 2, 3, 4]
    two = tmp_path / "two.csv"
    two.write_text("image,box,point,out\na.png,1 2 3 4; 5 6 7 8,9 9,m.png\n")
    assert len(read_manifest(two)[0].objects) == 3  # two boxes + one point object


def test_segment_many_raises_batch_failures_with_the_result(tmp_path):
    from medfoundry.api import segment_many

    manifest = tmp_path / "m.csv"
    manifest.write_text("image,box,out\nmissing.png,1 2 3 4,m.png\n")
    with pytest.raises(BatchFailures) as info:
        segment_many(read_manifest(manifest), predictor=lambda: pytest.fail("no model for a bad row"), progress=False)
    assert info.value.result.failed and "missing.png" in info.value.failed[0][0]


def test_row_outputs_stay_inside_the_manifest_folder_or_out(tmp_path):
    man = tmp_path / "study" / "manifests"
    man.mkdir(parents=True)
    manifest = man / "m.json"
    rows = [
        {"image": "a.png", "box": [1, 2, 3, 4], "out": "masks/a.png"},  # inside the manifest's folder
        {"image": "b.png", "box": [1, 2, 3, 4], "out": "masks/../b.png"},  # climbs, but stays inside
        {"image": "c.png", "box": [1, 2, 3, 4], "out": "../../../etc/x.nii.gz"},  # climbs out
        {"image": "d.png", "box": [1, 2, 3, 4], "out": str(tmp_path / "abs.png")},  # absolute
        {"image": "e.png", "box": [1, 2, 3, 4], "out": "../results/e.png"},  # inside --out
        {"image": "f.png", "box": [1, 2, 3, 4], "out": "f.png", "overlay": "../../f_overlay.png"},
        {"image": "g.png", "box": [1, 2, 3, 4], "out": "~/g.png"},
    ]
    manifest.write_text(json.dumps(rows))
    results = tmp_path / "study" / "results"
    got = read_manifest(manifest, out_dir=results)
    assert [r.error is None for r in got] == [True, True, False, False, True, False, False]
    assert got[1].out.resolve() == (man / "b.png").resolve() and got[4].out.resolve() == (results / "e.png")
    assert "out ../../../etc/x.nii.gz climbs out of the manifest's folder or `out_dir`" in got[2].error
    assert "is an absolute path" in got[3].error and "`allow_absolute_out`" in got[3].error
    assert "overlay ../../f_overlay.png climbs out" in got[5].error and "absolute" in got[6].error
    assert "climbs out of the manifest's folder;" in read_manifest(manifest)[4].error  # no --out: not inside
    allowed = read_manifest(manifest, out_dir=results, allow_absolute_out=True)
    assert allowed[3].error is None and allowed[3].out == tmp_path / "abs.png" and allowed[2].error
    assert not (tmp_path / "etc").exists() and not results.exists()  # reading a manifest writes nothing


def test_a_row_whose_overlay_exists_without_its_mask_is_redone(pngs, tmp_path, real_model, capsys, monkeypatch):
    """What a kill between the overlay and the mask leaves: the rerun writes the row, it does not refuse it."""
    from medfoundry.inference.predictor import LiteMedSAMPredictor

    folder, cases = pngs
    name, box, gt = cases["STS_002"]
    (tmp_path / name).write_bytes((folder / name).read_bytes())
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"image,box,out,overlay\n{name},{' '.join(map(str, box))},m/a.png,m/a_overlay.png\n")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "a_overlay.png").write_bytes(b"half written by a killed run")
    predictor = LiteMedSAMPredictor(model=real_model, backend="onnx")
    monkeypatch.setattr("medfoundry.api.common.build_predictor", lambda *args: predictor)
    assert main(["segment", "--manifest", str(manifest), "--no-progress"]) == 0
    assert "wrote 1, skipped 0 (output exists), failed 0" in capsys.readouterr().out
    assert dice(np.asarray(Image.open(tmp_path / "m" / "a.png")) > 0, gt) > 0.6
    assert Image.open(tmp_path / "m" / "a_overlay.png").format == "PNG"  # the overlay was written again
