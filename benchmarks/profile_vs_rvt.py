"""Where the backbone's time goes: RVT's own backbone and ours in one process, the same weights and input, timed
alternately and profiled op by op (torch.profiler self CPU time per window).

The reference is RVT's code (github.com/uzh-rpg/RVT at the commit of the copy given with ``--rvt``), built by
``rvt_model.py`` beside this file (gen4 config, perturbed init). Our backbone is ``recurrent.RecurrentMaxViT`` with
RVT's weights loaded (``recurrent.rvt_checkpoint.load_rvt_backbone``); the outputs of all 4 stages are compared first.
RVT's code needs omegaconf and ``recurrent`` only torch, timm and einops, so both run in RVT's environment, one
process: started from a python without omegaconf, this re-runs itself in ``--rvt-python`` or else in the environment
``rvt_env.sh`` makes on first use (a few minutes).

    python benchmarks/profile_vs_rvt.py --rvt ~/src/RVT                 # rvt-t, 384x640, T=5, 2 threads, ~1 min
    python benchmarks/profile_vs_rvt.py --rvt ~/src/RVT --size b --rounds 9

``--rvt`` (or ``$RVT_REPO``) is a work tree or a git dir of RVT's repository. Without it this prints what to pass and
exits 0.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from rvt_model import NO_RVT, build_detector, import_rvt, make_input, rvt_python  # noqa: E402


def build(rvt_path: str, size: str, h: int, w: int):
    """RVT's detector (perturbed init, eval) and our backbone with its weights, plus RVT's commit and input size."""
    warnings.filterwarnings("ignore")
    rvt = import_rvt(rvt_path)
    from recurrent import rvt_base, rvt_small, rvt_tiny
    from recurrent.rvt_checkpoint import load_rvt_backbone

    model, cfg = build_detector(rvt, size, h, w)
    model.eval()
    part = tuple(cfg.backbone.stage.attention.partition_size)
    ours = {"t": rvt_tiny, "s": rvt_small, "b": rvt_base}[size](partition_size=part).eval()
    load_rvt_backbone(ours, {"mdl." + k: v for k, v in model.state_dict().items()}, strict=False)
    return model, ours, rvt.commit, tuple(cfg.backbone.in_res_hw)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=("t", "s", "b"), default="t")
    ap.add_argument("--T", type=int, default=5)
    ap.add_argument("--h", type=int, default=384)
    ap.add_argument("--w", type=int, default=640)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7, help="alternating timed passes of T windows each")
    ap.add_argument("--top", type=int, default=14, help="ops to list")
    ap.add_argument("--rvt", default=os.environ.get("RVT_REPO"), help="RVT's work tree or git dir ($RVT_REPO)")
    ap.add_argument("--rvt-python", default=None, help="python with RVT's needs (default: made by rvt_env.sh)")
    ap.add_argument("--in-rvt-env", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if not args.rvt:
        print(f"profile_vs_rvt: skipped, needs RVT's code: {NO_RVT}")
        return 0
    if not args.in_rvt_env and (args.rvt_python or importlib.util.find_spec("omegaconf") is None):
        try:
            python = rvt_python(args.rvt_python)
        except RuntimeError as e:
            print(f"profile_vs_rvt: skipped, RVT's environment could not be set up: {e}")
            return 0
        return subprocess.run([python, __file__, *sys.argv[1:], "--in-rvt-env"]).returncode
    import torch

    torch.set_num_threads(args.threads)
    rvt, ours, commit, (hp, wp) = build(args.rvt, args.size, args.h, args.w)
    x = torch.nn.functional.pad(make_input(args.T, 1, args.h, args.w).float(), (0, wp - args.w, 0, hp - args.h))

    def run_rvt():
        states, outs = None, []
        for t in range(args.T):
            feats, states = rvt.forward_backbone(x[t], states)
            outs.append([feats[k] for k in sorted(feats)])
        return outs

    def run_ours():
        ours.reset()
        return [ours(x[t]) for t in range(args.T)]

    with torch.no_grad():
        a, b = run_rvt(), run_ours()
        err = max((p - q).abs().max().item() for t in range(args.T) for p, q in zip(a[t], b[t], strict=True))
        times = {"RVT": [], "ours": []}
        for _ in range(args.rounds):
            for name, fn in (("RVT", run_rvt), ("ours", run_ours)):
                t0 = time.perf_counter()
                fn()
                times[name].append(1000 * (time.perf_counter() - t0) / args.T)
        ops = {}
        for _ in range(3):
            for name, fn in (("RVT", run_rvt), ("ours", run_ours)):
                with torch.profiler.profile() as prof:
                    fn()
                for e in prof.key_averages():
                    row = ops.setdefault(e.key, {"RVT": 0.0, "ours": 0.0})
                    row[name] += e.self_cpu_time_total / 1000 / 3 / args.T
    rvt_ms, ours_ms = statistics.median(times["RVT"]), statistics.median(times["ours"])
    print(
        f"RVT {commit[:7]} vs ours, rvt-{args.size} backbone, {args.h}x{args.w}, batch 1, state carried over "
        f"T={args.T}, {args.threads} threads, fp32; max |ours - RVT| over 4 stages: {err:.1e}"
    )
    print(
        f"per window (median of {args.rounds} alternating passes): RVT {rvt_ms:.1f} ms, ours {ours_ms:.1f} ms, "
        f"ours/RVT {ours_ms / rvt_ms:.2f}x"
    )
    total = {k: sum(r[k] for r in ops.values()) for k in ("RVT", "ours")}
    print(
        f"\nself CPU time per window under torch.profiler (total RVT {total['RVT']:.1f} ms, ours {total['ours']:.1f}):"
    )
    print(f"  {'op':34s} {'RVT ms':>7s} {'share':>6s} {'ours ms':>8s} {'share':>6s}")
    for key, r in sorted(ops.items(), key=lambda kv: -max(kv[1].values()))[: args.top]:
        print(
            f"  {key.replace('aten::', '')[:34]:34s} {r['RVT']:7.2f} {r['RVT'] / total['RVT']:6.1%} {r['ours']:8.2f} "
            f"{r['ours'] / total['ours']:6.1%}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
