"""Is data loading ever the bottleneck? Clips per second that the training data loader delivers from prepared data
(stream sampler, B slots x T windows, the trainer's own loader with its workers), against the clips per second rvt-t
consumes in a training step at the same size, measured in the same run. Target: the loader is at least 3x faster.

    python benchmarks/bench_dataloader.py          # ~2 minutes on 2 cores: 640x360 data (eTraM's stored size)
    python benchmarks/bench_dataloader.py --batches 10 --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=4, help="stream slots B")
    ap.add_argument("--seq-len", type=int, default=5, help="windows per clip T")
    ap.add_argument("--batches", type=int, default=30, help="batches timed")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import torch

    from yolo_etram.data.synth import SynthConfig, make_synthetic_dataset
    from yolo_etram.train import EventTrainer

    tmp = Path(tempfile.mkdtemp(prefix="bench_dataloader_"))
    cfg = SynthConfig(width=640, height=360, duration_s=8.0, seed=4)
    data = make_synthetic_dataset(
        tmp / "prepared",
        {"train": args.batch, "val": 1},
        cfg,
        raw=tmp / "raw",
        seq_len=args.seq_len,
        partition=[6, 10],
        progress=False,
    )
    trainer = EventTrainer(
        overrides=dict(
            model="rvt-t.yaml",
            data=str(data),
            batch=args.batch,
            workers=args.workers,
            project=str(tmp),
            name="t",
            exist_ok=True,
            plots=False,
            verbose=False,
        )
    )
    trainer.data = trainer.get_dataset()
    trainer.model = trainer.get_model("rvt-t.yaml", verbose=False)
    trainer.set_model_attributes()
    loader = trainer.get_dataloader(trainer.data["train"], args.batch, mode="train")

    it = iter(loader)
    first = next(it)  # worker start-up is not steady-state throughput
    t = time.perf_counter()
    for _ in range(args.batches):
        batch = next(it)
    load_s = (time.perf_counter() - t) / args.batches
    clips_loaded = args.batch / load_s

    model = trainer.model.train()
    model.args = trainer.args
    torch.set_num_threads(os.cpu_count() or 1)
    steps = []
    for i in range(4):
        b = trainer.preprocess_batch(dict(batch))
        t = time.perf_counter()
        loss, _ = model.loss(b)
        loss.sum().backward()
        model.zero_grad(set_to_none=True)
        if i:  # the first step warms up
            steps.append(time.perf_counter() - t)
    step_s = sorted(steps)[len(steps) // 2]
    clips_consumed = args.batch / step_s
    result = {
        "input": list(first["img"].shape[-2:]),
        "batch": args.batch,
        "seq_len": args.seq_len,
        "workers": args.workers,
        "loader_clips_per_s": round(clips_loaded, 2),
        "rvt_t_train_clips_per_s": round(clips_consumed, 3),
        "ratio": round(clips_loaded / clips_consumed, 1),
    }
    print(
        f"data loading, {result['input'][0]}x{result['input'][1]} histograms, B={args.batch} x T={args.seq_len}, "
        f"{args.workers} workers: {clips_loaded:.1f} clips/s; rvt-t training consumes {clips_consumed:.2f} clips/s: "
        f"loader {result['ratio']:.0f}x faster than the model (target >= 3x)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
