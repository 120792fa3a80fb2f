"""Does the recurrent memory help? Train rvt-t, rvt-t with its state reset at every window (the memoryless ablation)
and a stock yolov8n (memoryless frame baseline) on the same synthetic stop-and-go traffic for the same budget, then
score overall, moving and stationary AP (Prophesee protocol) on the validation split.

Stopped objects emit no events: a model without memory cannot see them. The synthetic generator's motion ground truth
says, for every labeled box, whether the object is moving, stopped after moving (and for how long), or parked since
before the recording; the validator scores each subset on its own (the other boxes are ignored).

    python benchmarks/evidence_memory.py            # about an hour on a 2-core CPU; `make evidence`
    python benchmarks/evidence_memory.py --quick    # minutes: plumbing check only, numbers mean nothing
    python benchmarks/evidence_memory.py --models temporal,tbptt,temporal_more,tbptt_more --seed 1 \
        --out runs/evidence_seed1                   # temporal attention and longer TBPTT, another training seed

Writes ``runs/evidence/evidence.json``, ``evidence.png`` and prints a Markdown table (the README's).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FULL = dict(
    width=320,
    height=192,
    duration_s=12.0,
    splits={"train": 6, "val": 2},
    seq_len=10,
    epochs=6,
    batch=2,
    partition=[6, 10],
)  # the demo's recipe (main.py): 2 slots for 6 sequences (more optimizer steps, none idle), no warm-up; 6 epochs per
# run (5 before the DFL-free head made the steps faster) keep `make evidence` at about an hour
QUICK = dict(
    width=128, height=96, duration_s=3.0, splits={"train": 2, "val": 1}, seq_len=3, epochs=1, batch=2, partition=[3, 4]
)
# more and longer stops than the default traffic (the case the experiment is about), fewer objects parked since before
# the recording (they never emit events: no event model can see them)
TRAFFIC = dict(stop_prob=0.7, stop_duration_s=(2.0, 6.0), static_objects=0.2)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny data and one epoch (checks the plumbing)")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--out", default=str(ROOT / "runs" / "evidence"))
    ap.add_argument("--data-dir", default=str(ROOT / "datasets"))
    ap.add_argument(
        "--models",
        default="recurrent,reset,yolov8n",
        help="comma-separated runs: recurrent, reset, yolov8n, temporal (rvt-t-ta.yaml), tbptt (rvt-t with twice the "
        "data's seq_len: longer truncated backpropagation); <run>_more: as many more epochs from that run's weights",
    )
    ap.add_argument("--seed", type=int, default=0, help="training seed (the data stays that of --data-seed)")
    ap.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic recordings")
    ap.add_argument(
        "--summarize",
        nargs="+",
        metavar="OUT",
        help="train nothing: mean +- std over these --out folders (one training seed each) and every run's paired "
        "difference against rvt-t (recurrent) at the same number of epochs; the plot goes to --out",
    )
    return ap.parse_args(argv)


def build_data(s: dict, data_dir: Path, tag: str, seed: int, traffic: dict | None = None, **keys) -> Path:
    """Synthesize and prepare ``data_dir/<tag>`` (skipped where already done); returns its data YAML, with ``keys``
    (e.g. ``groups``) added. ``traffic``: extra :class:`SynthConfig` settings."""
    from yolo_etram.data.synth import SynthConfig, make_synthetic_dataset

    cfg = SynthConfig(width=s["width"], height=s["height"], duration_s=s["duration_s"], seed=seed, **(traffic or {}))
    return make_synthetic_dataset(
        data_dir / tag, s["splits"], cfg, seq_len=s["seq_len"], partition=s["partition"], **keys
    )


def variant_yaml(data: Path, out: Path, **changes) -> Path:
    d = {**yaml.safe_load(data.read_text()), **changes}
    path = out / f"data_{'_'.join(f'{k}-{v}' for k, v in changes.items()) or 'base'}.yaml"
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    return path


def step_ms(model, hw, reps: int = 10) -> float:
    """Median time of one window through the model (batch 1, state carried), in ms."""
    import statistics

    import torch

    net = model.model.eval()
    x = torch.zeros(1, 20, *hw)
    times = []
    with torch.inference_mode():
        for i in range(reps + 2):
            t = time.perf_counter()
            net(x)
            if i >= 2:
                times.append((time.perf_counter() - t) * 1e3)
    net.reset_states()
    return statistics.median(times)


def finished_training_s(run: Path, epochs: int) -> float | None:
    """Training time (results.csv's ``time`` of the last epoch) of a run that finished ``epochs`` epochs, else None."""
    import csv

    csv_file, weights = run / "results.csv", run / "weights" / "last.pt"
    if not (csv_file.is_file() and weights.is_file()):
        return None
    with open(csv_file) as f:
        rows = [{k.strip(): v for k, v in r.items()} for r in csv.DictReader(f)]
    if not rows or int(float(rows[-1]["epoch"])) != epochs:
        return None
    return float(rows[-1]["time"])


def run_one(key: str, data: Path, out: Path, s: dict, epochs: int, seed: int) -> dict:
    from yolo_etram import EventYOLO
    from yolo_etram.utils.sizes import round_up

    runs = {  # model, changes to the data YAML, stream slots
        "recurrent": ("rvt-t.yaml", {}, s["batch"]),
        "temporal": ("rvt-t-ta.yaml", {}, s["batch"]),  # rvt-t with temporal attention over the last 4 windows
        "reset": ("rvt-t.yaml", {"memory": False}, s["batch"]),
        # one window per sample: as many windows per optimizer step as the recurrent runs' B x T
        "yolov8n": ("yolov8n.yaml", {}, s["batch"] * s["seq_len"]),
        # rvt-t backpropagating through 2T windows (the same windows per epoch, half as many optimizer steps)
        "tbptt": ("rvt-t.yaml", {"seq_len": 2 * s["seq_len"]}, s["batch"]),
    }
    first = key.removesuffix("_more")
    model_yaml, changes, batch = runs[first]
    data_yaml = variant_yaml(data, out, **changes) if changes else data
    if key != first:  # trained on for as many epochs again from the first run's weights (is its memory still growing?)
        model_yaml = str(out / first / "weights" / "last.pt")

    run = out / key
    train_s = finished_training_s(run, epochs)
    if train_s is None:  # trained runs are kept: re-running the script only validates them again
        t0 = time.perf_counter()
        model = EventYOLO(model_yaml)
        model.train(
            data=str(data_yaml),
            epochs=epochs,
            batch=batch,
            lr0=1e-3,
            warmup_epochs=0,
            workers=2,
            amp=False,  # float32 on every CPU, as the documented runs (amp=True would be bf16 where the CPU has it)
            imgsz=max(s["width"], s["height"]),
            project=str(out),
            name=key,
            exist_ok=True,
            seed=seed,
            plots=False,
            val=False,
        )
        train_s = time.perf_counter() - t0
    best = EventYOLO(str(run / "weights" / "last.pt"))
    best.val(
        data=str(data_yaml),
        batch=s["batch"],
        save_json=True,
        plots=True,
        project=str(out),
        name=f"{key}_val",
        exist_ok=True,
    )
    metrics = json.loads((out / f"{key}_val" / "metrics.json").read_text())
    hw = round_up((s["height"], s["width"]), best.model.input_multiple)
    recall = recall_by_time_stopped(out / f"{key}_val")
    return {
        "recall_by_time_stopped": recall,
        "model": model_yaml,
        "data": str(data_yaml),
        "batch": batch,
        "epochs": epochs,
        "train_s": round(train_s, 1),
        "step_ms": round(step_ms(best, hw), 2),
        "input_hw": list(hw),
        "prophesee": metrics,
    }


STILL_EDGES_S = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, float("inf"))


