"""Whole detection models (backbone, PAFPN, head, loss): time per window for a forward step (inference, state
carried) and a training step (forward + loss + backward over a clip of T windows, per window), frames per second and
peak memory, for rvt-t/s/b and the stock yolov8n baseline, at eTraM's 384x640 input and at the demo's 192x320.

Every configuration runs in a fresh process so its peak memory (``VmHWM`` on CPU, ``max_memory_allocated`` on CUDA) is
its own. Compare rows of one run only: the machine's load changes between runs.

    python benchmarks/bench_model.py                       # CPU (and CUDA when present); ~5 minutes on 2 cores
    python benchmarks/bench_model.py --models rvt-t --sizes 192x320 --devices cpu
    python benchmarks/bench_model.py --models rvt-t --sizes 384x640 --precisions fp32,bf16   # bf16 autocast vs fp32
    python benchmarks/bench_model.py --models rvt-t --sizes 768x1280 --batch 2 --iters 2   # full resolution memory
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("rvt-t", "rvt-s", "rvt-b", "yolov8n")
SIZES = ("384x640", "192x320")


def peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(
    model_name: str, size: str, device: str, iters: int, seq_len: int, batch_size: int = 1, precisions=("fp32",)
) -> list[dict]:
    """Runs inside the child process: one row per precision (``fp32``; ``bf16``: under bf16 autocast, the head and
    the loss in float32 as in training), timed in turns."""
    import torch
    from ultralytics.cfg import get_cfg

    sys.path.insert(0, str(ROOT))
    from yolo_etram.nn import EventDetectionModel, set_partition

    torch.set_num_threads(os.cpu_count() or 1)
    h, w = (int(v) for v in size.split("x"))
    event = {"channels": 20, "nbins": 10}
    model = EventDetectionModel(
        {**EventDetectionModel(f"{model_name}.yaml", verbose=False).yaml, "event": event}, ch=20, nc=3, verbose=False
    ).to(device)
    model.args = get_cfg()  # the loss reads its gains (box, cls, dfl) from the training arguments
    if model_name.startswith("rvt"):
        if h % (32 * 6) or w % (32 * 10):
            raise SystemExit(f"{size}: use a multiple of 192x320 (stride 32 x RVT's eTraM partition (6, 10))")
        set_partition(model, (6, 10))  # RVT's eTraM partition; 192x320, 384x640 and 768x1280 are multiples of it
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def timed(fns: dict, n: int) -> dict:
        """Median ms of each function, called in turns (fp32, bf16, fp32, ...) so that both see the same machine."""
        out = {k: [] for k in fns}
        for i in range(n + 2):
            for k, fn in fns.items():
                sync()
                t = time.perf_counter()
                fn()
                sync()
                if i >= 2:  # two warm-up calls
                    out[k].append((time.perf_counter() - t) * 1e3)
        return {k: statistics.median(v) for k, v in out.items()}

    def under(precision: str, fn):
        def run():
            with torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16"):
                fn()

        return run

    x = torch.rand(1, 20, h, w, device=device) * 4
    model.eval()
    with torch.inference_mode():
        fwd_ms = timed({p: under(p, lambda: model(x)) for p in precisions}, iters)
    model.reset_states()

    clip = torch.rand(batch_size, seq_len, 20, h, w, device=device) * 4
    n_boxes, frames = 4, batch_size * seq_len
    batch = {
        "img": clip,
        "cls": torch.zeros(n_boxes * frames, 1, device=device),
        "bboxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]], device=device).repeat(n_boxes * frames, 1),
        "batch_idx": torch.arange(frames, device=device).repeat_interleave(n_boxes).float(),
        "labeled": torch.ones(frames, dtype=torch.bool, device=device),
    }
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]

    def train_step():
        loss, _ = model.loss(batch)
        loss.sum().backward()
        for p in params:
            p.grad = None

    train_ms = timed({p: under(p, train_step) for p in precisions}, max(2, iters // 2))
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else peak_rss_mib()
    return [
        {
            "model": model_name,
            "size": size,
            "device": device,
            "precision": p,
            "forward_ms": round(fwd_ms[p], 2),
            "forward_fps": round(1000 / fwd_ms[p], 1),
            "train_ms_per_window": round(train_ms[p] / frames, 2),
            "train_fps": round(1000 * frames / train_ms[p], 1),
            "seq_len": seq_len,
            "batch": batch_size,
            ("peak_gpu_mib" if device == "cuda" else "peak_rss_mib"): round(peak, 0),  # of all precisions together
            "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
        }
        for p in precisions
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--sizes", default=",".join(SIZES))
    ap.add_argument("--devices", default=None, help="default: cpu, and cuda when available")
    ap.add_argument("--iters", type=int, default=6)
    ap.add_argument("--seq-len", type=int, default=5, help="windows per training clip (truncated BPTT length)")
    ap.add_argument("--batch", type=int, default=1, help="stream slots per training step (peak memory grows with it)")
    ap.add_argument(
        "--precisions",
        default="fp32",
        help="comma-separated: fp32, bf16 (bf16 autocast, as amp=True trains and quantize=16 predicts on a CPU with "
        "bf16); several are timed in turns in one process, so their ratio is from one run",
    )
    ap.add_argument("--json", default=None)
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        precisions = tuple(args.precisions.split(","))
        print(json.dumps(measure(*args.child, args.iters, args.seq_len, args.batch, precisions)))
        return 0

    import platform

    import torch

    devices = args.devices.split(",") if args.devices else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(
        f"torch {torch.__version__}, {os.cpu_count()} CPU threads, {platform.processor() or platform.machine()}"
        + (f", {torch.cuda.get_device_name()}" if "cuda" in devices else "")
    )
    rows = []
    for device in devices:
        for size in args.sizes.split(","):
            for name in args.models.split(","):
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--child",
                        name,
                        size,
                        device,
                        "--iters",
                        str(args.iters),
                        "--seq-len",
                        str(args.seq_len),
                        "--batch",
                        str(args.batch),
                        "--precisions",
                        args.precisions,
                    ],
                    capture_output=True,
                    text=True,
                )
                if out.returncode:
                    print(f"{name} {size} {device}: failed\n{out.stderr[-2000:]}")
                    continue
                for row in json.loads(out.stdout.strip().splitlines()[-1]):
                    rows.append(row)
                    mem = row.get("peak_rss_mib", row.get("peak_gpu_mib"))
                    print(
                        f"{name:8s} {size:8s} {device:4s} {row['precision']:4s}  forward {row['forward_ms']:7.1f} ms "
                        f"({row['forward_fps']:6.1f} fps)  train {row['train_ms_per_window']:7.1f} ms/window "
                        f"({row['train_fps']:5.1f} fps)  peak {'GPU' if device == 'cuda' else 'RSS'} {mem:.0f} MiB"
                    )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
