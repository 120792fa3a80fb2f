"""Stateful export: ONNX/TorchScript graphs with the LSTM states as inputs and outputs, runners, AutoBackend, deploy."""

import contextlib
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import numpy_helper  # noqa: E402
from rawdata import random_events  # noqa: E402
from ultralytics.engine.exporter import Exporter  # noqa: E402
from ultralytics.nn.autobackend import AutoBackend  # noqa: E402
from ultralytics.utils import callbacks  # noqa: E402
from ultralytics.utils.nms import non_max_suppression  # noqa: E402

from yolo_etram import EventYOLO  # noqa: E402
from yolo_etram.data.io import EventReader, write_events_h5  # noqa: E402
from yolo_etram.data.representations import StackedHistogram  # noqa: E402
from yolo_etram.export import EventExporter, export_recurrent  # noqa: E402
from yolo_etram.nn.exported import (  # noqa: E402
    StatefulOnnxModel,
    StatefulTorchScriptModel,
    install_state_runner,
    read_state_specs,
    state_specs,
)

REPO = Path(__file__).resolve().parents[1]
HW = (96, 128)  # fits partition (3, 4): multiples of 32 x (3, 4)
FRAMES = 20
CONF, IOU = 0.25, 0.7
EVENT = {"downsample": 1, "nbins": 10, "window_ms": 50, "channels": 20, "partition": [3, 4]}


def build_model() -> EventYOLO:
    torch.manual_seed(0)
    model = EventYOLO("rvt-t.yaml")
    model.model.backbone.set_partition_size((3, 4))
    model.model.yaml["event"] = EVENT  # what the trainer stores: prediction rebuilds the same windows
    for seq in model.model.model[-1].cv3:  # untrained head features are tiny: scale the class logits so NMS has work
        torch.nn.init.normal_(seq[-1].weight, std=300.0)
        torch.nn.init.constant_(seq[-1].bias, -3.0)
    return model.eval()


def random_frames(n: int, seed: int = 1) -> list[torch.Tensor]:
    """Sparse event counts 0..10, like stacked histograms."""
    g = torch.Generator().manual_seed(seed)
    shape = (1, 20, *HW)
    return [(torch.rand(shape, generator=g) < 0.1).float() * torch.randint(0, 11, shape, generator=g) for _ in range(n)]


def torch_sequence(model: EventYOLO, frames: list[torch.Tensor]) -> list[np.ndarray]:
    """The PyTorch model's raw eval outputs with its state carried from frame to frame."""
    net = model.model.eval()
    net.reset_states()
    with torch.no_grad():
        out = [net(x)[0].numpy() for x in frames]
    net.reset_states()
    return out


def detections(raw: np.ndarray) -> np.ndarray:
    return non_max_suppression(torch.from_numpy(np.ascontiguousarray(raw)), CONF, IOU)[0].numpy()


def state_like_constants(path: Path, specs) -> list[tuple[str, tuple, float]]:
    """Non-zero constants shaped like a stage map ``(B, *, H_s, W_s)``: a state (or a conv of one) baked in."""
    model = onnx.load(path)
    arrays = [(t.name, numpy_helper.to_array(t)) for t in model.graph.initializer]
    arrays += [
        (n.output[0], numpy_helper.to_array(a.t))
        for n in model.graph.node
        if n.op_type == "Constant"
        for a in n.attribute
        if a.type == onnx.AttributeProto.TENSOR
    ]
    spatial = {s.shape[-2:] for s in specs}
    return [
        (name, a.shape, float(np.abs(a).max()))
        for name, a in arrays
        if a.ndim == 4 and a.shape[0] == specs[0].shape[0] and a.shape[-2:] in spatial and np.any(a)
    ]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    model = build_model()
    with contextlib.chdir(root):  # the exporter writes next to the YAML name, in the working directory
        onnx_file = root / export_recurrent(model, "onnx", imgsz=HW)
        ts_file = root / export_recurrent(model, "torchscript", imgsz=HW)
    frames = random_frames(FRAMES)
    return SimpleNamespace(
        model=model,
        onnx=onnx_file,
        ts=ts_file,
        root=root,
        frames=frames,
        ref=torch_sequence(model, frames),
        specs=state_specs(model.model, 1, *HW),
    )


