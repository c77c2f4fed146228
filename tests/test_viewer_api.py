"""The viewer's HTTP API (FastAPI TestClient) on the bundled PET demo case with the real LiteMedSAM weights."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from medfoundry.api import segment_image
from medfoundry.demo import sample_dir
from medfoundry.inference.predictor import LiteMedSAMPredictor
from medfoundry.inference.prompts import ObjectPrompt
from medfoundry.io import MedicalImage, read_image, read_mask
from medfoundry.viewer import ViewerSession, create_app

BOX = [11.0, 11.0, 18.0, 17.0]  # around the lesion of STS_008_PET on slice 25 (x0, y0, x1, y1)
SLICE = 25


@pytest.fixture(scope="module")
def predictor(real_model):
    return LiteMedSAMPredictor(model=real_model, backend="torch")


@pytest.fixture(scope="module")
def pet():
    return read_image(sample_dir() / "STS_008_PET_image.nii.gz", modality="PET")


@pytest.fixture()
def client(pet, predictor, tmp_path):
    session = ViewerSession(pet, out=tmp_path / "labels.nii.gz", predictor=predictor)
    app = create_app(session, token="secret-token")
    with TestClient(app, headers={"X-Medfoundry-Token": "secret-token"}) as c:
        yield c


def test_every_route_needs_the_token(pet, predictor, tmp_path):
    app = create_app(ViewerSession(pet, out=tmp_path / "x.nii.gz", predictor=predictor), token="right")
    with TestClient(app) as anonymous:
        for method, route in [("get", "/"), ("get", "/api/info"), ("get", "/api/volume"), ("post", "/api/save")]:
            missing = getattr(anonymous, method)(route)
            assert missing.status_code == 401 and "token" in missing.json()["error"]
            wrong = getattr(anonymous, method)(route, headers={"X-Medfoundry-Token": "wrong"})
            assert wrong.status_code == 403
        assert anonymous.get("/api/info?token=wrong").status_code == 403
        assert anonymous.get("/api/info?token=right").json()["shape_zyx"] == list(pet.array.shape)
        page = anonymous.get("/?token=right")
        assert page.status_code == 200 and "niivue.umd.js?token=right" in page.text
        assert not (tmp_path / "x.nii.gz").exists()


def test_static_serves_only_its_own_files(client):
    assert client.get("/static/viewer.js").status_code == 200
    for name in ["..%2F..%2Fapi.py", "index.html.bak", "%2Fetc%2Fpasswd"]:
        assert client.get(f"/static/{name}").status_code == 404
    assert client.get("/static/../session.py").status_code == 404


def test_bad_prompts_get_json_errors_and_the_server_keeps_answering(client):
    bad = [
        {"index": SLICE, "box": [1, 2, 3]},  # 3 numbers
        {"index": 999, "box": BOX},  # slice outside the volume
        {"index": SLICE, "box": [18, 17, 11, 11]},  # x1 < x0
        {"index": SLICE},  # no prompt at all
        {"index": SLICE, "points": [[5, 5]], "point_labels": [7]},
        {"index": SLICE, "box": BOX, "axis": "w"},
        {"index": SLICE, "box": BOX, "path": "/etc/passwd"},  # unknown fields are refused
    ]
    for body in bad:
        response = client.post("/api/prompt", json=body)
        assert 400 <= response.status_code < 500, body
        assert response.json()["error"], body
    not_json = client.post("/api/prompt", content=b"{box:", headers={"content-type": "application/json"})
    assert not_json.status_code == 422 and "error" in not_json.json()
    assert client.post("/api/propagate", json={"object": 1}).status_code == 400
    assert client.post("/api/undo").status_code == 400  # nothing to undo yet
    assert client.get("/api/info").status_code == 200
    assert client.get("/api/stats").json() == {"labels": []}


def test_prompt_equals_segment_image_save_keeps_geometry_and_refuses_to_overwrite(client, pet, predictor, tmp_path):
    first = client.post("/api/prompt", json={"object": 1, "index": SLICE, "box": BOX}).json()
    again = client.post("/api/prompt", json={"object": 1, "index": SLICE, "box": BOX}).json()
    assert first["embedded"] and not again["embedded"]  # the slice's embedding is cached
    assert first["voxels"] == again["voxels"] > 0

    box3d = [BOX[0], BOX[1], SLICE, BOX[2], BOX[3], SLICE]
    reference = segment_image(pet, [ObjectPrompt(box=box3d)], predictor, progress=False).labels.array

    saved = client.post("/api/save", json={}).json()
    mask = read_mask(saved["path"], reference=pet)  # raises if the grid (spacing/origin/direction) differs
    assert mask.same_grid(pet)
    assert np.array_equal(mask.array, reference)

    stats = client.get("/api/stats").json()["labels"]
    values = pet.array[reference == 1]
    assert stats[0]["voxels"] == int((reference == 1).sum())
    assert stats[0]["suv_max"] == pytest.approx(float(values.max()), abs=1e-3)
    assert stats[0]["volume_ml"] == pytest.approx(values.size * pet.voxel_volume_ml, rel=1e-3)

    client.post("/api/erase", json={"object": 1, "all": True})
    refused = client.post("/api/save", json={"confirm": False})
    assert refused.status_code == 409 and "confirm" in refused.json()["error"]
    assert np.array_equal(read_mask(saved["path"]).array, reference)  # untouched
    assert client.post("/api/save", json={"confirm": True}).status_code == 200
    assert not read_mask(saved["path"]).array.any()

    assert client.post("/api/undo").json()["undone"].startswith("erase")
    assert client.get("/api/stats").json()["labels"][0]["voxels"] == stats[0]["voxels"]


def test_volume_and_labels_are_nifti_on_the_image_grid(client, pet, tmp_path):
    volume = tmp_path / "volume.nii.gz"
    volume.write_bytes(client.get("/api/volume").content)
    served = read_image(volume)
    assert served.same_grid(pet) and np.allclose(served.array, pet.array)
    labels = tmp_path / "labels_now.nii.gz"
    labels.write_bytes(client.get("/api/labels").content)
    assert read_mask(labels, reference=pet).array.shape == pet.array.shape
    info = client.get("/api/info").json()
    # the RAS -> voxel matrix maps the NIfTI centre of voxel (x, y, z) back to (x, y, z)
    ras_to_vox = np.asarray(info["ras_to_voxel"])
    index = np.array([3.0, 5.0, 7.0])
    lps = np.asarray(pet.origin) + np.asarray(pet.direction).reshape(3, 3) @ (index * np.asarray(pet.spacing))
    ras = np.array([-lps[0], -lps[1], lps[2], 1.0])
    assert np.allclose((ras_to_vox @ ras)[:3], index)
    assert info["windows"][0]["max"] == 10.0 and info["value_unit"] == "SUV"


def test_points_and_coronal_prompts_equal_segment_image_on_that_plane(client, pet, predictor):
    def plane_labels(array, objects):  # the 2D path of medfoundry segment on the plane's pixels
        image2d = MedicalImage(np.ascontiguousarray(array), (1.0, 1.0), modality="PET")
        return segment_image(image2d, objects, predictor, progress=False).labels.array

    points = [[14.0, 14.0], [12.0, 16.0]]
    response = client.post(
        "/api/prompt", json={"object": 2, "index": SLICE, "points": points, "point_labels": [1, 0]}
    ).json()
    expected = plane_labels(pet.array[SLICE], [ObjectPrompt(points=points, point_labels=[1, 0])])
    labels = read_labels(client, pet)
    assert response["voxels"] == int(expected.sum()) > 0
    assert np.array_equal(labels[SLICE] == 2, expected == 1)

    y = 14  # a coronal plane through the lesion: in-slice coordinates are (x, z)
    box = [11.0, 18.0, 18.0, 32.0]
    response = client.post("/api/prompt", json={"object": 3, "axis": "y", "index": y, "box": box}).json()
    expected = plane_labels(pet.array[:, y, :], [ObjectPrompt(box=box)])
    labels = read_labels(client, pet)
    assert response["voxels"] == int(expected.sum()) > 0
    assert np.array_equal(labels[:, y, :] == 3, expected == 1)
    assert not (labels == 3)[:, [i for i in range(pet.array.shape[1]) if i != y], :].any()


def test_propagate_equals_segment_image_with_the_same_3d_box(client, pet, predictor):
    box3d = [BOX[0], BOX[1], SLICE - 1, BOX[2], BOX[3], SLICE + 1]
    response = client.post("/api/propagate", json={"object": 1, "box": box3d}).json()
    expected = segment_image(pet, [ObjectPrompt(box=box3d)], predictor, progress=False).labels.array
    assert response["voxels"] == int(expected.sum()) > 0
    assert np.array_equal(read_labels(client, pet), expected)
    # from the object's mask on slice 25 upwards only: slice 26 as before (same prompt), slice 24 gone
    upward = client.post("/api/propagate", json={"object": 1, "from_slice": SLICE, "z_range": [SLICE, SLICE + 1]})
    assert upward.json()["slices_embedded"] == 0  # both slices were encoded by the first propagation
    expected[SLICE - 1] = 0
    assert np.array_equal(read_labels(client, pet), expected)
    bad = client.post("/api/propagate", json={"object": 1, "box": [*BOX[:2], 40, *BOX[2:], 30]})
    assert bad.status_code == 400 and "z1 < z0" in bad.json()["error"]


def read_labels(client, pet) -> np.ndarray:
    """The label map the server holds now, read back through /api/labels."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "labels.nii.gz"
        path.write_bytes(client.get("/api/labels").content)
        return read_mask(path, reference=pet).array


