"""What reduced precision costs in accuracy: one trained model validated in float32, bf16 (PyTorch under bf16
autocast, ``quantize=16``), OpenVINO fp32, OpenVINO bf16 (``export half=True``) and OpenVINO INT8 (``quantize=8``) on
the same windows, on its data's validation split and on a larger synthetic one; and how far each one's recurrent state
drifts from float32's over a long stream (max |h - h_fp32| and |c - c_fp32| over every state tensor, after every
window, all runtimes stepped in lockstep on the same windows).

bf16 needs a CPU with bf16 instructions (AVX-512 BF16 or AMX); elsewhere its rows say so and are skipped.

    python benchmarks/precision.py runs/demo/weights/best.pt --data datasets/etram_synth_demo/data.yaml
    python benchmarks/precision.py best.pt --data data.yaml --large 6 --large-s 30 --drift-s 120 --out runs/precision

Writes ``precision.csv``, ``drift.csv``, ``precision.md`` and ``drift.png`` to ``--out`` (default ``runs/precision``).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("fp32", "bf16", "openvino", "openvino_bf16", "openvino_int8")
HALF = ("bf16", "openvino_bf16")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="a trained .pt")
    ap.add_argument("--data", required=True, help="its data YAML (validation split; INT8 calibrates on it)")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of " + ", ".join(VARIANTS))
    ap.add_argument("--large", type=int, default=6, help="recordings in the larger synthetic validation set (0: none)")
    ap.add_argument("--large-s", type=float, default=30.0, help="seconds per recording of the larger set")
    ap.add_argument("--drift-s", type=float, default=120.0, help="length of the stream for the state drift (0: none)")
    ap.add_argument("--out", default=str(ROOT / "runs" / "precision"))
    return ap.parse_args(argv)


def available(variants: list[str]) -> tuple[list[str], list[str]]:
    """The variants this CPU runs, and a line for each it cannot."""
    from yolo_etram.utils.precision import BF16_HARDWARE, cpu_bf16, cpu_name

    if cpu_bf16():
        return variants, []
    skipped = [v for v in variants if v in HALF]
    lines = [f"{v}: skipped, this CPU ({cpu_name()}) has no bf16 ({BF16_HARDWARE})" for v in skipped]
    return [v for v in variants if v not in HALF], lines


def export_all(model: Path, data: Path, variants: list[str], out: Path) -> dict[str, Path]:
    """Each OpenVINO export in its own folder, from its own copy of the weights (an export lands beside its weights;
    fp32 and half=True share a name, and a loaded model maps its weight file)."""
    from yolo_etram.export import export_recurrent

    kwargs = {"openvino": {}, "openvino_bf16": {"quantize": 16}, "openvino_int8": {"quantize": 8, "data": str(data)}}
    files = {"fp32": model, "bf16": model}
    for v in variants:
        if v in kwargs:
            folder = out / "exports" / v
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy(model, folder / model.name)
            with contextlib.chdir(folder):
                files[v] = folder / export_recurrent(str(folder / model.name), "openvino", **kwargs[v])
    return files


def large_set(data: Path, n: int, seconds: float, out: Path) -> Path:
    """A larger synthetic validation split at the sensor size of ``data`` (other seeds than any training set)."""
    from yolo_etram.data.data_yaml import load_event_data
    from yolo_etram.data.prepared import stored_size
    from yolo_etram.data.synth import SynthConfig, make_synthetic_dataset

    d = load_event_data(str(data), "val")
    h, w = (v * int(d.get("downsample", 1)) for v in stored_size(d, "val"))
    cfg = SynthConfig(width=w, height=h, duration_s=seconds, seed=1000)
    keys = {k: d[k] for k in ("eval", "groups") if d.get(k)}
    return make_synthetic_dataset(out / "large_val", {"train": 0, "val": n}, cfg, partition=d.get("partition"), **keys)


def validate(files: dict[str, Path], variants: list[str], data: Path, tag: str, out: Path) -> dict[str, dict]:
    from yolo_etram import EventYOLO

    rows = {}
    for v in variants:
        t = time.perf_counter()
        r = EventYOLO(str(files[v])).val(
            data=str(data),
            quantize=16 if v in HALF else None,
            plots=False,
            verbose=False,
            project=str(out / "val"),
            name=f"{tag}_{v}",
            exist_ok=True,
        )
        p = r.prophesee
        motion = p.get("subsets") or {}  # AP by object motion (synthetic data has its ground truth)
        rows[v] = {
            "AP": p["AP"],
            "AP_50": p["AP_50"],
            "AP_S": p["AP_S"],
            "moving AP": (motion.get("moving") or {}).get("AP", float("nan")),
            "stationary AP": (motion.get("stationary") or {}).get("AP", float("nan")),
            "val_s": time.perf_counter() - t,
        }
        print(f"[{tag}] {v}: AP {p['AP']:.4f}  AP50 {p['AP_50']:.4f}  ({rows[v]['val_s']:.0f} s)")
    return rows


def recording(data: Path, seconds: float, out: Path) -> Path:
    """One synthetic recording of ``seconds`` at the data's sensor size, for the drift."""
    from yolo_etram.data.data_yaml import load_event_data
    from yolo_etram.data.prepared import stored_size
    from yolo_etram.data.synth import SynthConfig, synthesize_recording

    d = load_event_data(str(data), "val")
    h, w = (v * int(d.get("downsample", 1)) for v in stored_size(d, "val"))
    path = out / "drift" / "stream"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not Path(f"{path}_td.h5").exists():
        synthesize_recording(path, SynthConfig(width=w, height=h, duration_s=seconds, seed=2000))
    return Path(f"{path}_td.h5")


