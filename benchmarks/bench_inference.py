"""Per-window latency of prediction on CPU, each runtime in its own process: building the 50 ms histogram
(representation), one PyTorch step with the state carried, and one step of the stateful export in ONNX Runtime, in
OpenVINO fp32, and in OpenVINO INT8 (NNCF post-training quantization, calibrated on prepared windows with their carried
states), for rvt-t/s/b at 384x640 (eTraM's input), on a synthetic 1280x720 recording halved to 640x360 like eTraM.
A model keeps up with real time when representation + step take at most one window (50 ms).

Each (model, runtime) pair runs in a fresh process: an ONNX Runtime session's idle threads spin for a while after use
and slowed a later PyTorch timing in the same process, and a deployment runs one runtime anyway. Weights are random
(latency does not depend on them); the AP change of INT8 is measured on trained weights by ``yolo val`` (README).

    python benchmarks/bench_inference.py              # ~8 minutes on 2 cores
    python benchmarks/bench_inference.py --sizes t --runtimes pytorch,openvino,openvino_int8 --windows 20
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RUNTIMES = ("pytorch", "onnx", "openvino", "openvino_int8")
HW = (384, 640)


def median_ms(fn, n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1e3)


def event_windows(tmp: Path):
    """The 50 ms windows of a synthetic 1280x720 recording and the representation's time per window."""
    from yolo_etram.data.io import EventReader
    from yolo_etram.data.representations import StackedHistogram
    from yolo_etram.data.synth import SynthConfig, synthesize_recording

    rec = tmp / "rec"
    if not Path(f"{rec}_td.h5").exists():
        synthesize_recording(rec, SynthConfig(width=1280, height=720, duration_s=4.0, seed=1))
    rep = StackedHistogram(720, 1280, downsample=2)
    with EventReader(f"{rec}_td.h5") as reader:
        windows = list(reader.iter_windows(np.arange(100_000, 4_000_001, 50_000), 50_000))
    it = iter(range(10**9))
    rep_ms = median_ms(lambda: rep(*windows[next(it) % len(windows)]), len(windows))
    frames = np.zeros((len(windows), 1, 20, *HW), np.float32)
    for f, w in zip(frames, windows):
        f[0, :, :360] = rep(*w)
    return frames, rep_ms, float(np.mean([len(w[3]) for w in windows]))


def calibration_data(tmp: Path) -> Path:
    """A prepared 640x360 split to calibrate INT8 on (one synthetic 4 s sequence)."""
    from yolo_etram.data.synth import SynthConfig, make_synthetic_dataset

    cfg = SynthConfig(width=640, height=360, duration_s=4.0, seed=2)
    return make_synthetic_dataset(tmp / "calib", {"train": 0, "val": 1, "test": 0}, cfg, workers=1, progress=False)


def time_one(size: str, runtime: str, windows: int, tmp: Path) -> dict:
    """Median step of one model in one runtime, in this process."""
    import torch

    from yolo_etram import EventYOLO
    from yolo_etram.nn.exported import StatefulOnnxModel, StatefulOpenVINOModel

    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count() or 1)
    frames, rep_ms, n_events = event_windows(tmp)
    model = EventYOLO(f"rvt-{size}.yaml")
    os.chdir(tmp)  # exports are written next to the working directory
    if runtime == "pytorch":
        net = model.model.eval()
        inputs = [torch.from_numpy(f) for f in frames]
        step = torch.no_grad()(lambda x: net(x))
    else:
        if runtime == "onnx":
            runner = StatefulOnnxModel(model.export(format="onnx", imgsz=HW, simplify=False))
        elif runtime == "openvino":
            runner = StatefulOpenVINOModel(model.export(format="openvino", imgsz=HW))
        else:
            f = model.export(format="openvino", imgsz=HW, quantize=8, data=str(calibration_data(tmp)))
            runner = StatefulOpenVINOModel(f)
        inputs, step = list(frames), runner
    for x in inputs[:3]:
        step(x)  # warm-up
    k = iter(range(10**9))
    ms = median_ms(lambda: step(inputs[next(k) % len(inputs)]), windows)
    return {"model": f"rvt-{size}", "runtime": runtime, "step_ms": ms, "representation_ms": rep_ms, "events": n_events}


