"""``make bench``: every benchmark in one command, a summary table, and all numbers in ``runs/bench/bench.json``.

    python benchmarks/run_all.py               # ~30 minutes on 2 CPU cores
    python benchmarks/run_all.py --only model,inference
    python benchmarks/run_all.py --rvt ~/src/RVT      # with ours vs RVT's own code (a work tree or git dir of RVT)

Each benchmark runs as its own process (``benchmarks/bench_<name>.py --json ...``) and prints its details; the table at
the end collects the headline figures. Ratios are measured within one benchmark run; absolute times belong to the
machine named in the header. ``vs_rvt`` needs a copy of RVT's repository (``--rvt``, or ``$RVT_REPO`` as read by
``bench_vs_rvt.py``); without one it is skipped, and the table says why.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHES = ("prepare", "raw", "dataloader", "model", "throughput", "inference", "vs_rvt")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    mem = ""
    try:
        kb = int(
            next(
                line.split()[1]
                for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")
            )
        )
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, StopIteration):
        pass
    gpu = ""
    try:
        import torch

        cpu += f" ({torch.backends.cpu.get_cpu_capability()})"  # AVX2 / AVX512: INT8 and bf16 speed depend on it
        if torch.cuda.is_available():
            gpu = f", {torch.cuda.get_device_name()}"
    except ImportError:
        pass
    return f"{cpu}, {os.cpu_count()} CPU threads{mem}{gpu}"


def summary(results: dict) -> list[str]:
    rows = ["| benchmark | result |", "|---|---|"]
    if "prepare" in results:
        r = results["prepare"]
        rows.append(
            f"| prepare, 1280x720 synthetic -> 640x360 | {r['ours_events_per_s'] / 1e6:.1f} M events/s, "
            f"{r['speedup']:.1f}x a per-window reference; peak RSS "
            + ", ".join(f"{k}: {v:.0f} MiB" for k, v in r["peak_rss_mib"].items())
            + " |"
        )
    if "raw" in results:
        r = results["raw"]
        for d in r["decode"]:
            rows.append(
                f"| decode {d['file']} tiled to {d['events'] / 1e6:.0f} M events (EVT {d['evt']}) | ours "
                f"{d['ours_mev_s']:.0f} M events/s, {d['third_party']} {d.get('third_party_mev_s', float('nan')):.0f}, "
                f"the same events in HDF5 {d['hdf5_mev_s']:.0f} |"
            )
        for case, d in r["prepare"].items():
            rows.append(
                f"| prepare, {case} traffic as EVT 3.0 .raw vs HDF5 | {d['evt3']['mev_s']:.1f} vs "
                f"{d['h5']['mev_s']:.1f} M events/s ({d['raw_vs_hdf5']:.2f}x) |"
            )
        rows.append(
            "| .raw windows streamed, peak RSS | "
            + ", ".join(f"{k}: {v:.0f} MiB" for k, v in r["stream_peak_rss_mib"].items())
            + " |"
        )
    if "dataloader" in results:
        r = results["dataloader"]
        rows.append(
            f"| data loading, {r['input'][0]}x{r['input'][1]}, B={r['batch']} x T={r['seq_len']} | "
            f"{r['loader_clips_per_s']:.1f} clips/s vs rvt-t training {r['rvt_t_train_clips_per_s']:.2f} "
            f"clips/s: **{r['ratio']:.0f}x** headroom |"
        )
    for r in results.get("model", []):
        mem = r.get("peak_rss_mib", r.get("peak_gpu_mib"))
        rows.append(
            f"| {r['model']} {r['size']} {r['device']}: forward / train step per window | "
            f"{r['forward_ms']:.1f} ms ({r['forward_fps']:.1f} fps) / {r['train_ms_per_window']:.1f} ms "
            f"({r['train_fps']:.1f} fps), peak {'GPU' if r['device'] == 'cuda' else 'RSS'} {mem:.0f} MiB |"
        )
    for r in results.get("throughput", []):
        rows.append(
            f"| {r['model']} {r['size']} training, B={r['batch']} x T={r['seq_len']} | "
            f"{r['windows_per_s']:.1f} windows/s, peak RSS {r['peak_rss_mib']:.0f} MiB |"
        )
    for r in results.get("inference", []):
        cells = []
        for runtime in ("pytorch", "onnx", "openvino", "openvino_int8"):
            ms = r.get(f"{runtime}_ms", float("nan"))
            cells.append(f"{ms:.0f}" + (" (real time)" if r["representation_ms"] + ms <= 50 else ""))
        rows.append(
            f"| {r['model']} 384x640 step per 50 ms window, each in its own process: PyTorch / ONNX Runtime / "
            f"OpenVINO fp32 / OpenVINO INT8 (representation {r['representation_ms']:.2f} ms) | {' / '.join(cells)} ms |"
        )
        if "ab_int8_ms" in r:
            rows.append(
                f"| {r['model']} OpenVINO fp32 / INT8 in one process, alternating | {r['ab_fp32_ms']:.0f} / "
                f"{r['ab_int8_ms']:.0f} ms (**{r['ab_fp32_ms'] / r['ab_int8_ms']:.2f}x**) |"
            )
    vs_rvt = results.get("vs_rvt", {})
    if "skipped" in vs_rvt:
        rows.append(f"| ours vs RVT's own code | skipped: {vs_rvt['skipped']} |")
    for size, r in (vs_rvt if "skipped" not in vs_rvt else {}).items():
        for name, theirs, ours in r["rows"]:
            cells = f"{theirs:.1f} / {ours:.1f} ms (**{ours / theirs:.2f}x**)"
            rows.append(f"| rvt-{size} 384x640 {name}: RVT's code / ours | {cells} |")
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default=",".join(BENCHES), help="comma-separated subset of " + ", ".join(BENCHES))
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench"))
    ap.add_argument("--rvt", default=None, help="RVT's work tree or git dir, for vs_rvt")
    ap.add_argument("--rvt-python", default=None, help="python with RVT's needs, for vs_rvt (default: rvt_env.sh's)")
    args = ap.parse_args()
    absolute = lambda p: p and os.path.abspath(os.path.expanduser(p))  # the children run in the repository root
    rvt_args = {"--rvt": absolute(args.rvt), "--rvt-python": absolute(args.rvt_python)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    header = f"yolo-etram benchmarks on {machine()}, python {platform.python_version()}"
    print(header, flush=True)
    results, seconds = {}, {}
    for name in args.only.split(","):
        print(f"\n== {name} ==", flush=True)
        path = out / f"{name}.json"
        t = time.perf_counter()
        cmd = [sys.executable, str(ROOT / "benchmarks" / f"bench_{name}.py"), "--json", str(path)]
        if name == "vs_rvt":
            cmd += [arg for flag, value in rvt_args.items() if value for arg in (flag, value)]
        subprocess.run(cmd, check=True, cwd=ROOT)
        seconds[name] = round(time.perf_counter() - t, 1)
        results[name] = json.loads(path.read_text())
    (out / "bench.json").write_text(json.dumps({"machine": header, "seconds": seconds, **results}, indent=1))
    print(f"\n{header}\n" + "\n".join(summary(results)))
    print(f"\n{out / 'bench.json'}; " + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