def drift(files: dict[str, Path], variants: list[str], stream: Path) -> dict[str, np.ndarray]:
    """Per variant, ``(windows, 4)``: max |h - h_fp32|, max |c - c_fp32|, and the mean |h - h_fp32| and
    |c - c_fp32| over all state elements after each window, every variant stepping the same windows in lockstep with
    float32."""
    import torch

    from yolo_etram import EventYOLO
    from yolo_etram.data.event_settings import EventSettings
    from yolo_etram.data.stream import EventWindowSource
    from yolo_etram.nn.exported import StatefulOpenVINOModel
    from yolo_etram.utils.precision import cpu_autocast
    from yolo_etram.utils.sizes import pad_to_multiple

    net = EventYOLO(str(files["fp32"])).model.float().eval()
    half = copy.deepcopy(net) if "bf16" in variants else None
    runners = {v: StatefulOpenVINOModel(files[v]) for v in variants if v.startswith("openvino")}
    settings = EventSettings.from_dict(net.event, "the model")
    windows = EventWindowSource(stream, settings)
    out = {v: [] for v in variants if v != "fp32"}

    def flat(states) -> list[np.ndarray]:
        return [t.numpy() if isinstance(t, torch.Tensor) else t for pair in states for t in pair]

    def diff(states: list[np.ndarray], ref: list[np.ndarray]) -> tuple[float, float, float, float]:
        d = [np.abs(np.asarray(a, np.float32) - b) for a, b in zip(states, ref)]
        h, c = d[0::2], d[1::2]
        mean = [sum(float(x.sum()) for x in part) / sum(x.size for x in part) for part in (h, c)]
        return max(float(x.max()) for x in h), max(float(x.max()) for x in c), *mean

    with torch.no_grad():
        for i, win in enumerate(windows):
            x = pad_to_multiple(torch.from_numpy(win.hist)[None].float(), net.input_multiple)
            net(x)
            ref = flat(net.backbone.states)
            if half is not None:
                with cpu_autocast():
                    half(x)
                out["bf16"].append(diff(flat(half.backbone.states), ref))
            for v, runner in runners.items():
                runner(x.numpy())
                out[v].append(diff(runner.states, ref))
            if i % 200 == 0:
                print(
                    f"[drift] window {i + 1}/{win.total}: " + ", ".join(f"{v} h {o[-1][0]:.2e}" for v, o in out.items())
                )
    return {v: np.asarray(o) for v, o in out.items()}