def int8_ab(size: str, windows: int, tmp: Path, rounds: int = 4) -> dict:
    """OpenVINO fp32 and INT8 of the same weights in one process, alternating rounds (the ratio that noise between
    processes cannot fake)."""
    import torch

    from yolo_etram import EventYOLO
    from yolo_etram.nn.exported import StatefulOpenVINOModel

    torch.manual_seed(0)
    frames, _, _ = event_windows(tmp)
    model = EventYOLO(f"rvt-{size}.yaml")
    os.chdir(tmp)
    runners = {
        "fp32": StatefulOpenVINOModel(model.export(format="openvino", imgsz=HW)),
        "int8": StatefulOpenVINOModel(
            model.export(format="openvino", imgsz=HW, quantize=8, data=str(calibration_data(tmp)))
        ),
    }
    times = {k: [] for k in runners}
    k = iter(range(10**9))
    for _ in range(rounds):
        for name, runner in runners.items():
            for x in frames[:2]:
                runner(x)
            times[name].append(median_ms(lambda: runner(frames[next(k) % len(frames)]), windows // rounds + 1))  # noqa: B023
    fp32, int8 = (float(np.median(times[n])) for n in ("fp32", "int8"))
    return {"model": f"rvt-{size}", "ab_fp32_ms": fp32, "ab_int8_ms": int8}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="t,s,b")
    ap.add_argument("--runtimes", default=",".join(RUNTIMES), help="comma-separated subset of " + ", ".join(RUNTIMES))
    ap.add_argument("--windows", type=int, default=30, help="windows timed per measurement")
    ap.add_argument("--json", default=None)
    ap.add_argument("--child", nargs=3, metavar=("SIZE", "RUNTIME", "TMP"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        size, runtime, tmp = args.child
        timing = int8_ab if runtime == "int8_ab" else lambda *a: time_one(*a[:1], runtime, *a[1:])
        print(json.dumps(timing(size, args.windows, Path(tmp))))
        return

    import onnxruntime as ort
    import openvino as ov
    import torch

    print(
        f"torch {torch.__version__}, onnxruntime {ort.__version__}, openvino {ov.get_version()}, "
        f"{os.cpu_count()} CPU threads, {platform.machine()} ({torch.backends.cpu.get_cpu_capability()}); each model "
        "and runtime in its own process"
    )
    rows = {}
    with tempfile.TemporaryDirectory(prefix="bench_inference_") as tmp:
        for size in args.sizes.split(","):
            for runtime in args.runtimes.split(","):
                cmd = [sys.executable, __file__, "--windows", str(args.windows), "--child", size, runtime, tmp]
                done = subprocess.run(cmd, capture_output=True, text=True)
                if done.returncode:
                    sys.exit(f"rvt-{size} {runtime} failed:\n{(done.stdout + done.stderr)[-3000:]}")
                r = json.loads(done.stdout.strip().splitlines()[-1])
                row = rows.setdefault(r["model"], {"model": r["model"], "representation_ms": r["representation_ms"]})
                row[f"{runtime}_ms"] = r["step_ms"]
                total = r["representation_ms"] + r["step_ms"]
                verdict = "real time" if total <= 50 else f"{total / 50:.1f}x slower than real time"
                print(
                    f"rvt-{size} {runtime}: step {r['step_ms']:.0f} ms, with representation "
                    f"{r['representation_ms']:.2f} ms ({r['events'] / 1e3:.0f} k events per window): {verdict}"
                )
            if {"openvino", "openvino_int8"} <= set(args.runtimes.split(",")):
                cmd = [sys.executable, __file__, "--windows", str(args.windows), "--child", size, "int8_ab", tmp]
                done = subprocess.run(cmd, capture_output=True, text=True)
                if done.returncode:
                    sys.exit(f"rvt-{size} int8_ab failed:\n{(done.stdout + done.stderr)[-3000:]}")
                r = json.loads(done.stdout.strip().splitlines()[-1])
                rows[r["model"]].update(r)
                print(
                    f"rvt-{size} OpenVINO in one process, alternating: fp32 {r['ab_fp32_ms']:.0f} ms, INT8 "
                    f"{r['ab_int8_ms']:.0f} ms ({r['ab_fp32_ms'] / r['ab_int8_ms']:.2f}x)"
                )
    if args.json:
        Path(args.json).write_text(json.dumps(list(rows.values()), indent=1))


if __name__ == "__main__":
    main()
