"""Small-object ablation: rvt-t with RVT's 3-scale neck and with our 4-scale neck (stride-4 features), each with and
without the size-aware loss, trained on the same synthetic traffic for the same budget, then compared with
``etram-yolo compare`` (overall, per class group, per box size).

    python benchmarks/ablation_small_objects.py             # 4 runs; ~30 minutes on a 2-core CPU
    python benchmarks/ablation_small_objects.py --quick     # plumbing check only, numbers mean nothing

Groups: ``small`` = pedestrian + micromobility, ``other`` = vehicle. Writes ``runs/ablation/ablation.md`` (the table)
and ``ablation.json``.
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
from evidence_memory import build_data  # noqa: E402  (same synthetic set-up, stock traffic, class groups)

FULL = dict(
    width=320,
    height=192,
    duration_s=12.0,
    splits={"train": 6, "val": 2},
    seq_len=5,
    epochs=3,
    batch=3,
    partition=[6, 10],
)
QUICK = dict(
    width=128, height=96, duration_s=2.0, splits={"train": 2, "val": 1}, seq_len=3, epochs=1, batch=2, partition=[3, 4]
)
VARIANTS = {  # name: (model YAML, size-aware loss)
    "3scale": ("rvt-t-3scale.yaml", None),
    "4scale": ("rvt-t.yaml", None),
    "3scale+size": ("rvt-t-3scale.yaml", {"a": 1.0, "tau": 256.0}),
    "4scale+size": ("rvt-t.yaml", {"a": 1.0, "tau": 256.0}),
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--out", default=str(ROOT / "runs" / "ablation"))
    ap.add_argument("--data-dir", default=str(ROOT / "datasets"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    s = QUICK if args.quick else FULL
    out = Path(args.out + ("_quick" if args.quick else ""))
    out.mkdir(parents=True, exist_ok=True)
    epochs = args.epochs or s["epochs"]
    t0 = time.perf_counter()
    data = build_data(
        s,
        Path(args.data_dir),
        "ablation_quick" if args.quick else "ablation",
        args.seed,
        groups={"small": [0, 2], "other": [1]},
    )

    from yolo_etram import EventYOLO
    from yolo_etram.metrics.records import compare_table, load_record

    runs = []
    for name in args.variants.split(","):
        model_yaml, size_aware = VARIANTS[name]
        d = yaml.safe_load(data.read_text())
        if size_aware:
            d["size_aware"] = size_aware
        variant = out / f"data_{name}.yaml"
        variant.write_text(yaml.safe_dump(d, sort_keys=False))
        print(f"[ablation] {name}: {model_yaml}, size-aware loss {size_aware or 'off'}, {epochs} epochs")
        EventYOLO(model_yaml).train(
            data=str(variant),
            epochs=epochs,
            batch=s["batch"],
            lr0=1e-3,
            workers=2,
            imgsz=max(s["width"], s["height"]),
            project=str(out),
            name=name,
            exist_ok=True,
            seed=args.seed,
            plots=True,
            val=False,
        )
        runs.append(out / name)
    records = [load_record(r) for r in runs]
    table = compare_table(records)
    settings = {**s, "epochs": epochs, "seed": args.seed, "total_min": round((time.perf_counter() - t0) / 60, 1)}
    (out / "ablation.md").write_text(f"Settings: {json.dumps(settings)}\n\n{table}\n")
    (out / "ablation.json").write_text(json.dumps({"settings": settings, "runs": [str(r) for r in runs]}, indent=1))
    print(table)
    print(f"\n{out / 'ablation.md'}; total {settings['total_min']} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
