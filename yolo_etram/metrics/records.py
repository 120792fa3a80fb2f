"""Experiment records: every training run writes ``experiment_results.json``; ``etram-yolo compare`` puts runs side
by side (and prints the statistics of an ablation folder, see :mod:`yolo_etram.experiments.ablate`).

The record (beside it: ``training_command.txt``, ``experiment_config.yaml``, ``metrics_summary.txt``) holds all
metrics of the final validation (Prophesee AP overall, by box size, per class, per class group,
by object motion where the data has motion ground truth, class-agnostic, Ultralytics' own), the model and data YAMLs
as used, the command line, the code version (git commit), wall time and peak memory, and the plots of the run.

Usage:
    $ etram-yolo compare runs/detect/baseline runs/detect/size_aware runs/detect/4scale
    >>> from yolo_etram.metrics.records import load_record, compare_table
    >>> print(compare_table([load_record("runs/detect/a"), load_record("runs/detect/b")]))
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from yolo_etram.utils import distributed
from yolo_etram.utils.errors import EventDataError
from yolo_etram.utils.serialize import jsonable

from .prophesee import AP_KEYS

RECORD = "experiment_results.json"
HEADLINE = (*AP_KEYS, "AP_all")


def code_version() -> dict:
    """Git commit of this package's checkout (``dirty`` when it has local changes), and the package versions."""
    from importlib.metadata import PackageNotFoundError, version

    def pkg(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    out = {"yolo_etram": pkg("yolo-etram"), "ultralytics": pkg("ultralytics"), "torch": pkg("torch")}
    repo = Path(__file__).resolve().parents[2]  # the checkout holding yolo_etram/
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10)
        if commit.returncode == 0:
            dirty = subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=repo,
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
            out.update(git_commit=commit.stdout.strip(), git_dirty=bool(dirty))
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def reset_peak_memory() -> None:
    """Start this process's peak-memory count afresh (Linux ``clear_refs``; CUDA's peak stats), so that a run that
    follows another in the same process records its own peak."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    try:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.reset_peak_memory_stats()
    except ImportError:
        pass


def peak_memory_mib() -> dict:
    """Peak resident memory of this process (``VmHWM``; ``ru_maxrss`` would include the parent's) and of CUDA."""
    out: dict[str, float] = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                out["rss"] = round(int(line.split()[1]) / 1024, 1)
    except OSError:
        import resource

        out["rss"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    try:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            out["cuda"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    except ImportError:
        pass
    return out


def metrics_record(prophesee: dict, ultralytics_metrics: dict | None = None) -> dict:
    """The metrics part of a record, from a validator's Prophesee result (``EventValidator.prophesee``)."""
    p = prophesee or {}
    return {
        "prophesee": {k: p.get(k) for k in HEADLINE if k in p},
        "by_size": {k: p.get(k) for k in ("AP_S", "AP_M", "AP_L") if k in p},
        "per_class": p.get("per_class", {}),
        "etram_AP50": {"All": p.get("agnostic", {}).get("AP_50"), **p.get("per_class_AP50", {})} if p else {},
        "groups": p.get("groups", {}),
        "motion": {
            name: {k: v.get(k) for k in ("AP", "AP_50", "AP_all", "n_gt")}
            for name, v in (p.get("subsets") or {}).items()
        },
        "class_agnostic": p.get("agnostic", {}),
        "recall": {k: p.get(k) for k in ("AR_1", "AR_10", "AR_100") if k in p},
        "counts": {
            k: p.get(k) for k in ("n_sequences", "n_images", "n_gt_after_filter", "n_pred_after_filter") if k in p
        },
        "ultralytics": dict(ultralytics_metrics or {}),
    }


def write_record(trainer) -> Path:
    """Write ``experiment_results.json`` for a finished ``EventTrainer`` run (atomically) and return its path."""
    from yolo_etram.utils.files import save_text_atomic

    save_dir = Path(trainer.save_dir)
    validator = getattr(trainer, "validator", None)
    model = getattr(trainer, "model", None)
    from ultralytics.utils.torch_utils import unwrap_model

    model_yaml = (
        getattr(unwrap_model(model), "yaml", None) if model is not None and not isinstance(model, str) else None
    )
    record = {
        "run": str(save_dir),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": shlex.join(sys.argv),
        "cwd": os.getcwd(),
        "code": code_version(),
        "wall_time_s": round(time.time() - getattr(trainer, "created_at", trainer.train_time_start), 1),
        "peak_memory_mib": peak_memory_mib(),
        "distributed": getattr(trainer, "process_group", None) or distributed.describe(),  # world_size, backend
        "epochs_run": int(trainer.epoch) + 1,
        "best_fitness": trainer.best_fitness,
        "metrics": metrics_record(getattr(validator, "prophesee", None) or {}, trainer.metrics),
        "speed_ms_per_window": (getattr(validator, "speed", None) or {}).get("inference"),
        "model_yaml": model_yaml,
        "data_yaml": {k: v for k, v in (trainer.data or {}).items() if k not in ("nc",)},
        "train_args": vars(trainer.args),
        "plots": sorted(p.name for p in save_dir.glob("*.png")),
        "confusion_matrix": sorted(p.name for p in save_dir.glob("confusion_matrix*.png")),
        "checkpoints": sorted(str(p) for p in (save_dir / "weights").glob("*.pt")),
    }
    path = save_dir / RECORD
    save_text_atomic(path, json.dumps(jsonable(record), indent=1))
    write_record_texts(save_dir, record)
    return path


def write_record_texts(save_dir: Path, record: dict) -> None:
    """The plain-text companions of a run's record: ``training_command.txt``, ``experiment_config.yaml`` (model, data
    and train arguments as used) and ``metrics_summary.txt`` (the headline numbers, one per line)."""
    import yaml

    from yolo_etram.utils.files import save_text_atomic

    save_text_atomic(save_dir / "training_command.txt", record["command"] + "\n")
    config = {k: record.get(k) for k in ("model_yaml", "data_yaml", "train_args")}
    save_text_atomic(save_dir / "experiment_config.yaml", yaml.safe_dump(jsonable(config), sort_keys=False))
    lines = [f"run {record['run']}", f"wall time {record['wall_time_s']} s, peak RSS {record['peak_memory_mib']}"]
    lines += [
        f"{k:<24s} {'-' if v is None else f'{v:.4f}'}" for k, v in _rows(record).items() if k != "wall time (min)"
    ]
    save_text_atomic(save_dir / "metrics_summary.txt", "\n".join(lines) + "\n")


def load_record(run: str | Path) -> dict:
    """A run's record: ``run`` is the run folder or its ``experiment_results.json``."""
    path = Path(run)
    path = path / RECORD if path.is_dir() else path
    if not path.is_file():
        raise EventDataError(f"{run}: no {RECORD} (a finished training run of yolo-etram writes one)")
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise EventDataError(f"{path}: unreadable experiment record ({e})") from e
    record.setdefault("run", str(path.parent))
    return record


def _rows(record: dict) -> dict[str, float | None]:
    m = record.get("metrics", {})
    rows: dict[str, float | None] = {k: m.get("prophesee", {}).get(k) for k in HEADLINE}
    rows.update({f"group {k}": v for k, v in m.get("groups", {}).items()})
    rows.update({f"class {k}": v for k, v in m.get("per_class", {}).items()})
    rows.update({f"eTraM AP50 {k}": v for k, v in m.get("etram_AP50", {}).items()})
    rows.update({f"motion {k}": v.get("AP") for k, v in m.get("motion", {}).items()})
    rows["wall time (min)"] = (record.get("wall_time_s") or 0) / 60 or None
    rows["peak RSS (MiB)"] = record.get("peak_memory_mib", {}).get("rss")
    return rows


def compare_table(records: list[dict], names: list[str] | None = None) -> str:
    """A Markdown table: one row per metric, one column per run, deltas against the first run."""
    names = names or [Path(r.get("run", f"run{i}")).name for i, r in enumerate(records)]
    rows = [_rows(r) for r in records]
    keys = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| metric | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]

    def fmt(v, base):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "-"
        s = f"{v:.4f}" if abs(v) < 10 else f"{v:.1f}"
        if base is None or base is v or (isinstance(base, float) and math.isnan(base)):
            return s
        d = v - base
        return f"{s} ({d:+.4f})" if abs(v) < 10 else f"{s} ({d:+.1f})"

    for k in keys:
        base = rows[0].get(k)
        cells = [fmt(r.get(k), None if i == 0 else base) for i, r in enumerate(rows)]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="etram-yolo compare",
        description="Runs side by side, deltas against the first; an ablation folder prints its statistics.",
    )
    ap.add_argument("runs", nargs="+", help="run or ablation folders (or their experiment_results.json)")
    ap.add_argument("--json", default=None, help="also write the table's numbers here")
    args = ap.parse_args(argv)
    records = [load_record(r) for r in args.runs]
    ablations = [r for r in records if r.get("kind") == "ablation"]
    for r in ablations:  # ablate's own tables: means, intervals, paired differences
        print((Path(r["run"]) / "ablation.md").read_text())
    records = [r for r in records if r.get("kind") != "ablation"]
    if not records:
        return 0
    print(compare_table(records))
    if args.json:
        Path(args.json).write_text(json.dumps({r["run"]: _rows(r) for r in records}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
