"""Where the backbone's time goes: RVT's own backbone and ours in one process, the same weights and input, timed
alternately and profiled op by op (torch.profiler self CPU time per window).

The reference is RVT's code (github.com/uzh-rpg/RVT at the commit of the local git copy), built by
``../shared/tools/rvt_bench`` exactly as ``rvt_model_bench.py`` builds it (gen4 config, perturbed init). Our backbone
is ``recurrent.RecurrentMaxViT`` with RVT's weights loaded (``recurrent.rvt_checkpoint.load_rvt_backbone``); the
outputs of all 4 stages are compared first. ``recurrent`` needs only torch, timm and einops, so this runs in the
harness's environment (which has RVT's omegaconf), one process for both:

    PY=$(bash ../shared/tools/rvt_bench/setup.sh | tail -n 1)
    $PY benchmarks/profile_vs_rvt.py                 # rvt-t, 384x640, T=5, 2 threads, ~1 min
    $PY benchmarks/profile_vs_rvt.py --size b --rounds 9

Without RVT's copy or the harness it prints why and exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_vs_rvt import find_harness, find_mirror, make_input  # noqa: E402


def build(size: str, h: int, w: int):
    import rvt_model_bench as harness
    from rvt_mirror import extract_rvt

    src = extract_rvt(harness.RVT_FILES)
    import torch

    warnings.filterwarnings("ignore")
    with contextlib.redirect_stdout(io.StringIO()):
        from models.detection.yolox_extension.models.detector import YoloXDetector
    from recurrent import rvt_base, rvt_small, rvt_tiny
    from recurrent.rvt_checkpoint import load_rvt_backbone

    cfg, _ = harness.build_config(src, size, h, w)
    torch.manual_seed(0)
    rvt = YoloXDetector(cfg).eval()
    harness.perturb_init(rvt, 0)
    part = tuple(cfg.backbone.stage.attention.partition_size)
    ours = {"t": rvt_tiny, "s": rvt_small, "b": rvt_base}[size](partition_size=part).eval()
    load_rvt_backbone(ours, {"mdl." + k: v for k, v in rvt.state_dict().items()}, strict=False)
    return rvt, ours


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=("t", "s", "b"), default="t")
    ap.add_argument("--T", type=int, default=5)
    ap.add_argument("--h", type=int, default=384)
    ap.add_argument("--w", type=int, default=640)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7, help="alternating timed passes of T windows each")
    ap.add_argument("--top", type=int, default=14, help="ops to list")
    args = ap.parse_args()
    harness_dir, mirror = find_harness(), find_mirror()
    if harness_dir is None or mirror is None:
        print("profile_vs_rvt: skipped, RVT's git copy or the rvt_bench harness is missing (see bench_vs_rvt.py)")
        return 0
    try:
        import omegaconf  # noqa: F401
    except ImportError:
        print("profile_vs_rvt: skipped, run it with the harness's python (see the usage above): it needs omegaconf")
        return 0
    import os

    os.environ.setdefault("RVT_MIRROR", str(mirror))
    sys.path.insert(0, str(harness_dir))
    import torch

    torch.set_num_threads(args.threads)
    rvt, ours = build(args.size, args.h, args.w)
    x = make_input(args.T, 1, args.h, args.w).float()

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
        f"rvt-{args.size} backbone, {args.h}x{args.w}, batch 1, state carried over T={args.T}, {args.threads} threads, "
        f"fp32; max |ours - RVT| over 4 stages: {err:.1e}"
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
