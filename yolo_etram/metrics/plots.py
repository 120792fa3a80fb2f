"""Plots of evaluation results people would rather see than read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def plot_pr_curves(result: dict[str, Any], path: str | Path, iou: float = 0.5) -> Path:
    """Save a PNG of the precision-recall curve of each class, their mean and the class-agnostic curve at one IoU
    threshold, from ``evaluate(curves=True)``. Uses matplotlib's Agg canvas (no display, no font download)."""
    from matplotlib.figure import Figure

    if "curves" not in result:
        raise ValueError("result has no 'curves': call evaluate(curves=True)")
    c = result["curves"]
    t = int(np.argmin(np.abs(np.asarray(c["iou_thresholds"]) - iou)))
    recall, precision = np.asarray(c["recall"]), np.asarray(c["precision"])[t]  # (R,), (R, K)

    fig = Figure(figsize=(9, 6), tight_layout=True)
    ax = fig.subplots()
    with_gt = [k for k in range(precision.shape[1]) if np.all(precision[:, k] > -1)]
    for k in with_gt:
        ax.plot(recall, precision[:, k], linewidth=1, label=f"{c['classes'][k]} {precision[:, k].mean():.3f}")
    if with_gt:
        mean = precision[:, with_gt].mean(axis=1)
        ax.plot(recall, mean, linewidth=3, color="blue", label=f"mean of classes {mean.mean():.3f}")
    if "precision_agnostic" in c:
        agnostic = np.asarray(c["precision_agnostic"])[t]
        if np.all(agnostic > -1):
            ax.plot(recall, agnostic, "--", linewidth=2, color="black", label=f"class-agnostic {agnostic.mean():.3f}")
    ax.set(xlabel="Recall", ylabel="Precision", xlim=(0, 1), ylim=(0, 1.01))
    ax.set_title(f"Precision-recall at IoU {iou:.2f} (legend: AP at this IoU, COCO 101-point)")
    ax.legend(bbox_to_anchor=(1.04, 1), loc="upper left")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    return path


def plot_validation_history(csv: str | Path, path: str | Path) -> Path | None:
    """Save a PNG of the Prophesee and eTraM-table APs of a run's ``results.csv`` by epoch (Ultralytics' own
    ``results.png`` draws only its ``metrics/*`` columns). Epochs without validation have empty cells: no point is
    drawn for them. Returns None when the CSV has no such column."""
    import polars as pl
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    data = pl.read_csv(Path(csv).read_bytes(), infer_schema_length=None)
    titles = {
        "prophesee/": "Prophesee protocol (COCO AP, IoU 0.5:0.95 unless named)",
        "etram/": "eTraM paper's table (AP at IoU 0.5)",
    }
    panels = {title: [c for c in data.columns if c.startswith(prefix)] for prefix, title in titles.items()}
    panels = {title: cols for title, cols in panels.items() if cols}
    if not panels:
        return None
    epoch = data["epoch"].to_numpy()
    fig = Figure(figsize=(7 * len(panels) + 3, 5), tight_layout=True)
    for ax, (title, cols) in zip(np.atleast_1d(fig.subplots(1, len(panels))), panels.items()):
        for c in cols:
            y = data[c].cast(pl.Float64).to_numpy()
            seen = ~np.isnan(y) & (y >= 0)  # COCO's -1: nothing to average (e.g. no large boxes)
            ax.plot(epoch[seen], y[seen], marker="o", linewidth=1.5, label=c.split("/", 1)[1])
        ax.set(xlabel="epoch", ylabel="AP", title=title, xlim=(0.5, epoch.max() + 0.5), ylim=(0, None))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(bbox_to_anchor=(1.02, 1), loc="upper left", fontsize=8)
    path = Path(path)
    fig.savefig(path, dpi=120)
    return path
