"""``python main.py --quick``: the demo pipeline end to end on tiny settings, offline, and the CLI wiring."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_demo_pipeline_quick(tmp_path):
    """synthesize -> prepare -> train -> validate (Prophesee), offline, on tiny settings."""
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "main.py"),
            "--quick",
            "--data-dir",
            str(tmp_path / "data"),
            "--project",
            str(tmp_path / "runs"),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
    )
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    assert "Prophesee AP" in out.stdout
    assert (tmp_path / "runs" / "demo_quick" / "weights" / "best.pt").is_file()
    assert (tmp_path / "runs" / "demo_quick" / "metrics.json").is_file()
    assert list((tmp_path / "runs" / "demo_quick").glob("synth_val_0000_pred.npy"))
    assert (tmp_path / "data" / "etram_synth_quick" / "val" / "synth_val_0000" / "labels_v2" / "labels.npz").is_file()


def test_cli_dispatches_data_commands_without_ultralytics(tmp_path):
    code = (
        "import sys; from yolo_etram.cli import main; rc = main(['synth', sys.argv[1], '--width', '64', '--height',"
        " '48', '--duration', '0.5', '--train', '1', '--val', '0', '--test', '0', '--quiet']);"
        " print(rc, 'torch' in sys.modules, 'ultralytics' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert out.stdout.split()[-3:] == ["0", "False", "False"], out.stderr
    assert (tmp_path / "train" / "synth_train_0000_td.h5").is_file()
