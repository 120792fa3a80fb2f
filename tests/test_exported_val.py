"""`val` on exported models: an ONNX or TorchScript export steps through every validation sequence with its states
fed back and scores exactly what the PyTorch model scores (reference: the same validator on the ``.pt``)."""

import contextlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from events_fixture import make_tiny_event_data  # noqa: E402

from yolo_etram import EventYOLO  # noqa: E402
from yolo_etram.export import export_recurrent  # noqa: E402

BIN = Path(sys.executable).parent
HW = (96, 128)  # the tiny data's windows: partition (3, 4) needs no padding
VAL = dict(workers=0, plots=False, save_json=True, exist_ok=True)
OPENVINO = importlib.util.find_spec("openvino") is not None


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A model trained until it finds objects (AP > 0), on data with 3 validation sequences (2 stream slots: a
    slot starts a new sequence while the other goes on), exported with 1 and 2 streams."""
    root = tmp_path_factory.mktemp("exported_val")
    data = make_tiny_event_data(root / "data", val=3, test=0)
    model = EventYOLO("rvt-t.yaml")
    model.train(data=str(data), epochs=10, batch=2, workers=0, imgsz=128, plots=False, seed=0, lr0=2e-3, val=False,
                project=str(root), name="run", exist_ok=True)  # fmt: skip
    best = root / "run" / "weights" / "best.pt"
    with contextlib.chdir(root):
        onnx2 = export_recurrent(str(best), "onnx", imgsz=HW, batch=2)
        torchscript = export_recurrent(str(best), "torchscript", imgsz=HW)
        openvino = export_recurrent(str(best), "openvino", imgsz=HW) if OPENVINO else None
    return root, data, best, root / onnx2, root / torchscript, openvino and root / openvino


def predictions(folder: Path) -> dict[str, np.ndarray]:
    return {f.name: np.load(f) for f in sorted(folder.glob("*_pred.npy"))}


def assert_same_detections(ours: dict, reference: dict) -> None:
    assert list(ours) == list(reference) and len(reference) == 3
    for name, ref in reference.items():
        got = ours[name]
        assert len(got) == len(ref) > 0, name
        np.testing.assert_array_equal(got["t"], ref["t"])
        np.testing.assert_array_equal(got["class_id"], ref["class_id"])
        for k in ("x", "y", "w", "h"):  # pixels
            np.testing.assert_allclose(got[k], ref[k], atol=1e-3)
        np.testing.assert_allclose(got["class_confidence"], ref["class_confidence"], atol=1e-5)


@pytest.mark.slow
def test_val_on_onnx_and_torchscript_equals_pytorch(trained):
    root, data, best, onnx2, torchscript, _ = trained
    reference = EventYOLO(str(best)).val(data=str(data), batch=2, project=str(root), name="pt", **VAL)
    p = reference.prophesee
    assert p["AP_50"] > 0.02 and p["n_sequences"] == 3  # the model finds objects: the equality below means something

    # ONNX with two stream slots (Python API)
    onnx_metrics = EventYOLO(str(onnx2)).val(data=str(data), project=str(root), name="onnx", **VAL)
    assert_same_detections(predictions(root / "onnx"), predictions(root / "pt"))
    for key in ("prophesee/AP", "prophesee/AP_50", "prophesee/AP_all", "etram/AP50_all", "etram/AP50_vehicle"):
        assert onnx_metrics.results_dict[key] == pytest.approx(reference.results_dict[key], abs=1e-4), key

    # TorchScript with one stream, through the plain `yolo` command
    if not (BIN / "yolo").exists():
        pytest.skip("the yolo console script is not installed in this environment")
    cmd = [str(BIN / "yolo"), "val", f"model={torchscript}", f"data={data}", f"project={root}", "name=ts"]
    out = subprocess.run(cmd + [f"{k}={v}" for k, v in VAL.items()], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    assert_same_detections(predictions(root / "ts"), predictions(root / "pt"))
    ts = json.loads((root / "ts" / "metrics.json").read_text())
    assert ts["AP"] == pytest.approx(p["AP"], abs=1e-4) and ts["AP_all"] == pytest.approx(p["AP_all"], abs=1e-4)


@pytest.mark.slow
def test_val_and_predict_on_openvino_equal_pytorch(trained):
    """The OpenVINO IR (Ultralytics' CPU deployment format) takes and returns the states like the ONNX export."""
    if not OPENVINO:
        pytest.skip("openvino is not installed")
    root, data, best, _, _, openvino = trained
    assert (openvino / "metadata.yaml").is_file() and list(openvino.glob("*.xml"))
    if not (root / "pt").is_dir():
        EventYOLO(str(best)).val(data=str(data), batch=2, project=str(root), name="pt", **VAL)
    EventYOLO(str(openvino)).val(data=str(data), project=str(root), name="ov", **VAL)
    assert_same_detections(predictions(root / "ov"), predictions(root / "pt"))
    assert json.loads((root / "ov" / "metrics.json").read_text())["AP"] == pytest.approx(
        json.loads((root / "pt" / "metrics.json").read_text())["AP"], abs=1e-4
    )
    recording = sorted((data.parents[1] / "raw" / "val").glob("*_td.h5"))[0]
    kw = dict(conf=0.05, stream=True, verbose=False)
    ours = [r.boxes.data for r in EventYOLO(str(openvino)).predict(str(recording), **kw)]
    reference = [r.boxes.data for r in EventYOLO(str(best)).predict(str(recording), **kw)]
    assert len(ours) == len(reference) > 10 and sum(len(b) for b in reference) > 0
    for a, b in zip(ours, reference):
        assert a.shape == b.shape
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-3)
