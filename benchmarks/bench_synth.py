"""Time the synthetic recording generator: seconds per recording and events generated per second of wall time.

Default: one 10 s recording at 640x360 (the demo size), written to a temporary folder and deleted.

    python benchmarks/bench_synth.py
    python benchmarks/bench_synth.py --width 1280 --height 720 --duration 10 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from yolo_etram.data.synth import SynthConfig, synthesize_recording  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=360)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--render-dt-us", type=int, default=SynthConfig.render_dt_us)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = ap.parse_args(argv)
    print(f"synthetic recording, {args.width}x{args.height}, {args.duration:g} s, render step {args.render_dt_us} us")
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            cfg = SynthConfig(
                width=args.width,
                height=args.height,
                duration_s=args.duration,
                seed=seed,
                render_dt_us=args.render_dt_us,
            )
            start = time.perf_counter()
            summary = synthesize_recording(Path(tmp) / f"bench_{seed}", cfg)
            seconds = time.perf_counter() - start
            n = summary["n_events"]
            print(
                f"seed {seed}: {seconds:.2f} s wall ({seconds / args.duration:.2f} s per recorded s), {n:,} events "
                f"({n / args.duration / 1e6:.2f} Mev per recorded s, {n / seconds / 1e6:.2f} Mev/s generated), "
                f"{summary['n_boxes']:,} boxes"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
