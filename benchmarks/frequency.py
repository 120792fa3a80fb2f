"""AP against window length for one model: frequency generalisation.

A recurrent model trained on 50 ms windows is validated on the same validation recordings prepared at other window
lengths, each window ending one length after the last (window = step, so a 20 ms model step is a 50 Hz frame rate).
The S5 paper (Zubic et al., CVPR 2024) reports that state-space models keep their AP at other frame rates where RVT's
LSTM loses it; this measures it for ours. The step must divide the 100 ms label period (10, 20, 25, 50, 100 ms): only
then does every label frame end a window.

Each length is prepared once into ``OUT/prepared`` (with the model's representation, bins and downsampling), validated
with ``EventYOLO(model).val``, and the results go to ``OUT/frequency.csv``, ``frequency.md`` and ``frequency.png``.

    python benchmarks/frequency.py runs/demo/train/weights/best.pt --data etram-synth.yaml --windows 20 25 50 100
    python benchmarks/frequency.py best.pt --data etram.yaml --raw RAW_DIR --kind etram --out runs/frequency
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import yaml

METRICS = ("AP", "AP_50", "AP_moving", "AP_stationary")


def raw_recordings(data: dict, raw: str | None) -> Path:
    """The raw recordings of the data (``--raw``, else a synthetic data set's ``<root>_raw``)."""
    if raw:
        return Path(raw)
    root = Path(data["path"])
    guess = root.with_name(root.name + "_raw")
    if not guess.is_dir():
        raise SystemExit(f"{guess}: no raw recordings beside {root}; pass --raw RAW_DIR (holding val/)")
    return guess


def run(model: str, data_yaml: str, windows: list[int], out: Path, raw: str | None, kind: str) -> list[dict]:
    from yolo_etram import EventYOLO
    from yolo_etram.data.data_yaml import load_event_data, read_data_yaml
    from yolo_etram.data.event_settings import EventSettings
    from yolo_etram.data.prepare import PrepareConfig, prepare_dataset

    data = load_event_data(data_yaml, split="val")
    trained = EventSettings.from_dict(EventYOLO(model).model.yaml.get("event") or {}, model)
    base, _ = read_data_yaml(data_yaml)
    rows = []
    for w in windows:
        cfg = PrepareConfig(
            kind=kind,
            window_ms=w,
            step_ms=w,
            nbins=trained.nbins,
            cutoff=trained.cutoff,
            downsample=trained.downsample,
            representation=trained.representation,
        )
        settings = cfg.settings()
        start = time.perf_counter()
        prepare_dataset(raw_recordings(data, raw), out / "prepared", cfg, workers=2, splits=["val"], progress=False)
        spec = {k: v for k, v in base.items() if k not in ("synth", "channels", "train", "test", "downsample")}
        spec.update(path=str(out / "prepared"), val="val", representation=settings.folder_name)
        yaml_w = out / f"data_dt{w}.yaml"
        yaml_w.write_text(yaml.safe_dump(spec, sort_keys=False))
        metrics = EventYOLO(model).val(
            data=str(yaml_w), batch=1, workers=0, plots=False, project=str(out), name=f"dt{w}", exist_ok=True
        )
        p = metrics.prophesee
        subsets = p.get("subsets") or {}
        values = {
            "AP": p["AP"],
            "AP_50": p["AP_50"],
            "AP_moving": (subsets.get("moving") or {}).get("AP", float("nan")),
            "AP_stationary": (subsets.get("stationary") or {}).get("AP", float("nan")),
        }
        rows.append({"window_ms": w, **values, "seconds": time.perf_counter() - start})
        print(f"{w:4d} ms: AP {p['AP']:.4f}  AP50 {p['AP_50']:.4f}", flush=True)
    return rows


def write(rows: list[dict], out: Path, model: str, trained_ms: int) -> None:
    with open(out / "frequency.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        f"AP against window length (window = step) for `{model}`, trained on {trained_ms} ms windows.",
        "",
        "| window (ms) | frame rate (Hz) | " + " | ".join(METRICS) + " |",
        "|---|---|" + "---|" * len(METRICS),
    ]
    for r in rows:
        mark = " (trained)" if r["window_ms"] == trained_ms else ""
        cells = " | ".join(f"{r[k]:.4f}" for k in METRICS)
        lines.append(f"| {r['window_ms']}{mark} | {1000 / r['window_ms']:.0f} | {cells} |")
    (out / "frequency.md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    x = [r["window_ms"] for r in rows]
    for k in METRICS[:2]:
        ax.plot(x, [r[k] for r in rows], marker="o", label=k)
    ax.axvline(trained_ms, color="grey", linestyle="--", label=f"trained ({trained_ms} ms)")
    ax.set_xscale("log")
    ax.set_xticks(x, [str(v) for v in x])
    ax.set_xlabel("window length = step (ms)")
    ax.set_ylabel("Prophesee AP")
    ax.set_title("Frequency generalisation")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "frequency.png", dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="a trained .pt")
    ap.add_argument("--data", required=True, help="its data YAML (names, eval filter, partition; the raw recordings)")
    ap.add_argument("--windows", type=int, nargs="+", default=[20, 25, 50, 100], help="window lengths in ms")
    ap.add_argument("--raw", help="raw recordings (a folder holding val/); default: a synthetic set's <root>_raw")
    ap.add_argument("--kind", default="etram", help="dataset rules of prepare (default etram)")
    ap.add_argument("--out", type=Path, default=Path("runs/frequency"))
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    from yolo_etram import EventYOLO
    from yolo_etram.data.event_settings import EventSettings

    trained = EventSettings.from_dict(EventYOLO(args.model).model.yaml.get("event") or {}, args.model)
    rows = run(args.model, args.data, sorted(set(args.windows)), args.out, args.raw, args.kind)
    write(rows, args.out, args.model, trained.window_ms)
    (args.out / "frequency.json").write_text(json.dumps(rows, indent=1))
    print((args.out / "frequency.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