def recall_by_time_stopped(
    val_dir: Path, min_score: float = 0.05, min_iou: float = 0.5, skip_us: int = 500_000
) -> dict:
    """Share of ground-truth boxes found (a prediction at the same time with IoU >= ``min_iou``, any class, score >=
    ``min_score``): for moving objects, for stopped ones by time since they stopped, and for parked ones. Read from the
    validator's saved ``<seq>_gt.npy``, ``<seq>_pred.npy`` and ``<seq>_gt_motion.npy``; shows how long a model keeps
    seeing an object after its events stop, whatever its AP."""
    import numpy as np

    from yolo_etram.data.motion import MOVING, PARKED, STOPPED
    from yolo_etram.metrics.prophesee import _iou_xywh

    found_all, codes_all, still_all = [], [], []
    for gt_file in sorted(val_dir.glob("*_gt.npy")):
        seq = gt_file.name[: -len("_gt.npy")]
        gt, pred = np.load(gt_file), np.load(val_dir / f"{seq}_pred.npy")
        motion = np.load(val_dir / f"{seq}_gt_motion.npy")
        pred = pred[pred["class_confidence"] >= min_score]
        found = np.zeros(len(gt), bool)
        for t in np.unique(gt["t"]):
            g, q = np.nonzero(gt["t"] == t)[0], pred[pred["t"] == t]
            if len(q):
                found[g] = _iou_xywh(gt[g], q).max(1) >= min_iou
        keep = gt["t"] > skip_us
        found_all.append(found[keep])
        codes_all.append(motion[keep, 0])
        still_all.append(motion[keep, 1])
    found, codes, still = (np.concatenate(a) for a in (found_all, codes_all, still_all))
    out = {"moving": (found[codes == MOVING].mean() if (codes == MOVING).any() else None, int((codes == MOVING).sum()))}
    for lo, hi in zip(STILL_EDGES_S[:-1], STILL_EDGES_S[1:]):
        sel = (codes == STOPPED) & (still >= lo) & (still < hi)
        out[f"stopped {lo:g}-{hi:g}s" if hi != float("inf") else f"stopped >{lo:g}s"] = (
            float(found[sel].mean()) if sel.any() else None,
            int(sel.sum()),
        )
    out["parked"] = (
        float(found[codes == PARKED].mean()) if (codes == PARKED).any() else None,
        int((codes == PARKED).sum()),
    )
    return {k: {"recall": None if v is None else round(float(v), 4), "n": n} for k, (v, n) in out.items()}


