"""The plain `yolo` command with our hook, `etram-yolo`, and stock models left stock."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BIN = Path(sys.executable).parent


def run(cmd, cwd, env=None, timeout=600):
    return subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )


@pytest.mark.slow
def test_plain_yolo_trains_our_yaml_and_still_runs_stock_models(tiny_events, tmp_path):
    if not (BIN / "yolo").exists():
        pytest.skip("the yolo console script is not installed in this environment")
    out = run(
        [
            str(BIN / "yolo"),
            "train",
            "model=rvt-t.yaml",
            f"data={tiny_events}",
            "epochs=1",
            "batch=2",
            "workers=0",
            "imgsz=128",
            "plots=False",
            f"project={tmp_path}",
            "name=hook",
        ],
        cwd=tmp_path,
    )
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    assert (tmp_path / "hook" / "weights" / "best.pt").is_file()
    assert "prophesee/AP" in (tmp_path / "hook" / "results.csv").read_text()
    # a stock model through the same command keeps stock classes (image in, boxes out)
    import cv2

    cv2.imwrite(str(tmp_path / "img.png"), np.full((64, 64, 3), 128, np.uint8))
    out = run(
        [
            str(BIN / "yolo"),
            "predict",
            "model=yolov8n.yaml",
            f"source={tmp_path / 'img.png'}",
            "imgsz=64",
            f"project={tmp_path}",
            "name=stock",
            "save=False",
        ],
        cwd=tmp_path,
        env={"YOLO_VERBOSE": "True"},
    )
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    assert "64x64" in out.stdout + out.stderr


def test_hook_is_off_outside_yolo_and_with_the_switch(tmp_path):
    code = (
        "import sys; print('yolo_etram_hook' in sys.modules, "
        "any(type(h).__name__.startswith('_Activate') for h in sys.meta_path))"
    )
    out = run([sys.executable, "-c", code], cwd=tmp_path)
    hook_installed = out.stdout.split()
    if hook_installed[0] == "False":
        pytest.skip("yolo_etram_hook.pth is not installed in this environment (make setup installs it)")
    assert hook_installed == ["True", "False"]  # loaded, but inactive in a plain python process
    import yolo_etram_hook

    argv = sys.argv
    try:
        sys.argv = ["/usr/bin/yolo"]
        os.environ["YOLO_ETRAM_HOOK"] = "0"
        assert yolo_etram_hook.install() is False
        os.environ["YOLO_ETRAM_HOOK"] = "1"
        assert yolo_etram_hook.install() is True
        assert yolo_etram_hook.install() is True  # idempotent
        n = sum(isinstance(h, yolo_etram_hook._ActivateAfterUltralyticsCfg) for h in sys.meta_path)
        assert n == 1
    finally:
        sys.argv = argv
        sys.meta_path[:] = [h for h in sys.meta_path if not isinstance(h, yolo_etram_hook._ActivateAfterUltralyticsCfg)]
        os.environ.pop("YOLO_ETRAM_HOOK", None)
