"""What an ablation reads from each run's ``experiment_results.json``, by name.

The Prophesee protocol's COCO numbers (``AP`` is AP at IoU 0.5:0.95, the field's headline), recall, AP by box size,
the eTraM paper's "All" column (class-agnostic AP50), AP by object motion where the data has motion ground truth,
AP per class group (``group small`` for the data YAML's ``groups: {small: [...]}``), and the run's cost.

Usage:
    >>> run_metrics(json.loads(Path("runs/detect/train/experiment_results.json").read_text()))["AP"]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    help: str
    read: Callable[[dict], float | None]


def _get(*keys: str) -> Callable[[dict], float | None]:
    def read(record: dict) -> float | None:
        v = record
        for k in keys:
            v = v.get(k) if isinstance(v, dict) else None
        return None if v is None or float(v) < 0 else float(v)  # COCO's -1: no ground truth of that kind

    return read


METRICS: dict[str, Metric] = {
    "AP": Metric("Prophesee AP at IoU 0.5:0.95", _get("metrics", "prophesee", "AP")),
    "AP50": Metric("Prophesee AP at IoU 0.5", _get("metrics", "prophesee", "AP_50")),
    "AP75": Metric("Prophesee AP at IoU 0.75", _get("metrics", "prophesee", "AP_75")),
    "AR": Metric("Prophesee AR at 100 detections", _get("metrics", "recall", "AR_100")),
    "AP_S": Metric("AP of small boxes (COCO's < 32^2 px)", _get("metrics", "by_size", "AP_S")),
    "AP_M": Metric("AP of medium boxes", _get("metrics", "by_size", "AP_M")),
    "AP_L": Metric("AP of large boxes", _get("metrics", "by_size", "AP_L")),
    "eTraM AP50 All": Metric("the eTraM table's All column: class-agnostic AP50", _get("metrics", "etram_AP50", "All")),
    "moving AP": Metric("AP on moving objects", _get("metrics", "motion", "moving", "AP")),
    "stationary AP": Metric("AP on stopped objects (after moving)", _get("metrics", "motion", "stationary", "AP")),
    "parked AP": Metric("AP on objects parked since before the recording", _get("metrics", "motion", "parked", "AP")),
    "train min": Metric("wall time of the run (set-up, training, validation), minutes", lambda r: _minutes(r)),
    "ms/window": Metric("validation inference time per window", _get("speed_ms_per_window")),
}
"""Fixed metrics; ``group <name>`` metrics come from each record's class groups."""

TABLE_METRICS = ("AP", "AP50", "AP75", "AR", "AP_S", "AP_M", "AP_L", "eTraM AP50 All", "moving AP", "stationary AP",
                 "parked AP", "train min", "ms/window")  # fmt: skip
"""The order of the ablation tables (group metrics go after AP75)."""
COST_METRICS = ("train min", "ms/window")
"""Metrics that are costs, not scores (the plot leaves them out: another scale)."""


def _minutes(record: dict) -> float | None:
    s = record.get("wall_time_s")
    return None if s is None else float(s) / 60


def run_metrics(record: dict) -> dict[str, float | None]:
    """Every metric of one run's record, by name (None where the run has no such number)."""
    out = {name: m.read(record) for name, m in METRICS.items()}
    for group, value in (record.get("metrics", {}).get("groups") or {}).items():
        out[f"group {group}"] = None if value is None or float(value) < 0 else float(value)
    return out