def test_onnx_graph_takes_and_returns_states_with_metadata(exported):
    m = onnx.load(exported.onnx)
    dims = lambda v: [d.dim_value for d in v.type.tensor_type.shape.dim]  # noqa: E731
    inputs = [(i.name, dims(i)) for i in m.graph.input]
    outputs = [(o.name, dims(o)) for o in m.graph.output]
    specs = exported.specs
    assert [s.input for s in specs] == [f"{hc}_in_{i}" for i in range(4) for hc in "hc"]
    assert inputs == [("images", [1, 20, *HW]), *((s.input, list(s.shape)) for s in specs)]
    assert outputs[0] == ("output0", [1, 4 + 3, sum((HW[0] // s) * (HW[1] // s) for s in (4, 8, 16, 32))])
    assert outputs[1:] == [(s.output, list(s.shape)) for s in specs]  # same order as the state inputs
    assert specs[0].shape == (1, 32, 24, 32) and specs[-1].shape == (1, 256, 3, 4)

    meta = {p.key: p.value for p in m.metadata_props}
    assert read_state_specs(meta) == specs
    assert json.loads(meta["recurrent_states"])[0] == ["h_in_0", "h_out_0", [1, 32, 24, 32]]
    assert meta["channels"] == "20" and meta["imgsz"] == str(list(HW)) and meta["task"] == "detect"
    assert meta["stride"] == "32" and "names" in meta and json.loads(meta["event"]) == EVENT

    ts_meta = AutoBackend(str(exported.ts), verbose=False).metadata  # the stock reader of TorchScript extra files
    assert read_state_specs(ts_meta) == specs and int(ts_meta["channels"]) == 20


def test_onnx_runner_matches_pytorch_with_carried_state(exported):
    runner = StatefulOnnxModel(exported.onnx)
    outs = [runner(x.numpy()) for x in exported.frames]
    for out, ref in zip(outs, exported.ref):
        np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)  # boxes in pixels (up to ~500), scores in 0..1
        np.testing.assert_allclose(out[:, 4:], ref[:, 4:], atol=1e-5)
        a, b = detections(out), detections(ref)
        assert len(a) == len(b)
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3)
    assert sum(len(detections(r)) for r in exported.ref) > FRAMES  # NMS had boxes to keep and to drop

    # the states matter: restarting every frame gives other outputs, and reset() restarts the sequence
    fresh = StatefulOnnxModel(exported.onnx)
    restarted = []
    for x in exported.frames[:3]:
        fresh.reset()
        restarted.append(fresh(x.numpy()))
    assert np.abs(restarted[2] - outs[2]).max() > 1e-2
    runner.reset()
    np.testing.assert_allclose(runner(exported.frames[0]).numpy(), exported.ref[0], rtol=1e-4, atol=1e-4)


def test_torchscript_runner_matches_pytorch_with_carried_state(exported):
    runner = StatefulTorchScriptModel(exported.ts)
    for x, ref in zip(exported.frames, exported.ref):
        out = runner(x)
        assert isinstance(out, torch.Tensor)
        np.testing.assert_allclose(out.numpy(), ref, rtol=1e-4, atol=1e-4)
        np.testing.assert_array_equal(detections(out.numpy())[:, 5], detections(ref)[:, 5])
    runner.reset()
    np.testing.assert_allclose(runner(exported.frames[0].numpy()), exported.ref[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", ["onnx", "ts"])
def test_autobackend_steps_a_stateful_export(exported, kind):
    backend = AutoBackend(str(getattr(exported, kind)), verbose=False)
    runner = install_state_runner(backend)
    assert runner is not None and runner.batch == 1 and backend.metadata["event"] == EVENT
    backend.warmup(imgsz=(1, 20, *HW))  # leaves no state behind
    outs = [backend(x) for x in exported.frames[:3]]
    for out, ref in zip(outs, exported.ref):
        np.testing.assert_allclose(out.numpy(), ref, rtol=1e-4, atol=1e-4)
    backend.reset_states()
    np.testing.assert_allclose(backend(exported.frames[0]).numpy(), exported.ref[0], rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="batch"):  # AutoBackend would split it into chunks run as time steps
        backend(torch.zeros(2, 20, *HW))


@pytest.mark.slow
def test_no_state_is_baked_into_the_graph(exported):
    """A second export after dirty dry runs gives the identical graph; the stock exporter, by contrast, bakes them."""

    def dirty(exporter):  # runs after Ultralytics' own dry run, just before export_onnx
        with torch.no_grad():
            for x in random_frames(3, seed=7):
                exporter.model(x)
        assert exporter.model.backbone.states is not None

    root = exported.root / "dirty"
    root.mkdir()
    args = {"format": "onnx", "imgsz": list(HW), "batch": 1, "verbose": False, "mode": "export"}
    exporter = EventExporter(overrides=args, _callbacks=callbacks.get_default_callbacks())
    exporter.add_callback("on_export_start", dirty)
    with contextlib.chdir(root):
        f = root / exporter(exported.model.model)
    assert onnx.load(f).graph == onnx.load(exported.onnx).graph
    assert state_like_constants(exported.onnx, exported.specs) == []

    stock = Exporter(overrides=args, _callbacks=callbacks.get_default_callbacks())
    stock.add_callback("on_export_start", dirty)
    with contextlib.chdir(root):
        f = root / stock(exported.model.model)
    assert state_like_constants(f, exported.specs)  # the check above can see a baked state


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"format": "engine"}, "supported formats: onnx, torchscript, openvino"),
        ({"format": "openvino", "quantize": 8}, "quantize=8 calibrates on event windows .* add data="),
        ({"imgsz": (100, 128)}, "multiples of 96x128"),
        ({"imgsz": 128}, "multiples of 96x128"),
        ({"dynamic": True}, "dynamic=True is not supported"),
        ({"quantize": 8}, "quantize=8 is not supported for recurrent onnx exports; INT8 .* format=openvino"),
    ],
)
def test_unsupported_exports_are_refused(exported, kw, message):
    kw = {"format": "onnx", "imgsz": HW, **kw}
    with pytest.raises(ValueError, match=message):
        export_recurrent(exported.model, **kw)


