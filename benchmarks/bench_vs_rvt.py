"""Ours beside RVT's own model code, in one run on this machine: backbone and detector forward per window (state
carried) and the training step per window, same input, same threads.

The reference is RVT's code itself (github.com/uzh-rpg/RVT, at the commit of the copy given with ``--rvt``), built and
timed by ``rvt_model.py`` beside this file in its own virtual environment (``rvt_env.sh``): RVT's ``YoloXDetector``
from its Hydra configs (gen4 tiny/small/base, 384x640, partition (6, 10)), ``forward_backbone`` one window at a time,
``forward_detect`` (3-scale PAFPN + YOLOX head, decoded, no NMS), and its training step (backbone over T windows with
the graph kept, PAFPN + head + SimOTA loss on the labeled windows, backward). Ours is timed with the same protocol in a
child process of this environment: our backbone, ``rvt-<size>-yolox.yaml`` (the same 3-scale detector) and our default
``rvt-<size>.yaml`` (4-scale PAFPN, Ultralytics head). The two alternate ``--rounds`` times so background load hits
both; each figure is the median over rounds of each run's median.

Each side runs twice: with glibc's allocator defaults, and with freed memory kept for reuse
(:func:`yolo_etram.utils.allocator.keep_freed_memory`, which our trainer, validator and predictor turn on for CPU work;
RVT's process gets the same three settings through glibc's ``MALLOC_*_`` environment variables). So the table shows
what the code itself costs (same allocator setting on both sides) and what each tool gives as shipped.

    python benchmarks/bench_vs_rvt.py --rvt ~/src/RVT                 # rvt-t, 2 threads, ~8 min
    python benchmarks/bench_vs_rvt.py --rvt ~/src/RVT --sizes t s b --json runs/bench/vs_rvt.json
    python benchmarks/bench_vs_rvt.py --rvt ~/src/RVT --h 192 --w 320 --T 2 --repeats 1 --rounds 1   # a quick look

``--rvt`` (or ``$RVT_REPO``) is a copy of RVT's repository: a work tree, or a git dir (bare or not). RVT's code runs in
the python given with ``--rvt-python``, else in the environment ``rvt_env.sh`` makes on first use (a few minutes).
Without ``--rvt`` it prints what to pass and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from rvt_model import NO_RVT, make_input, rvt_python  # noqa: E402

SIZES = {"t": "rvt-t", "s": "rvt-s", "b": "rvt-b"}


def measure_ours(
    size: str, T: int, threads: int, repeats: int, warmup: int, h: int, w: int, keep_memory: bool = True
) -> dict:
    """Runs in the child process: our models timed with rvt_model.py's protocol."""
    import torch
    from ultralytics.cfg import get_cfg

    sys.path.insert(0, str(ROOT))
    from yolo_etram.nn import EventDetectionModel, set_partition
    from yolo_etram.utils.allocator import keep_freed_memory

    if keep_memory and not keep_freed_memory("cpu"):
        raise SystemExit("keep_freed_memory is not available here (glibc only)")
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    x_seq = make_input(T, 1, h, w).float()

    def build(yaml: str):
        model = EventDetectionModel(
            {**EventDetectionModel(yaml, verbose=False).yaml, "event": {"channels": 20, "nbins": 10}},
            ch=20,
            nc=3,
            verbose=False,
        )
        model.args = get_cfg()
        set_partition(model, (6, 10))
        return model

    def per_window(fn, reset) -> float:
        times = []
        with torch.no_grad():
            for rep in range(warmup + repeats):
                reset()
                for t in range(T):
                    t0 = time.perf_counter()
                    fn(x_seq[t])
                    if rep >= warmup:
                        times.append(1000 * (time.perf_counter() - t0))
        return statistics.median(times)

    def train_step(model) -> float:
        frames, n_boxes = T, 4
        batch = {
            "img": x_seq.transpose(0, 1).contiguous(),  # (1, T, 20, H, W)
            "cls": torch.zeros(n_boxes * frames, 1),
            "bboxes": torch.tensor([[0.5, 0.5, 0.15, 0.2]]).repeat(n_boxes * frames, 1),
            "batch_idx": torch.arange(frames).repeat_interleave(n_boxes).float(),
            "labeled": torch.ones(frames, dtype=torch.bool),
        }
        model.train()
        times = []
        for rep in range(warmup + repeats):
            model.zero_grad(set_to_none=True)
            model.reset_states()
            t0 = time.perf_counter()
            loss, _ = model.loss(batch)
            loss.sum().backward()
            if rep >= warmup:
                times.append(1000 * (time.perf_counter() - t0) / T)
        return statistics.median(times)

    yolox, default = build(f"{SIZES[size]}-yolox.yaml").eval(), build(f"{SIZES[size]}.yaml").eval()
    backbone = yolox.backbone
    out = {
        "backbone": per_window(backbone, backbone.reset),
        "detector": per_window(yolox, yolox.reset_states),
        "default_forward": per_window(default, default.reset_states),
    }
    out["train"] = train_step(yolox)
    out["default_train"] = train_step(default)
    return out


