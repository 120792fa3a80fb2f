"""The whole pipeline on its embedded default: synthetic eTraM-like traffic -> prepare -> recurrent model.

    python main.py                 # synthesize, prepare, run rvt-t over a validation sequence, render a preview
    python main.py --quick         # the same on tiny settings (seconds)
    python main.py -m rvt-s.yaml   # another model YAML

Training, validation with the Prophesee protocol, prediction and export join this pipeline as they land (see the
README's roadmap); today it proves the data path and the recurrent model end to end.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
DEFAULT = dict(width=640, height=360, duration=10.0, train=4, val=1, test=1)  # eTraM-like, quarter resolution
QUICK = dict(width=320, height=192, duration=2.0, train=1, val=1, test=1)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-m", "--model", default="rvt-t.yaml", help="model YAML (default rvt-t.yaml)")
    ap.add_argument("--data-dir", default=str(ROOT / "datasets"), help="where the synthetic data goes")
    ap.add_argument("--out", default=str(ROOT / "runs" / "demo"), help="where the demo writes its outputs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="tiny settings, for a smoke test")
    ap.add_argument("--workers", type=int, default=2, help="parallel recordings in prepare")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    s = QUICK if args.quick else DEFAULT
    tag = "etram_synth_quick" if args.quick else "etram_synth"
    raw, prepared = Path(args.data_dir) / f"{tag}_raw", Path(args.data_dir) / tag
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    from yolo_etram.data.prepare import PrepareConfig, prepare_dataset, summarize
    from yolo_etram.data.synthetic import SynthConfig, synthesize_dataset

    t0 = time.perf_counter()
    print(f"[1/3] synthesize {s['train']}+{s['val']}+{s['test']} recordings of {s['duration']:.0f} s at "
          f"{s['width']}x{s['height']} -> {raw}")
    cfg = SynthConfig(width=s["width"], height=s["height"], duration_s=s["duration"], seed=args.seed)
    syn = synthesize_dataset(raw, {k: s[k] for k in ("train", "val", "test")}, cfg)
    print(f"[2/3] prepare (RVT stacked histograms, 50 ms windows) -> {prepared}")
    results = prepare_dataset(raw, prepared, PrepareConfig(kind="etram", downsample=False), workers=args.workers)
    print(summarize(results))

    print(f"[3/3] run {args.model} over the validation sequence, state carried window to window")
    stats = run_model_on_sequence(args.model, prepared, out)
    print("\nSummary")
    print(f"  raw data       {raw}  ({syn['n_events']:,} new events, {syn['n_boxes']:,} boxes)")
    print(f"  prepared data  {prepared}")
    print(f"  model          {args.model}: {stats['windows']} windows, {stats['ms_per_window']:.0f} ms/window on "
          f"{stats['device']}, recurrent state {stats['state_mb']:.1f} MB")
    print(f"  preview        {stats['preview']}")
    print(f"  total          {time.perf_counter() - t0:.0f} s")
    return 0


def run_model_on_sequence(model_yaml: str, prepared: Path, out: Path) -> dict:
    import cv2
    import numpy as np
    import torch

    from yolo_etram.data.prepared import PreparedSequence, list_sequences
    from yolo_etram.data.render import draw_boxes, render_histogram
    from yolo_etram.model import RecurrentDetectionModel

    seq = PreparedSequence(list_sequences(prepared / "val")[0])
    model = RecurrentDetectionModel(model_yaml, ch=seq.channels, verbose=False).eval()
    mh, mw = model.input_multiple
    h, w = seq.hw
    ph, pw = -(-h // mh) * mh, -(-w // mw) * mw
    n = min(len(seq), 40)
    hist = seq.histograms(0, n)
    start = time.perf_counter()
    with torch.no_grad():
        for i in range(n):
            x = torch.zeros(1, seq.channels, ph, pw)
            x[0, :, :h, :w] = torch.from_numpy(hist[i]).float()
            model(x)
    ms = (time.perf_counter() - start) / n * 1e3
    state_mb = sum(t.numel() * t.element_size() for hc in model.backbone.states for t in hc) / 2**20
    window = next((int(r) for r in seq.frame_repr_idx if r < n), 0)
    img = render_histogram(hist[window])
    boxes = seq.window_labels(window)
    if boxes is not None:
        xyxy = np.stack([boxes["x"], boxes["y"], boxes["x"] + boxes["w"], boxes["y"] + boxes["h"]], 1)
        draw_boxes(img, xyxy, boxes["class_id"], {0: "pedestrian", 1: "vehicle", 2: "micromobility"})
    preview = out / "preview.png"
    cv2.imwrite(str(preview), img)
    return {"windows": n, "ms_per_window": ms, "device": "cpu", "state_mb": state_mb, "preview": preview}


if __name__ == "__main__":
    sys.exit(main())
