"""Throughput of ``prepare`` (events/s) on 1280x720 synthetic recordings, next to a straightforward per-window
re-statement of RVT's preprocessing (whole recording in memory, torch histogram per window, blosc zstd writes:
``tests/rvt_reference.py``), measured in the same run on the same data; plus peak memory for two recording lengths.

    python benchmarks/bench_prepare.py            # ~2 minutes on 2 cores
    python benchmarks/bench_prepare.py --seconds 4 --recordings 1
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def reference_prepare(raw: Path, out: Path) -> None:
    """RVT's algorithm written plainly: load all events, repair time, then one torch histogram per window."""
    import h5py
    from rvt_reference import rvt_prepare_events

    from yolo_etram.data.io import blosc, find_recordings, load_boxes, open_h5
    from yolo_etram.data.labels import DATASET_KINDS, apply_label_filters, select_label_frames

    kind = DATASET_KINDS["etram"]
    for split in ("train", "val", "test"):
        if not (raw / split).is_dir():
            continue
        for name, ev_path, bb_path in find_recordings(raw / split):
            with open_h5(ev_path) as f:
                g = f["events"]
                x, y, p, t = (g[k][:].astype(np.int64) for k in ("x", "y", "p", "t"))
                h, w = int(g["height"][()]), int(g["width"][()])
            frames = select_label_frames(apply_label_filters(load_boxes(bb_path), kind, h, w, split == "train"), kind)
            hist = rvt_prepare_events(x, y, p, t, frames.window_t, h, w, downsample=2)
            d = out / split / name
            d.mkdir(parents=True, exist_ok=True)
            with h5py.File(d / "event_representations_ds2_nearest.h5", "w") as f:
                ds = f.create_dataset(
                    "data", shape=hist.shape, dtype=np.uint8, chunks=(1, *hist.shape[1:]), **dict(blosc("zstd"))
                )
                for i in range(len(hist)):
                    ds[i] = hist[i]


PEAK = """
import sys
from yolo_etram.data.prepare import prepare_dataset, PrepareConfig
prepare_dataset(sys.argv[1], sys.argv[2], PrepareConfig(kind='etram'), progress=False)
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across exec
print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')))  # peak RSS, kB
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=8.0, help="length of each synthetic recording")
    ap.add_argument("--recordings", type=int, default=2)
    ap.add_argument("--json", type=str, default=None, help="also write the results here")
    args = ap.parse_args()

    from yolo_etram.data.prepare import PrepareConfig, prepare_dataset
    from yolo_etram.data.synth import SynthConfig, synthesize_dataset

    print(f"python {platform.python_version()}, numpy {np.__version__}, {platform.processor() or platform.machine()}")
    tmp = Path(tempfile.mkdtemp(prefix="bench_prepare_"))
    raw = tmp / "raw"
    cfg = SynthConfig(width=1280, height=720, duration_s=args.seconds, seed=1)
    synthesize_dataset(raw, {"train": args.recordings}, cfg, progress=False)

    t = time.perf_counter()
    res = prepare_dataset(raw, tmp / "ours", PrepareConfig(kind="etram"), workers=1, progress=False)
    ours_s = time.perf_counter() - t
    n_ours = sum(r.events for r in res)
    t = time.perf_counter()
    reference_prepare(raw, tmp / "ref")
    ref_s = time.perf_counter() - t
    t = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "yolo_etram.data.prepare", str(raw), str(tmp / "cmd"), "--workers", "1"],
        check=True,
        capture_output=True,
    )
    cmd_s = time.perf_counter() - t

    peaks = {}
    for seconds in (args.seconds / 2, args.seconds * 2):
        r = tmp / f"raw_{seconds:g}"
        synthesize_dataset(
            r, {"train": 1}, SynthConfig(width=1280, height=720, duration_s=seconds, seed=2), progress=False
        )
        out = subprocess.run(
            [sys.executable, "-c", PEAK, str(r), str(tmp / f"peak_{seconds:g}")],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        peaks[seconds] = int(out.split()[-1]) / 1024

    result = {
        "windows": sum(r.windows for r in res),
        "events": n_ours,
        "ours_events_per_s": n_ours / ours_s,
        "reference_events_per_s": n_ours / ref_s,  # the same windows, the same events
        "speedup": ref_s / ours_s,
        "whole_command_s": cmd_s,
        "peak_rss_mib": {f"{k:g}s": round(v, 1) for k, v in peaks.items()},
    }
    print(f"prepare, 1280x720 -> 640x360, {result['windows']} windows, {n_ours / 1e6:.1f} M events, one process:")
    print(f"  ours       {result['ours_events_per_s'] / 1e6:6.1f} M events/s  ({ours_s:.2f} s)")
    print(
        f"  reference  {result['reference_events_per_s'] / 1e6:6.1f} M events/s  ({ref_s:.2f} s)   "
        f"ratio {result['speedup']:.1f}x"
    )
    print(f"  whole command (python -m yolo_etram.data.prepare, start-up included): {cmd_s:.2f} s")
    print("  peak memory: " + ", ".join(f"{k} recording {v} MiB" for k, v in result["peak_rss_mib"].items()))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