def test_cli_view_prints_a_tokenised_url_and_serves_the_api(tmp_path):
    import json
    import os
    import subprocess
    import sys
    import urllib.error
    import urllib.request

    image = sample_dir() / "STS_008_PET_image.nii.gz"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "medfoundry.cli.main", "view", str(image), "--modality", "PET", "--no-browser"]
    bad = subprocess.run([*cmd, "--out", str(tmp_path / "x.txt")], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "x.txt" in bad.stderr and "Traceback" not in bad.stderr
    proc = subprocess.Popen(
        [*cmd, "--backend", "torch", "--out", str(tmp_path / "out.nii.gz")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        url = None
        for line in proc.stdout:
            if line.startswith("open http://127.0.0.1:"):
                url = line.split()[1]
                break
        assert url and "?token=" in url, "no URL printed"
        base, token = url.split("/?token=")
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"{base}/api/info?token={token}", timeout=5) as response:
                    info = json.load(response)
                break
            except urllib.error.URLError:
                import time

                time.sleep(0.1)
        assert info["modality"] == "PET" and info["shape_zyx"] == [51, 29, 30]
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(f"{base}/api/info", timeout=5)
        assert denied.value.code == 401
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_existing_labels_are_loaded_for_correction(pet, predictor, tmp_path):
    gt = read_mask(sample_dir() / "STS_008_PET_mask.nii.gz", reference=pet)
    session = ViewerSession(pet, out=tmp_path / "fixed.nii.gz", labels=gt, predictor=predictor)
    with TestClient(create_app(session, token="t"), headers={"X-Medfoundry-Token": "t"}) as client:
        assert client.get("/api/info").json()["labels"] == [1]
        (row,) = client.get("/api/stats").json()["labels"]
        assert row["voxels"] == int((gt.array == 1).sum())
        assert row["suv_mean"] == pytest.approx(float(pet.array[gt.array == 1].mean()), abs=1e-3)
        client.post("/api/erase", json={"object": 1, "axis": "z", "index": SLICE})
        client.post("/api/save", json={})
    fixed = read_mask(tmp_path / "fixed.nii.gz", reference=pet).array
    expected = gt.array.copy()
    expected[SLICE] = 0
    assert np.array_equal(fixed, expected)


# --- refused requests (issue 29): 422 with the reason, before the session; the labels never change -------------


@pytest.fixture()
def labelled(pet, tmp_path):
    """A session holding the real GTV as object 1 and a predictor that must never be called."""
    gt = read_mask(sample_dir() / "STS_008_PET_mask.nii.gz", reference=pet)
    session = ViewerSession(pet, labels=gt, predictor=lambda: pytest.fail("a refused request reached the model"))
    with TestClient(create_app(session, token="t"), headers={"X-Medfoundry-Token": "t"}) as client:
        yield client, session, gt.array.copy()


def _raw(client, route: str, body: str):
    """POST a JSON text as it is (NaN and Infinity are what Python's and JavaScript's encoders may send)."""
    return client.post(route, content=body.encode(), headers={"content-type": "application/json"})


REFUSED = [
    ("/api/prompt", f'{{"object": 1, "index": {SLICE}, "box": [NaN, 11, 18, 17]}}', "finite"),
    ("/api/prompt", f'{{"object": 1, "index": {SLICE}, "box": [11, 11, Infinity, 17]}}', "finite"),
    ("/api/prompt", f'{{"object": 1, "index": {SLICE}, "box": [11, 11, 1e300, 17]}}', "out of range"),
    ("/api/prompt", f'{{"object": 1, "index": {SLICE}, "box": [11, 11, 1e7, 17]}}', "1e+06"),
    ("/api/prompt", f'{{"object": 1, "index": {SLICE}, "points": [[14, NaN]]}}', "finite"),
    ("/api/prompt", f'{{"object": 1, "index": {SLICE}, "points": [[14, 1e300]]}}', "out of range"),
    ("/api/prompt", f'{{"object": 1, "index": {SLICE}, "points": [[14]]}}', "at least 2"),
    ("/api/prompt", f'{{"object": 1, "index": {SLICE}, "points": [[14, 14], [1, 2, 3]]}}', "at most 2"),
    ("/api/propagate", '{"object": 1, "box": [11, 11, NaN, 18, 17, 30]}', "finite"),
    ("/api/propagate", '{"object": 1, "box": [11, 11, 20, 18, 17, 1e300]}', "out of range"),
    ("/api/propagate", '{"object": 1, "box": [Infinity, 11, 20, 18, 17, 30]}', "finite"),
    ("/api/propagate", '{"object": 1, "from_slice": 25, "z_range": [0, 1e300]}', "z_range"),
    ("/api/erase", '{"object": 1}', '"all": true'),
    ("/api/erase", f'{{"object": 1, "axis": "z", "index": {SLICE}, "all": true}}', '"all": true'),
]


@pytest.mark.parametrize("route, body, reason", REFUSED, ids=[f"{r[0][5:]}-{i}" for i, r in enumerate(REFUSED)])
def test_bad_numbers_are_422_with_the_reason_and_change_nothing(labelled, route, body, reason):
    client, session, before = labelled
    response = _raw(client, route, body)
    assert response.status_code == 422, response.text
    assert reason in response.json()["error"] and "Traceback" not in response.text
    assert np.array_equal(session.labels.reshape(before.shape), before)  # the object is intact
    assert client.get("/api/info").status_code == 200  # and the server goes on


def test_points_per_prompt_are_capped(labelled):
    from medfoundry.viewer.session import MAX_POINTS

    client, session, before = labelled
    points = [[14.0, 14.0]] * 3000
    response = client.post("/api/prompt", json={"object": 1, "index": SLICE, "points": points})
    assert response.status_code == 422 and f"at most {MAX_POINTS}" in response.json()["error"]
    assert np.array_equal(session.labels.reshape(before.shape), before)


def test_erase_needs_its_slice_or_all(labelled):
    client, session, before = labelled
    one = client.post("/api/erase", json={"object": 1, "axis": "z", "index": SLICE}).json()
    assert one["removed"] == int((before[SLICE] == 1).sum()) > 0
    everywhere = client.post("/api/erase", json={"object": 1, "all": True}).json()
    assert everywhere["removed"] == int((before == 1).sum()) - one["removed"] and not session.labels.any()


def test_the_session_refuses_the_same_numbers_in_python(pet):
    from medfoundry.errors import InputError

    session = ViewerSession(pet, predictor=lambda: pytest.fail("no model for a refused prompt"))
    for kwargs, reason in [
        ({"box": [float("nan"), 11, 18, 17]}, "finite"),
        ({"box": [11, 11, 1e300, 17]}, "out of range"),
        ({"points": [[14.0]]}, "takes 2 numbers"),
        ({"points": [[14.0, 14.0]] * 3000}, "at most"),
    ]:
        with pytest.raises(InputError, match=reason):
            session.prompt(1, SLICE, **kwargs)
    with pytest.raises(InputError, match="finite"):
        session.propagate(1, box=[11, 11, float("nan"), 18, 17, 30])
    with pytest.raises(InputError, match="everywhere=True"):
        session.erase(1)
    assert not session.labels.any()