def kept_memory_env() -> dict[str, str]:
    sys.path.insert(0, str(ROOT))
    from yolo_etram.utils.allocator import environment_variables

    return environment_variables()


def run_counted(cmd: list[str], **kw) -> tuple[subprocess.CompletedProcess, dict]:
    """Run a child; also return its minor page faults and system CPU seconds (the kernel's share of its time)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return proc, {"faults": after.ru_minflt - before.ru_minflt, "sys_s": after.ru_stime - before.ru_stime}


def run_rvt(python: str, size: str, args, keep_memory: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rvt.json"
        cmd = [python, str(HERE / "rvt_model.py"), "--rvt", args.rvt, "--size", size, "--T", str(args.T)]
        cmd += ["--threads", str(args.threads), "--repeats", str(args.repeats), "--warmup", str(args.warmup)]
        cmd += ["--h", str(args.h), "--w", str(args.w), "--backward", "--json", str(out)]
        env = {**os.environ, **(kept_memory_env() if keep_memory else {})}
        proc, counted = run_counted(cmd, env=env)
        if proc.returncode != 0:
            raise SystemExit(f"RVT's bench (rvt_model.py) failed: {proc.stderr.strip()[-2000:]}")
        r = json.loads(out.read_text())
    return {
        **counted,
        "backbone": r["forward_ms_per_step"]["backbone"],
        "detector": r["forward_ms_per_step"]["detector"],
        "train": r["fwd_bwd_ms_per_step"]["median"],
        "rvt_commit": r["meta"]["rvt_commit"][:7],
    }


def run_ours(size: str, args, keep_memory: bool) -> dict:
    cmd = [sys.executable, __file__, "--child", size, "--T", str(args.T), "--threads", str(args.threads)]
    cmd += [] if keep_memory else ["--glibc-defaults"]
    cmd += ["--repeats", str(args.repeats), "--warmup", str(args.warmup), "--h", str(args.h), "--w", str(args.w)]
    proc, counted = run_counted(cmd)
    if proc.returncode != 0:
        raise SystemExit(f"our bench failed: {proc.stderr.strip()[-2000:]}")
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), **counted}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", nargs="+", default=["t"], choices=list(SIZES))
    ap.add_argument("--T", type=int, default=5, help="windows per pass (RVT's eTraM training length)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=2, help="alternations of RVT's run and ours")
    ap.add_argument("--h", type=int, default=384)
    ap.add_argument("--w", type=int, default=640)
    ap.add_argument("--rvt", default=os.environ.get("RVT_REPO"), help="RVT's work tree or git dir ($RVT_REPO)")
    ap.add_argument("--rvt-python", default=None, help="python with RVT's needs (default: made by rvt_env.sh)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--glibc-defaults", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        keep = not args.glibc_defaults
        print(
            json.dumps(measure_ours(args.child, args.T, args.threads, args.repeats, args.warmup, args.h, args.w, keep))
        )
        return 0

    skipped, python = None, None
    if not args.rvt:
        skipped = f"needs RVT's code: {NO_RVT}"
    else:
        try:
            python = rvt_python(args.rvt_python)
        except RuntimeError as e:
            skipped = f"RVT's environment could not be set up: {e}"
    if skipped:
        print(f"bench_vs_rvt: skipped, {skipped}")
        if args.json:
            Path(args.json).write_text(json.dumps({"skipped": skipped}))
        return 0

    print(
        f"ours vs RVT's own code, {args.h}x{args.w}, batch 1, T={args.T}, {args.threads} threads, fp32, "
        f"median of {args.rounds} alternating rounds (each the median of {args.repeats} passes)"
    )
    results = {}
    for size in args.sizes:
        runs = {(who, keep): [] for who in ("rvt", "ours") for keep in (False, True)}
        for _ in range(args.rounds):
            for keep in (False, True):
                runs["rvt", keep].append(run_rvt(python, size, args, keep))
                runs["ours", keep].append(run_ours(size, args, keep))
        med = {
            key: {k: statistics.median(r[k] for r in rs) for k in rs[0] if k != "rvt_commit"}
            for key, rs in runs.items()
        }
        what = {
            "backbone": "backbone forward per window",
            "detector": "detector forward (3-scale PAFPN + YOLOX)",
            "train": "training step per window (all labeled)",
        }
        print(
            f"\nrvt-{size} (RVT commit {runs['rvt', False][0]['rvt_commit']}), ms; 'kept': freed memory kept for reuse"
        )
        print(
            f"  {'what':42s} {'RVT':>7s} {'ours':>7s} {'ratio':>6s} | {'RVT kept':>8s} {'ours kept':>9s} {'ratio':>6s}"
        )
        for k, name in what.items():
            a, b, ak, bk = med["rvt", False][k], med["ours", False][k], med["rvt", True][k], med["ours", True][k]
            print(f"  {name:42s} {a:7.1f} {b:7.1f} {b / a:5.2f}x | {ak:8.1f} {bk:9.1f} {bk / ak:5.2f}x")
        for who in ("rvt", "ours"):
            d, k = med[who, False], med[who, True]
            print(
                f"  {'RVT' if who == 'rvt' else 'ours'} whole run: minor page faults {d['faults'] / 1e3:.0f} k -> "
                f"{k['faults'] / 1e3:.0f} k kept, system CPU {d['sys_s']:.1f} s -> {k['sys_s']:.1f} s"
            )
        shipped = {k: med["ours", True][k] / med["rvt", False][k] for k in what}
        print("  as shipped (ours kept / RVT default): " + ", ".join(f"{k} {v:.2f}x" for k, v in shipped.items()))
        ours = med["ours", True]
        fwd4, train4 = ours["default_forward"], ours["default_train"]
        over_fwd, over_train = fwd4 / ours["detector"] - 1, train4 / ours["train"] - 1
        print(
            f"  our default {SIZES[size]} (4-scale PAFPN, kept): forward {fwd4:.1f} ms ({over_fwd:+.0%} over 3-scale), "
            f"train {train4:.1f} ms ({over_train:+.0%})"
        )
        results[size] = {
            "medians": {f"{who}{'_kept' if keep else ''}": m for (who, keep), m in med.items()},
            "as_shipped_ratio": shipped,
            "rows": [
                (f"{name}, {label}", med["rvt", keep][k], med["ours", keep][k])
                for k, name in what.items()
                for keep, label in ((False, "glibc defaults"), (True, "freed memory kept"))
            ],
            "rvt_commit": runs["rvt", False][0]["rvt_commit"],
        }
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