LABELS = {
    "recurrent": "rvt-t (recurrent)",
    "reset": "rvt-t, state reset every window",
    "yolov8n": "yolov8n (frames)",
    "temporal": "rvt-t with temporal attention over the last 4 windows (rvt-t-ta.yaml)",
    "tbptt": "rvt-t, backpropagation through 2T windows",
}


def label(key: str, epochs: int | str = "N") -> str:
    first = key.removesuffix("_more")
    return LABELS[first] if first == key else f"{LABELS[first]}, {epochs} more epochs from its weights"


def table(results: dict) -> str:
    rows = [
        "| model | AP | AP50 | moving AP | stationary AP | parked AP | ms/window | train time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, r in results.items():
        p, sub = r["prophesee"], r["prophesee"].get("subsets", {})
        ap = lambda name: f"{sub[name]['AP']:.3f}" if name in sub else "n/a"  # noqa: E731
        rows.append(
            f"| {label(key, r['epochs'])} | {p['AP']:.3f} | {p['AP_50']:.3f} | {ap('moving')} | {ap('stationary')} | "
            f"{ap('parked')} | {r['step_ms']:.1f} | {r['train_s'] / 60:.1f} min |"
        )
    recall = [r.get("recall_by_time_stopped") for r in results.values()]
    if all(recall):
        bins = list(recall[0])
        rows += [
            "",
            "Recall (IoU >= 0.5, score >= 0.05) by what the object was doing:",
            "",
            "| model | " + " | ".join(f"{b} (n={recall[0][b]['n']})" for b in bins) + " |",
            "|---" * (len(bins) + 1) + "|",
        ]
        for key, rec in zip(results, recall):
            rows.append(
                f"| {label(key, results[key]['epochs'])} | "
                + " | ".join("-" if rec[b]["recall"] is None else f"{rec[b]['recall']:.3f}" for b in bins)
                + " |"
            )
    return "\n".join(rows)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.6))
    groups = ["overall", "moving", "stationary"]
    width = 0.8 / max(len(results), 1)
    for i, (key, r) in enumerate(results.items()):
        sub = r["prophesee"].get("subsets", {})
        vals = [r["prophesee"]["AP"], *(max(sub.get(g, {}).get("AP", 0), 0) for g in groups[1:])]
        bars = a.bar(np.arange(len(groups)) + i * width, vals, width, label=label(key, r["epochs"]))
        a.bar_label(bars, fmt="%.3f", fontsize=6, rotation=90, padding=2)  # stationary APs are too small to read
        rec = r.get("recall_by_time_stopped") or {}
        bins = [k for k in rec if rec[k]["recall"] is not None]
        if bins:
            b.plot(range(len(bins)), [rec[k]["recall"] for k in bins], "o-")
            b.set_xticks(range(len(bins)), [k.removeprefix("stopped ") for k in bins], rotation=30, fontsize=8)
    a.set_xticks(np.arange(len(groups)) + width * (len(results) - 1) / 2, groups)
    a.set_ylabel("Prophesee AP (val)")
    a.set_title("AP by object motion")
    a.margins(y=0.15)  # room for the value labels
    b.set_xlabel("what the object was doing (time since it stopped)")
    b.set_ylabel("recall (IoU >= 0.5, score >= 0.05)")
    b.set_title("How long a stopped object stays seen")
    # one legend for both panels, below them: inside either it would cover bars or curves
    fig.legend(*a.get_legend_handles_labels(), loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


SUMMARY_KEYS = (("AP", None), ("moving", "AP"), ("stationary", "AP"), ("parked", "AP"))
PAIRED_KEYS = (("AP", None), ("stationary", "AP"), ("stationary", "AP_75"))


def load_seeds(outs: list[Path]) -> tuple[list[dict], list[str]]:
    """The ``results`` of each ``outs`` folder's ``evidence.json`` (one training seed each), and every run any of them
    holds, in the order first seen."""
    seeds = [json.loads((Path(o) / "evidence.json").read_text())["results"] for o in outs]
    return seeds, list(dict.fromkeys(k for r in seeds for k in r))


def seed_values(seeds: list[dict], key: str, subset: str, metric: str | None = "AP") -> list[float | None]:
    """One value per seed (None where that seed has no such run): ``prophesee[subset]``, or a motion subset's
    ``metric``."""
    out = []
    for r in seeds:
        p = r.get(key, {}).get("prophesee")
        out.append(None if p is None else p[subset] if metric is None else p["subsets"][subset][metric])
    return out


def short_name(key: str, seeds: list[dict]) -> str:
    """``temporal`` or ``temporal +6``: a run's name in the seed tables."""
    first = key.removesuffix("_more")
    return first if first == key else f"{first} +{next(r[key]['epochs'] for r in seeds if key in r)}"


def summarize_seeds(outs: list[Path]) -> str:
    """Two Markdown tables over the ``outs`` folders' seeds: each run's AP and stationary AP (mean +- std), moving and
    parked AP and stationary over moving AP (means; the target is 1/2); then each run's paired differences (mean [95%
    t interval]) in AP, stationary AP and its AP_75 against the recurrent rvt-t on the same seeds at the
    same number of epochs (``recurrent`` for first runs, ``recurrent_more`` for continued ones)."""
    from yolo_etram.experiments.stats import paired_difference, summarize

    seeds, keys = load_seeds(outs)

    def fmt(values: list[float | None], spread: bool = True) -> str:
        s = summarize(values)
        return f"{s.mean:.3f}" if s.std is None or not spread else f"{s.mean:.3f} +- {s.std:.3f}"

    head = ["seeds", "AP", "moving AP", "stationary AP", "parked AP", "stationary / moving"]
    rows = ["| run | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    pairs = ["| minus rvt-t at equal epochs | " + " | ".join(f"{a} {b or ''}".strip() for a, b in PAIRED_KEYS) + " |"]
    pairs.append("|---" * (len(PAIRED_KEYS) + 1) + "|")
    for key in keys:
        moving, stationary = seed_values(seeds, key, "moving"), seed_values(seeds, key, "stationary")
        cells = [str(sum(v is not None for v in moving))]
        cells += [fmt(seed_values(seeds, key, *k), i in (0, 2)) for i, k in enumerate(SUMMARY_KEYS)]
        cells.append(fmt([None if m is None else s / m for s, m in zip(stationary, moving)], False))
        rows.append(f"| `{short_name(key, seeds)}` | " + " | ".join(cells) + " |")
        base = "recurrent_more" if key.endswith("_more") else "recurrent"
        if key != base and base in keys:
            diffs = []
            for k in PAIRED_KEYS:
                d = paired_difference(seed_values(seeds, base, *k), seed_values(seeds, key, *k))
                diffs.append(f"{d.mean:+.3f}" + ("" if d.ci is None else f" [{d.ci[0]:+.3f}, {d.ci[1]:+.3f}]"))
            pairs.append(f"| `{short_name(key, seeds)}` | " + " | ".join(diffs) + " |")
    return "\n".join([*rows, "", *pairs])


def plot_seeds(outs: list[Path], path: Path) -> None:
    """Moving and stationary AP of every run: the mean over the ``outs`` folders' seeds as bars, each seed a dot, and
    the target (half the moving AP) as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    seeds, keys = load_seeds(outs)
    fig, ax = plt.subplots(figsize=(9, 4))
    means = {}
    for j, (subset, color) in enumerate((("moving", "tab:blue"), ("stationary", "tab:red"))):
        vals = [[v for v in seed_values(seeds, k, subset) if v is not None] for k in keys]
        means[subset] = np.array([np.mean(v) for v in vals])
        x = np.arange(len(keys)) + (j - 0.5) * 0.38
        ax.bar(x, means[subset], 0.36, color=color, alpha=0.5, label=f"{subset} AP (mean)")
        for xi, v in zip(x, vals):
            ax.plot([xi] * len(v), v, "o", color=color, ms=4)
    target = np.arange(len(keys)) + 0.19  # over the stationary bars
    ax.hlines(
        means["moving"] / 2,
        target - 0.18,
        target + 0.18,
        colors="k",
        linestyles="--",
        label="target: half the moving AP",
    )
    ax.set_xticks(np.arange(len(keys)), [short_name(k, seeds) for k in keys])
    ax.set_ylabel("Prophesee AP (val)")
    ax.set_title(f"Moving and stationary AP over {len(seeds)} training seeds (dots: one seed)")
    ax.legend(frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.summarize:
        print(summarize_seeds([Path(o) for o in args.summarize]))
        Path(args.out).mkdir(parents=True, exist_ok=True)
        plot_seeds([Path(o) for o in args.summarize], Path(args.out) / "evidence_seeds.png")
        print(f"\n{Path(args.out) / 'evidence_seeds.png'}")
        return 0
    s = QUICK if args.quick else FULL
    keys = args.models.split(",")
    unknown = [k for k in keys if k.removesuffix("_more") not in LABELS]
    if unknown:
        raise SystemExit(f"evidence_memory: unknown run(s) {unknown}; known: {', '.join(LABELS)}, each also with _more")
    out = Path(args.out + ("_quick" if args.quick else ""))
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    tag = ("evidence_quick" if args.quick else "evidence") + (f"_data{args.data_seed}" if args.data_seed else "")
    data = build_data(s, Path(args.data_dir), tag, args.data_seed, TRAFFIC)
    epochs = args.epochs or s["epochs"]
    previous = out / "evidence.json"
    results = json.loads(previous.read_text())["results"] if previous.is_file() else {}  # runs of earlier calls stay
    settings = {**s, "epochs": epochs, "traffic": TRAFFIC, "seed": args.seed, "data_seed": args.data_seed}
    for key in keys:
        print(f"[evidence] {label(key, epochs)}: {epochs} epochs")
        results[key] = run_one(key, data, out, s, epochs, args.seed)
        summary = {"settings": settings, "total_s": round(time.perf_counter() - t0, 1), "results": results}
        (out / "evidence.json").write_text(json.dumps(summary, indent=1))  # after every run: an interruption keeps it
    plot(results, out / "evidence.png")
    print(table(results))
    print(f"\n{out / 'evidence.json'}, {out / 'evidence.png'}; total {summary['total_s'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
