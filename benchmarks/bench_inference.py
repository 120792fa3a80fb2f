"""Per-window latency of prediction on CPU, each runtime in its own process: building the 50 ms histogram
(representation), one PyTorch step with the state carried (float32, and bf16 autocast as ``quantize=16`` runs it), and
one step of the stateful export in ONNX Runtime, in OpenVINO fp32, bf16 (``half=True``) and INT8 (NNCF post-training
quantization, calibrated on prepared windows with their carried states), for rvt-t/s/b at 384x640 (eTraM's input), on
a synthetic 1280x720 recording halved to 640x360 like eTraM. A model keeps up with real time when representation +
step take at most one window (50 ms).

Each (model, runtime) pair runs in a fresh process: an ONNX Runtime session's idle threads spin for a while after use
and slowed a later PyTorch timing in the same process, and a deployment runs one runtime anyway. Weights are random
(latency does not depend on them); the AP change of bf16 and INT8 is measured on trained weights by
``benchmarks/precision.py``.

    python benchmarks/bench_inference.py              # ~8 minutes on 2 cores
    python benchmarks/bench_inference.py --sizes t --runtimes pytorch,openvino,openvino_int8 --windows 20
    python benchmarks/bench_inference.py --sizes t --runtimes pytorch,pytorch_bf16,openvino,openvino_bf16
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

RUNTIMES = ("pytorch", "pytorch_bf16", "onnx", "openvino", "openvino_bf16", "openvino_int8")
AB_RUNTIMES = ("openvino", "openvino_bf16", "openvino_int8")  # also timed together in one process
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


def make_step(model, runtime: str, frames: np.ndarray, tmp: Path):
    """``(inputs, step)``: the windows in the form ``runtime`` takes and one stateful step of ``model`` in it."""
    import torch

    from yolo_etram.nn.exported import StatefulOnnxModel, StatefulOpenVINOModel
    from yolo_etram.utils.precision import cpu_autocast, require_cpu_bf16

    if runtime in ("pytorch", "pytorch_bf16"):
        if runtime == "pytorch_bf16":
            require_cpu_bf16("pytorch_bf16")
        net = model.model.eval()

        @torch.no_grad()
        def step(x):
            with cpu_autocast(runtime == "pytorch_bf16"):  # the head in float32, as quantize=16 predicts
                return net(x)

        return [torch.from_numpy(f) for f in frames], step
    # each export in its own folder: fp32 and half=True share a name, and OpenVINO maps a compiled model's weight file
    # (overwriting it under a loaded model ends the process with SIGBUS)
    (tmp / runtime).mkdir(exist_ok=True)
    os.chdir(tmp / runtime)
    if runtime == "onnx":
        return list(frames), StatefulOnnxModel(model.export(format="onnx", imgsz=HW, simplify=False))
    if runtime == "openvino":
        return list(frames), StatefulOpenVINOModel(model.export(format="openvino", imgsz=HW))
    if runtime == "openvino_bf16":
        return list(frames), StatefulOpenVINOModel(model.export(format="openvino", imgsz=HW, half=True))
    if runtime == "openvino_int8":
        f = model.export(format="openvino", imgsz=HW, quantize=8, data=str(calibration_data(tmp)))
        return list(frames), StatefulOpenVINOModel(f)
    raise SystemExit(f"unknown runtime {runtime}; known: {', '.join(RUNTIMES)}")


def time_one(size: str, runtime: str, windows: int, tmp: Path) -> dict:
    """Median step of one model in one runtime, in this process."""
    import torch

    from yolo_etram import EventYOLO

    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count() or 1)
    frames, rep_ms, n_events = event_windows(tmp)
    model = EventYOLO(f"rvt-{size}.yaml")
    os.chdir(tmp)  # exports are written next to the working directory
    inputs, step = make_step(model, runtime, frames, tmp)
    for x in inputs[:3]:
        step(x)  # warm-up
    k = iter(range(10**9))
    ms = median_ms(lambda: step(inputs[next(k) % len(inputs)]), windows)
    return {"model": f"rvt-{size}", "runtime": runtime, "step_ms": ms, "representation_ms": rep_ms, "events": n_events}


def one_process_ab(size: str, runtimes: list[str], windows: int, tmp: Path, rounds: int = 4) -> dict:
    """Several runtimes of the same weights in one process, in alternating rounds (the ratios that noise between
    processes cannot fake)."""
    import torch

    from yolo_etram import EventYOLO

    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count() or 1)
    frames, _, _ = event_windows(tmp)
    model = EventYOLO(f"rvt-{size}.yaml")
    os.chdir(tmp)
    steps = {r: make_step(model, r, frames, tmp) for r in runtimes}
    times = {r: [] for r in runtimes}
    k = iter(range(10**9))
    for _ in range(rounds):
        for name, (inputs, step) in steps.items():
            for x in inputs[:2]:
                step(x)
            times[name].append(median_ms(lambda: step(inputs[next(k) % len(inputs)]), windows // rounds + 1))  # noqa: B023
    return {"model": f"rvt-{size}", **{f"ab_{r}_ms": float(np.median(v)) for r, v in times.items()}}


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
        if runtime.startswith("ab:"):
            print(json.dumps(one_process_ab(size, runtime[3:].split("+"), args.windows, Path(tmp))))
        else:
            print(json.dumps(time_one(size, runtime, args.windows, Path(tmp))))
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
            together = [r for r in AB_RUNTIMES if r in args.runtimes.split(",")]
            if len(together) > 1:
                cmd = [sys.executable, __file__, "--windows", str(args.windows), "--child", size]
                done = subprocess.run([*cmd, "ab:" + "+".join(together), tmp], capture_output=True, text=True)
                if done.returncode:
                    sys.exit(f"rvt-{size} one-process A/B failed:\n{(done.stdout + done.stderr)[-3000:]}")
                r = json.loads(done.stdout.strip().splitlines()[-1])
                rows[r["model"]].update(r)
                base = r[f"ab_{together[0]}_ms"]
                print(
                    f"rvt-{size} in one process, alternating: "
                    + ", ".join(f"{t} {r[f'ab_{t}_ms']:.0f} ms ({base / r[f'ab_{t}_ms']:.2f}x)" for t in together)
                )
    if args.json:
        Path(args.json).write_text(json.dumps(list(rows.values()), indent=1))


if __name__ == "__main__":
    main()
