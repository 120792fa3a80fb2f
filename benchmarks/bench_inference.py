"""Per-window latency of prediction on CPU: building the 50 ms histogram (representation), one PyTorch step with the
state carried, and one step of the stateful export in ONNX Runtime and in OpenVINO (fp32), for rvt-t/s/b at 384x640
(eTraM's input), on a synthetic 1280x720 recording halved to 640x360 like eTraM. A model keeps up with real time when
a step takes at most one window (50 ms).

    python benchmarks/bench_inference.py              # ~3 minutes on 2 cores
    python benchmarks/bench_inference.py --sizes t --windows 20
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def median_ms(fn, n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1e3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="t,s,b")
    ap.add_argument("--windows", type=int, default=30, help="windows timed per measurement")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.json:
        args.json = str(Path(args.json).resolve())  # the run changes directory (exports land next to it)
    sizes = args.sizes.split(",")
    if len(sizes) > 1:  # one process per model: an earlier model's ONNX Runtime session slowed the next one's PyTorch
        rows = []
        with tempfile.TemporaryDirectory() as tmp:
            for size in sizes:
                out = Path(tmp) / f"{size}.json"
                subprocess.run(
                    [sys.executable, __file__, "--sizes", size, "--windows", str(args.windows), "--json", str(out)],
                    check=True,
                )
                rows += json.loads(out.read_text())
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=1))
        return

    import onnxruntime as ort
    import torch

    from yolo_etram import EventYOLO
    from yolo_etram.data.io import EventReader
    from yolo_etram.data.representation import StackedHistogram
    from yolo_etram.data.synth import SynthConfig, synthesize_recording
    from yolo_etram.nn.exported import StatefulOnnxModel, StatefulOpenVINOModel

    torch.set_num_threads(os.cpu_count() or 1)
    print(
        f"torch {torch.__version__}, onnxruntime {ort.__version__}, {os.cpu_count()} CPU threads, {platform.machine()}"
    )
    tmp = Path(tempfile.mkdtemp(prefix="bench_inference_"))
    os.chdir(tmp)  # exports are written next to the working directory
    rec = tmp / "rec"
    synthesize_recording(rec, SynthConfig(width=1280, height=720, duration_s=4.0, seed=1))
    rep = StackedHistogram(720, 1280, downsample=2)
    with EventReader(f"{rec}_td.h5") as reader:
        t_ends = np.arange(100_000, 4_000_001, 50_000)
        windows = list(reader.iter_windows(t_ends, 50_000))
    n_events = np.mean([len(w[3]) for w in windows])
    hists = [rep(*w) for w in windows]
    it = iter(range(10**9))
    rep_ms = median_ms(lambda: rep(*windows[next(it) % len(windows)]), len(windows))
    print(f"representation: {rep_ms:.2f} ms per window ({n_events / 1e3:.0f} k events per 50 ms window)")

    frames = [torch.zeros(1, 20, 384, 640) for _ in hists]
    for f, h in zip(frames, hists):
        f[0, :, :360] = torch.from_numpy(h).float()
    rows = []
    for size in args.sizes.split(","):
        model = EventYOLO(f"rvt-{size}.yaml")
        net = model.model.eval()
        k = iter(range(10**9))
        with torch.no_grad():
            for f in frames[:3]:
                net(f)  # warm-up
            torch_ms = median_ms(lambda: net(frames[next(k) % len(frames)]), args.windows)
        onnx_file = model.export(format="onnx", imgsz=(384, 640), simplify=False)
        runner = StatefulOnnxModel(onnx_file)
        np_frames = [f.numpy() for f in frames]
        for f in np_frames[:3]:
            runner(f)
        onnx_ms = median_ms(lambda: runner(np_frames[next(k) % len(np_frames)]), args.windows)  # noqa: F821
        del runner  # ONNX Runtime's idle threads spin for a while and would slow the next model's PyTorch timing
        gc.collect()
        ov_runner = StatefulOpenVINOModel(model.export(format="openvino", imgsz=(384, 640)))
        for f in np_frames[:3]:
            ov_runner(f)
        openvino_ms = median_ms(lambda: ov_runner(np_frames[next(k) % len(np_frames)]), args.windows)  # noqa: F821
        del ov_runner
        gc.collect()
        row = {"model": f"rvt-{size}", "representation_ms": rep_ms, "pytorch_ms": torch_ms, "onnx_ms": onnx_ms}
        row["openvino_ms"] = openvino_ms
        rows.append(row)
        verdict = lambda ms: "real time" if rep_ms + ms <= 50 else f"{(rep_ms + ms) / 50:.1f}x slower than real time"
        print(
            f"rvt-{size}: PyTorch step {torch_ms:.0f} ms ({verdict(torch_ms)}), "
            f"ONNX Runtime step {onnx_ms:.0f} ms ({verdict(onnx_ms)}), OpenVINO step {openvino_ms:.0f} ms "
            f"({verdict(openvino_ms)}); representation/step "
            f"{rep_ms / torch_ms * 100:.1f}%"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
