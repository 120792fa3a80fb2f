"""Several cameras through one exported model on CPU: windows per second for 1, 2 and 4 parallel streams (the cameras
of one box), each stream with its own recurrent state.

Two ways to serve B cameras with one model are timed, each (runtime, B) in its own process:

- ``batch``: one export with ``batch=B`` steps all B windows at once (per-slot states; what ``yolo predict
  source=cam0.raw,cam1.raw`` runs with such an export);
- ``turns``: one batch-1 export steps the B streams one after the other, swapping their states.

A step serves every camera once; B cameras keep up with real time when the step plus building B representations
takes at most one window (50 ms). rvt-t at 384x640 (eTraM's input), random weights (latency does not depend on them).

    python benchmarks/bench_streams.py                                    # OpenVINO fp32, bf16, INT8; ~10 minutes
    python benchmarks/bench_streams.py --runtimes openvino_int8 --streams 1,2 --windows 20
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_inference import HW, event_windows, median_ms  # noqa: E402

RUNTIMES = ("openvino", "openvino_bf16", "openvino_int8")
EXPORT_ARGS = {"openvino": {}, "openvino_bf16": {"quantize": 16}, "openvino_int8": {"quantize": 8}}


def calibration_data(tmp: Path, streams: int) -> Path:
    """A prepared 640x360 split with one synthetic 4 s sequence per stream (INT8 calibrates every slot)."""
    from yolo_etram.data.synth import SynthConfig, make_synthetic_dataset

    cfg = SynthConfig(width=640, height=360, duration_s=4.0, seed=2)
    root = tmp / f"calib{streams}"
    return make_synthetic_dataset(root, {"train": 0, "val": streams, "test": 0}, cfg, workers=1, progress=False)


def export(size: str, runtime: str, batch: int, tmp: Path) -> Path:
    from yolo_etram import EventYOLO
    from yolo_etram.export import export_recurrent

    folder = tmp / f"{runtime}_b{batch}"  # each export in its own folder: OpenVINO maps its weight file
    folder.mkdir(exist_ok=True)
    kwargs = dict(EXPORT_ARGS[runtime])
    if runtime == "openvino_int8":
        kwargs["data"] = str(calibration_data(tmp, batch))
    with contextlib.chdir(folder):
        return folder / export_recurrent(EventYOLO(f"rvt-{size}.yaml"), "openvino", imgsz=HW, batch=batch, **kwargs)


def time_one(size: str, runtime: str, mode: str, streams: int, windows: int, tmp: Path) -> dict:
    """Median ms of one step serving every stream once, in this process."""
    import torch

    from yolo_etram.nn.exported import StatefulOpenVINOModel

    torch.manual_seed(0)
    frames, rep_ms, _ = event_windows(tmp)
    runner = StatefulOpenVINOModel(export(size, runtime, streams if mode == "batch" else 1, tmp))
    batches = [np.concatenate([frames[(i + k * 7) % len(frames)] for k in range(streams)]) for i in range(len(frames))]
    states = [None] * streams

    def step_batch(i: int) -> None:
        runner(batches[i % len(batches)])

    def step_turns(i: int) -> None:
        for k in range(streams):  # each camera's state in, its new state out
            runner.states = states[k]
            runner(frames[(i + k * 7) % len(frames)])
            states[k] = runner.states

    step = step_batch if mode == "batch" else step_turns
    for i in range(3):
        step(i)  # warm-up
    k = iter(range(10**9))
    ms = median_ms(lambda: step(next(k)), windows)
    return {
        "model": f"rvt-{size}",
        "runtime": runtime,
        "mode": mode,
        "streams": streams,
        "step_ms": ms,
        "rep_ms": rep_ms,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="t", help="rvt size: t, s or b")
    ap.add_argument("--runtimes", default=",".join(RUNTIMES), help="comma-separated subset of " + ", ".join(RUNTIMES))
    ap.add_argument("--streams", default="1,2,4", help="numbers of parallel streams (cameras)")
    ap.add_argument("--modes", default="batch,turns")
    ap.add_argument("--windows", type=int, default=30, help="steps timed per measurement")
    ap.add_argument("--json", default=None)
    ap.add_argument("--child", nargs=4, metavar=("RUNTIME", "MODE", "STREAMS", "TMP"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        runtime, mode, streams, tmp = args.child
        print(json.dumps(time_one(args.size, runtime, mode, int(streams), args.windows, Path(tmp))))
        return

    import openvino as ov
    import torch

    from yolo_etram.utils.precision import cpu_bf16

    print(
        f"torch {torch.__version__}, openvino {ov.get_version()}, {os.cpu_count()} CPU threads, {platform.machine()} "
        f"({torch.backends.cpu.get_cpu_capability()}); rvt-{args.size} {HW[0]}x{HW[1]}, one process per row"
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_streams_") as tmp:
        for runtime in args.runtimes.split(","):
            if runtime == "openvino_bf16" and not cpu_bf16():
                print(f"{runtime}: skipped, this CPU has no bf16 instructions (AVX-512 BF16 or AMX)")
                continue
            for streams in (int(s) for s in args.streams.split(",")):
                for mode in args.modes.split(","):
                    if streams == 1 and mode == "turns":
                        continue  # the same as batch with one stream
                    cmd = [sys.executable, __file__, "--size", args.size, "--windows", str(args.windows)]
                    done = subprocess.run(
                        [*cmd, "--child", runtime, mode, str(streams), tmp], capture_output=True, text=True
                    )
                    if done.returncode:
                        sys.exit(f"{runtime} {mode} x{streams} failed:\n{(done.stdout + done.stderr)[-3000:]}")
                    r = json.loads(done.stdout.strip().splitlines()[-1])
                    total = r["step_ms"] + streams * r["rep_ms"]
                    r["windows_per_s"] = round(1000 * streams / total, 1)
                    r["real_time"] = total <= 50
                    rows.append(r)
                    print(
                        f"{runtime:14s} {mode:5s} {streams} stream(s): step {r['step_ms']:.1f} ms + {streams} x "
                        f"{r['rep_ms']:.1f} ms representation = {total:.1f} ms, {r['windows_per_s']:.1f} windows/s: "
                        + ("real time" if r["real_time"] else f"{total / 50:.2f}x too slow for real time")
                    )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
