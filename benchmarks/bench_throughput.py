"""Training throughput of rvt-t in windows per second (forward + loss + backward over B stream slots x T windows, all
labeled), and how it scales with ``batch`` (stream slots) and ``seq_len`` (windows per clip, the truncated BPTT
length), at eTraM's 384x640 and at the demo's 192x320. Each configuration runs in a fresh process (``bench_model.py``'s
child), so a row's peak memory is its own; compare rows of one run only.

    python benchmarks/bench_throughput.py                 # ~6 minutes on 2 cores
    python benchmarks/bench_throughput.py --grid 192x320:1x5,192x320:4x5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
GRID = "192x320:1x5,192x320:2x5,192x320:4x5,192x320:1x10,192x320:2x10,192x320:4x10,384x640:1x5,384x640:2x5,384x640:1x10"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="rvt-t")
    ap.add_argument("--grid", default=GRID, help="comma-separated SIZE:BATCHxSEQ_LEN")
    ap.add_argument("--iters", type=int, default=4)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    import torch

    print(
        f"torch {torch.__version__}, {os.cpu_count()} CPU threads, {platform.machine()} "
        f"({torch.backends.cpu.get_cpu_capability()}); {args.model} training steps, one process per row"
    )
    rows, base = [], {}
    for cell in args.grid.split(","):
        size, bt = cell.split(":")
        batch, seq_len = (int(v) for v in bt.split("x"))
        cmd = [sys.executable, str(HERE / "bench_model.py"), "--child", args.model, size, "cpu"]
        cmd += ["--iters", str(args.iters), "--seq-len", str(seq_len), "--batch", str(batch)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"{cell} failed:\n{(done.stdout + done.stderr)[-3000:]}")
        r = json.loads(done.stdout.strip().splitlines()[-1])[0]  # one precision: fp32
        r["windows_per_s"] = round(1000 / r["train_ms_per_window"], 2)
        base.setdefault(size, r["windows_per_s"])
        rows.append(r)
        print(
            f"{args.model} {size} B={batch} x T={seq_len}: {r['windows_per_s']:.1f} windows/s "
            f"({r['windows_per_s'] / base[size]:.2f}x the first {size} row), peak RSS {r['peak_rss_mib']:.0f} MiB"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
