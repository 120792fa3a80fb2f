"""The whole pipeline on its embedded default: synthetic eTraM-like traffic -> prepare -> train a recurrent detector
-> validate with the Prophesee protocol -> predict on a validation recording (``prediction.jpg`` in the run).

    python main.py                       # the demo (make demo): about 10 minutes on a 2-core CPU
    python main.py --quick               # the same on tiny settings (a minute)
    python main.py -m rvt-s.yaml --max_epoch 20 --batch_size 8
    python main.py -d etram.yaml --test  # your own prepared data; --test also validates on the test split

Flags follow eTraM's own main.py (-m/--model, -d/--data, --max_epoch, --batch_size, --test).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
# 320x192 sensor: the model input needs no padding with partition (6, 10) (stage maps 48x80 ... 6x10)
DEMO = dict(
    width=320,
    height=192,
    duration_s=12.0,
    splits={"train": 6, "val": 2, "test": 1},
    seq_len=5,
    epochs=3,
    batch=2,
    lr0=1e-3,
    warmup_epochs=0,
    amp=False,
)
# The demo recipe, measured on one CPU (Prophesee AP of the 3-epoch run): 6 sequences in 2 slots leave no slot idle
# (padded slots still cost compute) and give 144 optimizer steps per epoch where 3 slots gave 96, in the same time
# (AP 0.279 vs 0.248); no warm-up, since Ultralytics' default would spend the first of only 3 epochs warming up (AP
# 0.248 vs 0.183). Runs on your own data (-d) keep the trainer's one-epoch warm-up. Float32 (amp=False) on every CPU:
# bf16 autocast (what amp=True runs on a CPU with bf16) bought no time at 320x192 and no AP (-0.004 [-0.124, +0.115]
# over 3 seeds, cfg/ablations/bf16_training.yaml), and float32 keeps the demo's numbers the same across CPUs.
QUICK = dict(
    width=128,
    height=96,
    duration_s=2.0,
    splits={"train": 2, "val": 1, "test": 1},
    seq_len=3,
    epochs=1,
    batch=2,
    lr0=1e-3,
    warmup_epochs=0,
    amp=False,
)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-m", "--model", default="rvt-t.yaml", help="model YAML or checkpoint (default rvt-t.yaml)")
    ap.add_argument("-d", "--data", default=None, help="data YAML (default: build the synthetic demo set)")
    ap.add_argument("--max_epoch", type=int, default=None, help="training epochs")
    ap.add_argument("--batch_size", type=int, default=None, help="stream slots per batch")
    ap.add_argument("--test", action="store_true", help="also validate on the test split")
    ap.add_argument("--quick", action="store_true", help="tiny settings, for a smoke test")
    ap.add_argument("--data-dir", default=str(ROOT / "datasets"), help="where the synthetic data goes")
    ap.add_argument("--project", default=str(ROOT / "runs"), help="where runs are written")
    ap.add_argument("--seed", type=int, default=0)
    return ap.parse_args(argv)


def build_demo_data(s: dict, data_dir: Path, quick: bool, seed: int) -> Path:
    """Synthesize and prepare the demo data set (skipped where already done); returns its data YAML."""
    from yolo_etram.data.synth import SynthConfig, make_synthetic_dataset

    tag = "etram_synth_quick" if quick else "etram_synth_demo"
    n = s["splits"]
    print(
        f"[data] synthesize {n['train']}+{n['val']}+{n['test']} recordings of {s['duration_s']:.0f} s at "
        f"{s['width']}x{s['height']}, prepare RVT stacked histograms (50 ms windows) -> {data_dir / tag}"
    )
    cfg = SynthConfig(width=s["width"], height=s["height"], duration_s=s["duration_s"], seed=seed)
    return make_synthetic_dataset(data_dir / tag, n, cfg, seq_len=s["seq_len"], partition=[3, 4] if quick else [6, 10])


def save_prediction_frame(weights: Path, recording: Path, out: Path, conf: float = 0.3) -> Path:
    """Predict on ``recording`` and save the window with the most boxes of its second half as ``out`` (the event
    frame enlarged to about 960 pixels, boxes drawn at that size)."""
    import cv2
    from ultralytics.engine.results import Results

    from yolo_etram import EventYOLO

    best, best_n = None, -1
    results = list(EventYOLO(str(weights)).predict(str(recording), stream=True, conf=conf, verbose=False))
    for r in results[len(results) // 2 :]:  # after the memory has seen the scene for a while
        if len(r.boxes) > best_n:
            best, best_n = r, len(r.boxes)
    scale = max(1, 960 // max(best.orig_shape))  # small sensors: enlarge the frame so boxes and labels stay legible
    frame = cv2.resize(best.orig_img, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    boxes = best.boxes.data.clone()
    boxes[:, :4] *= scale
    cv2.imwrite(str(out), Results(frame, path=best.path, names=best.names, boxes=boxes).plot(line_width=2))
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    s = QUICK if args.quick else DEMO
    t0 = time.perf_counter()
    data = Path(args.data) if args.data else build_demo_data(s, Path(args.data_dir), args.quick, args.seed)

    from yolo_etram import EventYOLO

    epochs = args.max_epoch or s["epochs"]
    batch = args.batch_size or s["batch"]
    name = "demo_quick" if args.quick else "demo"
    print(f"[train] {args.model} on {data}: {epochs} epochs, {batch} stream slots")
    model = EventYOLO(args.model)
    recipe = {} if args.data else {"warmup_epochs": s["warmup_epochs"], "amp": s["amp"]}
    model.train(
        data=str(data),
        epochs=epochs,
        batch=batch,
        lr0=s["lr0"],
        workers=2,
        imgsz=max(s["width"], s["height"]),
        project=args.project,
        name=name,
        exist_ok=True,
        seed=args.seed,
        plots=True,
        save_json=True,
        val=args.data is not None,
        **recipe,
    )  # the synthetic demo validates once, at the end: CPU time goes to training
    run = Path(model.trainer.save_dir)
    results = {"val": model.trainer.metrics}  # the final validation of best.pt (Prophesee .npy files in the run)
    if args.test:
        print("[test] best.pt on the test split")
        m = EventYOLO(str(run / "weights" / "best.pt")).val(
            data=str(data),
            split="test",
            batch=batch,
            save_json=True,
            project=args.project,
            name=f"{name}_test",
            exist_ok=True,
        )
        results["test"] = m.results_dict

    picture = None
    if not args.data:  # the synthetic set has its raw recordings: predict on one, as users run it on theirs
        recording = sorted((data.parent.with_name(data.parent.name + "_raw") / "val").glob("*_td.h5"))[0]
        print(f"[predict] best.pt on {recording.name}, window by window with the state carried")
        picture = save_prediction_frame(run / "weights" / "best.pt", recording, run / "prediction.jpg")

    print("\nSummary")
    print(f"  data      {data}")
    print(f"  run       {run}  (weights/best.pt, results.csv, plots)")
    for split, r in results.items():
        print(
            f"  {split:5s}     Prophesee AP {r['prophesee/AP']:.3f}  AP50 {r['prophesee/AP_50']:.3f}  "
            f"AP75 {r['prophesee/AP_75']:.3f}  class-agnostic AP {r['prophesee/AP_all']:.3f}  "
            f"eTraM-table AP50 (All) {r['etram/AP50_all']:.3f}  "
            f"(Ultralytics mAP50-95 {r['metrics/mAP50-95(B)']:.3f})"
        )
    if picture:
        print(f"  predict   {picture}  (the event frame of one 50 ms window, with the predicted boxes)")
    print(f"  time      {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
