"""``python main.py --quick``: the demo pipeline end to end on tiny settings, offline, and the CLI wiring."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    """``python main.py --quick`` run as a user runs it: synthesize, prepare, train, validate, predict."""
    root = tmp_path_factory.mktemp("quick_demo")
    out = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "--quick", "--data-dir", str(root / "data"), "--project",
         str(root / "runs")],
        capture_output=True, text=True, timeout=900, cwd=root,
    )  # fmt: skip
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    return root, out.stdout


def test_demo_pipeline_quick(quick_demo):
    """synthesize -> prepare -> train -> validate (Prophesee) -> predict, offline, on tiny settings."""
    root, stdout = quick_demo
    run = root / "runs" / "demo_quick"
    assert "Prophesee AP" in stdout and "prediction.jpg" in stdout
    assert (run / "weights" / "best.pt").is_file() and (run / "metrics.json").is_file()
    assert list(run.glob("synth_val_0000_pred.npy"))
    assert (root / "data" / "etram_synth_quick" / "val" / "synth_val_0000" / "labels_v2" / "labels.npz").is_file()
    import cv2

    picture = cv2.imread(str(run / "prediction.jpg"))
    h, w = picture.shape[:2]  # the sensor's 96x128 event frame, enlarged to stay legible, with its boxes
    assert h % 96 == 0 and w == h // 96 * 128 and w >= 640


def test_export_without_imgsz_validates_like_the_pt(quick_demo):
    """The user's path: train (the demo), ``export`` with no ``imgsz``, ``val`` on both: the export has the training
    size and scores exactly what the ``.pt`` scores (not a fixed 384x640 default, which changes the detections)."""
    import numpy as np

    from yolo_etram import EventYOLO

    root, _ = quick_demo
    best = root / "runs" / "demo_quick" / "weights" / "best.pt"
    data = root / "data" / "etram_synth_quick" / "data.yaml"
    onnx = EventYOLO(str(best)).export(format="onnx")
    kw = dict(data=str(data), project=str(root / "val"), exist_ok=True, save_json=True, plots=False)
    pt = EventYOLO(str(best)).val(name="pt", **kw)
    ex = EventYOLO(onnx).val(name="onnx", **kw)
    assert pt.prophesee["n_images"] == ex.prophesee["n_images"] > 0
    ref = np.load(root / "val" / "pt" / "synth_val_0000_pred.npy")
    got = np.load(root / "val" / "onnx" / "synth_val_0000_pred.npy")
    assert len(got) == len(ref) > 0  # the same detections, not more (padding to 384x640 made 300 per window)
    for key in ("x", "y", "w", "h", "class_confidence"):
        np.testing.assert_allclose(np.sort(got[key]), np.sort(ref[key]), atol=1e-3)
    assert ex.results_dict["prophesee/AP"] == pytest.approx(pt.results_dict["prophesee/AP"], abs=1e-4)


def test_cli_dispatches_data_commands_without_ultralytics(tmp_path):
    code = (
        "import sys; from yolo_etram.cli import main; rc = main(['synth', sys.argv[1], '--width', '64', '--height',"
        " '48', '--duration', '0.5', '--train', '1', '--val', '0', '--test', '0', '--quiet']);"
        " print(rc, 'torch' in sys.modules, 'ultralytics' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert out.stdout.split()[-3:] == ["0", "False", "False"], out.stderr
    assert (tmp_path / "train" / "synth_train_0000_td.h5").is_file()