def write(out: Path, aps: dict[str, dict], drifts: dict[str, np.ndarray], notes: list[str], header: str) -> None:
    rows = []
    for tag, by_variant in aps.items():
        base = by_variant.get("fp32", {}).get("AP")
        for v, r in by_variant.items():
            dap = r["AP"] - base if base is not None else float("nan")
            rows.append({"set": tag, "variant": v, **{k: round(val, 4) for k, val in r.items()}, "dAP": round(dap, 4)})
    drift_rows = [
        {
            "variant": v,
            "windows": len(d),
            "max abs dh": f"{d[:, 0].max():.3g}",
            "mean abs dh": f"{d[:, 2].mean():.3g}",
            "max abs dc": f"{d[:, 1].max():.3g}",
            "mean abs dc": f"{d[:, 3].mean():.3g}",
            "mean abs dh, last 100": f"{d[-100:, 2].mean():.3g}",
        }
        for v, d in drifts.items()
    ]
    for name, table in (("precision.csv", rows), ("drift.csv", drift_rows)):
        if table:
            with open(out / name, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(table[0]))
                w.writeheader()
                w.writerows(table)

    def markdown(table: list[dict]) -> list[str]:
        cols = list(table[0])
        return ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)] + [
            "| " + " | ".join(str(r[c]) for c in cols) + " |" for r in table
        ]

    lines = [header, "", *markdown(rows)]
    if drift_rows:
        seconds = len(next(iter(drifts.values()))) * 0.05
        lines += ["", f"State drift against float32 over a {seconds:.0f} s stream, after every window"]
        lines += ["(dh = h - h_fp32, dc = c - c_fp32, over every element of every state tensor):", ""]
        lines += markdown(drift_rows)
    (out / "precision.md").write_text("\n".join(lines + [""] + notes) + "\n")
    print("\n".join(lines + notes))
    if drifts:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharex=True)
        for i, (v, d) in enumerate(drifts.items()):
            t = np.arange(1, len(d) + 1) * 0.05  # 50 ms windows
            for ax, col, name in ((axes[0], 0, "h"), (axes[1], 1, "c")):
                ax.semilogy(t, np.maximum(d[:, col], 1e-9), color=f"C{i}", lw=1, label=f"{v} max")
                ax.semilogy(t, np.maximum(d[:, col + 2], 1e-9), color=f"C{i}", lw=1, ls=":", label=f"{v} mean")
                ax.set_title(f"|{name} - {name}_fp32| over all state elements")
                ax.set_xlabel("stream time (s)")
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=len(drifts), fontsize=7, frameon=False)
        fig.suptitle(header, fontsize=8)
        fig.tight_layout(rect=(0, 0.1, 1, 1))
        fig.savefig(out / "drift.png", dpi=120)


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from yolo_etram.utils.precision import cpu_name

    torch.set_num_threads(os.cpu_count() or 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    variants, notes = available([v for v in args.variants.split(",") if v])
    if "fp32" not in variants:
        sys.exit("the fp32 variant is the reference: keep it in --variants")
    model, data = Path(args.model).resolve(), Path(args.data).resolve()  # the exports run in their own folders
    header = f"{model.name} on {cpu_name()}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}"
    files = export_all(model, data, variants, out.resolve())
    aps = {"val": validate(files, variants, data, "val", out)}
    if args.large:
        big = large_set(data, args.large, args.large_s, out)
        aps[f"large ({args.large} x {args.large_s:.0f} s)"] = validate(files, variants, big, "large", out)
    drifts = drift(files, variants, recording(data, args.drift_s, out)) if args.drift_s else {}
    write(out, aps, drifts, notes, header)
    return 0


if __name__ == "__main__":
    sys.exit(main())