@pytest.mark.slow
def test_stock_model_exports_through_the_stock_path(tmp_path):
    model = EventYOLO("yolov8n.yaml")
    with contextlib.chdir(tmp_path):
        f = tmp_path / export_recurrent(model, "onnx", imgsz=64)
    m = onnx.load(f)
    assert [i.name for i in m.graph.input] == ["images"] and [o.name for o in m.graph.output] == ["output0"]
    assert "recurrent_states" not in {p.key for p in m.metadata_props}
    backend = AutoBackend(str(f), verbose=False)
    assert install_state_runner(backend) is None
    assert backend(torch.zeros(1, 3, 64, 64)).shape == (1, 84, 84)


@pytest.mark.slow
def test_deploy_example_matches_pytorch(exported, tmp_path):
    """The torch-free example gives the boxes of the PyTorch model + Ultralytics NMS on the same windows."""
    width, height, window_us, n = 120, 90, 50_000, 8  # a sensor smaller than the input: zero-padded
    rec = tmp_path / "rec_td.h5"
    write_events_h5(rec, *random_events(60_000, 500_000, width, height, seed=3), width, height)
    out = tmp_path / "boxes.json"
    argv = [
        str(exported.onnx),
        str(rec),
        "--conf",
        str(CONF),
        "--iou",
        str(IOU),
        "--max-windows",
        str(n),
        "--json",
        str(out),
    ]
    blocked = (
        "import sys, runpy; sys.modules.update(torch=None, ultralytics=None); "  # importing either fails
        "sys.argv = ['deploy'] + sys.argv[1:]; runpy.run_path(sys.argv.pop(1), run_name='__main__')"
    )
    proc = subprocess.run(
        [sys.executable, "-c", blocked, str(REPO / "examples" / "deploy_onnx.py"), *argv],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    got = json.loads(out.read_text())
    assert [w["window"] for w in got] == list(range(n)) and "window 0 " in proc.stdout

    with EventReader(rec) as reader:
        rep = StackedHistogram(height, width)
        t_ends = (np.arange(n) + 1) * window_us  # events start at t=0: windows end at 50 ms, 100 ms, ...
        frames = []
        for events in reader.iter_windows(t_ends, window_us):
            x = torch.zeros(1, 20, *HW)
            x[0, :, :height, :width] = torch.from_numpy(rep(*events).astype(np.float32))
            frames.append(x)
    total = 0
    for w, t_end, raw in zip(got, t_ends, torch_sequence(exported.model, frames)):
        ref = detections(raw)
        ref[:, [0, 2]] = ref[:, [0, 2]].clip(0, width)
        ref[:, [1, 3]] = ref[:, [1, 3]].clip(0, height)
        boxes = np.asarray(w["boxes"], np.float32).reshape(-1, 6)
        assert w["t_end_us"] == t_end and len(boxes) == len(ref)
        np.testing.assert_allclose(boxes, ref, rtol=1e-4, atol=1e-3)
        total += len(ref)
    assert total > n


@pytest.mark.parametrize("declined", [False, True])
def test_openvino_telemetry_is_off_without_a_consent_file(tmp_path, declined):
    """OpenVINO's converter and NNCF send usage data to Google Analytics when no consent file exists (the negative
    control shows it); after ``decline_openvino_telemetry`` they do not."""
    import os
    import subprocess
    import sys

    pytest.importorskip("openvino_telemetry")
    script = (
        "from yolo_etram.utils.env import decline_openvino_telemetry\n"
        f"if {declined}: decline_openvino_telemetry()\n"
        "import openvino_telemetry as tm\n"
        "t = tm.Telemetry(app_name='probe', app_version='0', tid='G-0', backend='ga4', enable_opt_in_dialog=False,\n"
        "    disable_in_ci=True)\n"
        "print('consent', t.consent)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in {"CI", "TF_BUILD", "JENKINS_URL"}}
    env["HOME"] = str(tmp_path)  # no consent file here
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"consent {not declined}" in out.stdout
