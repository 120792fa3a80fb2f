"""``etram-yolo ablate SPEC.yaml``: every variant of a spec at every seed, then the statistics that judge them.

Each run trains in its own child process (``python -m yolo_etram.experiments.run``: a fresh process per run, so no
state, memory or thread setting of one run reaches the next) into ``OUT/runs/<variant>-seed<seed>/``, an ordinary
Ultralytics run folder with its weights, plots and ``experiment_results.json``. Runs go seed by seed. A run whose
record exists is done and skipped, a run with ``weights/last.pt`` and no record resumes from it, so running the same
command again continues an interrupted ablation where it stopped. Under ``torchrun`` the runs are dealt to the ranks
(run ``i`` to rank ``i % world``, each an independent single-process training) and rank 0 writes the results once
every run has its record.

Written to ``OUT`` (default ``runs/ablate/<name>``):

- ``ablation.csv``: one row per variant and metric: seeds, mean, standard deviation, 95% t interval, and the paired
  difference against the baseline on the same seeds with its interval and the paired t-test's p-value; ``runs.csv``:
  every run's metrics;
- ``ablation.md`` and ``metrics_summary.txt``: the same as tables, with what the intervals allow one to conclude;
- ``ablation.png``: means with 95% intervals per metric, and the paired differences;
- the experiment record: ``experiment_hypothesis.txt``, ``experiment_config.yaml`` (the spec as run),
  ``training_command.txt`` (this command and each run's), ``experiment_results.json`` (all of it, and every run's
  folder and checkpoints).

Usage:
    $ etram-yolo ablate cfg/ablations/small_objects.yaml --out runs/ablate/small_objects
    >>> from yolo_etram.experiments.ablate import run_ablation
    >>> out = run_ablation("cfg/ablations/small_objects.yaml")
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import yaml

from yolo_etram.utils.errors import ExperimentError
from yolo_etram.utils.files import save_text_atomic

from .metrics import COST_METRICS, METRICS, TABLE_METRICS, run_metrics
from .spec import AblationSpec, Run
from .stats import CONFIDENCE, paired_difference, summarize

RECORD = "experiment_results.json"
LAUNCHER_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK", "MASTER_ADDR",
                "MASTER_PORT", "TORCHELASTIC_RUN_ID", "TORCHELASTIC_RESTART_COUNT")  # fmt: skip
"""What torchrun tells its processes: removed for the runs, which train as single processes."""


def run_dir(out: Path, run: Run) -> Path:
    return out / "runs" / run.name


def run_state(folder: Path) -> str:
    """``done`` (its record exists), ``partial`` (``weights/last.pt``, no record: resume) or ``new``."""
    if (folder / RECORD).is_file():
        return "done"
    return "partial" if (folder / "weights" / "last.pt").is_file() else "new"


def rank_device(args: dict) -> dict:
    """Under torchrun on a machine with several GPUs, a rank's runs train on its own GPU (``LOCAL_RANK``) unless the
    spec names a device."""
    local = os.environ.get("LOCAL_RANK")
    if local is None or "device" in args:
        return args
    import torch

    return {**args, "device": int(local)} if torch.cuda.device_count() > int(local) else args


def train_one(run: Run, folder: Path, quiet: bool = False) -> None:
    """Train one run in a child process, as a single process even under torchrun (the launcher's variables are
    removed: each rank's runs are independent trainings)."""
    job = {"run": str(folder), "args": rank_device(run.args), "resume": run_state(folder) == "partial"}
    folder.mkdir(parents=True, exist_ok=True)
    save_text_atomic(folder / "ablation_run.json", json.dumps(job, indent=1))
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_ENV}
    cmd = [sys.executable, "-m", "yolo_etram.experiments.run", str(folder / "ablation_run.json")]
    out = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL if quiet else None)
    if out.returncode:
        raise ExperimentError(f"{folder}: run {run.name} failed (exit {out.returncode}); see its output above")
    if not (folder / RECORD).is_file():
        raise ExperimentError(f"{folder}: run {run.name} ended without {RECORD}")


def run_ablation(spec_path: str | Path, out: str | Path | None = None, quiet: bool = False) -> Path:
    """Run (or continue) the ablation of ``spec_path`` and write its results; returns the output folder."""
    spec = AblationSpec.load(spec_path)
    out = Path(out or Path("runs") / "ablate" / spec.name).resolve()
    out.mkdir(parents=True, exist_ok=True)
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if rank == 0:  # checks the data YAML once, and builds a synthetic set before any run needs it
        from yolo_etram.data.data_yaml import load_event_data

        load_event_data(spec.data_path())
        spec.write_variant_data(out)
    runs = spec.runs(out)
    started = time.time()
    for i, run in enumerate(runs):
        if i % world != rank:
            continue
        folder = run_dir(out, run)
        state = run_state(folder)
        print(f"ablate [{i + 1}/{len(runs)}] {run.name}: {'done, skipped' if state == 'done' else state}", flush=True)
        if state != "done":
            train_one(run, folder, quiet)
    if rank != 0:
        return out
    while world > 1 and any(run_state(run_dir(out, r)) != "done" for r in runs):
        time.sleep(10)  # the other ranks' runs
    write_results(spec, out, runs, time.time() - started)
    return out


def collect(out: Path, runs: list[Run]) -> dict[str, dict[int, dict[str, float | None]]]:
    """``{variant: {seed: {metric: value}}}`` from every run's record."""
    table: dict[str, dict[int, dict]] = {}
    for run in runs:
        record = json.loads((run_dir(out, run) / RECORD).read_text())
        table.setdefault(run.variant, {})[run.seed] = run_metrics(record)
    return table


def statistics(spec: AblationSpec, table: dict) -> list[dict]:
    """One row per variant and metric: the summary over seeds and the paired difference against the baseline."""
    base = table[spec.baseline]
    names = list(dict.fromkeys(m for runs in table.values() for r in runs.values() for m in r))
    rows = []
    for variant, runs in table.items():
        for metric in names:
            values = [runs[s].get(metric) if s in runs else None for s in spec.seeds]
            s = summarize(values)
            row = {"variant": variant, "metric": metric, "seeds": s.n, "mean": s.mean, "std": s.std}
            row["ci_low"], row["ci_high"] = s.ci or (None, None)
            row["note"] = s.why_no_interval or ""
            if variant != spec.baseline:
                d = paired_difference([base[k].get(metric) if k in base else None for k in spec.seeds], values)
                row.update(diff=d.mean, diff_ci_low=(d.ci or (None,))[0], diff_ci_high=(d.ci or (None, None))[1])
                row.update(p_value=d.p_value, note=d.why_no_test or row["note"])
            rows.append(row)
    return rows


def _fmt(v: float | None, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def table_metrics(rows: list[dict]) -> list[str]:
    """The metrics some run has, in table order: the fixed ones, with the class groups after AP75."""
    metrics = [m for m in TABLE_METRICS if any(r["metric"] == m and r["seeds"] for r in rows)]
    groups = [m for m in dict.fromkeys(r["metric"] for r in rows) if m.startswith("group ")]
    return metrics[:3] + groups + metrics[3:]


def markdown(spec: AblationSpec, rows: list[dict]) -> str:
    """The tables: mean +- std [95% interval] per variant, and the paired differences against the baseline."""
    metrics = table_metrics(rows)
    by = {(r["variant"], r["metric"]): r for r in rows}
    pct = int(CONFIDENCE * 100)
    lines = [
        f"# Ablation: {spec.name}",
        "",
        f"Hypothesis: {spec.hypothesis or '(none given)'}",
        "",
        f"Data `{spec.data}`, seeds {list(spec.seeds)}, baseline `{spec.baseline}`. Cells: mean +- standard deviation "
        f"over seeds, [{pct}% t interval].",
        "",
        "| variant | " + " | ".join(metrics) + " |",
        "|---" * (len(metrics) + 1) + "|",
    ]
    for variant in spec.variants:
        cells = []
        for m in metrics:
            r = by.get((variant, m))
            if r is None or not r["seeds"]:
                cells.append("-")
            elif r["std"] is None:
                cells.append(f"{_fmt(r['mean'])} (1 seed)")
            else:
                cells.append(f"{_fmt(r['mean'])} +- {_fmt(r['std'])} [{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]")
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Paired differences against `{spec.baseline}` (same seeds): mean [{pct}% interval], p (paired t).",
        "",
    ]
    lines += ["| variant | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    verdicts = []
    for variant in spec.variants:
        if variant == spec.baseline:
            continue
        cells = []
        for m in metrics:
            r = by.get((variant, m))
            if r is None or r.get("diff") is None:
                cells.append("-")
            elif r.get("p_value") is None:
                cells.append(f"{r['diff']:+.3f} ({r['note']})")
            else:
                cells.append(
                    f"{r['diff']:+.3f} [{r['diff_ci_low']:+.3f}, {r['diff_ci_high']:+.3f}] p={r['p_value']:.2f}"
                )
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
        verdicts.append(verdict(variant, spec.baseline, by.get((variant, "AP"))))
    lines += ["", "What the intervals allow one to conclude (AP, Prophesee protocol):", ""]
    lines += [f"- {v}" for v in verdicts] or ["- (only the baseline ran)"]
    return "\n".join(lines) + "\n"


def verdict(variant: str, baseline: str, row: dict | None) -> str:
    """One sentence on the paired AP difference: a real gain or loss only when its interval excludes zero."""
    if row is None or row.get("diff") is None:
        return f"`{variant}`: no AP paired with `{baseline}`."
    if row.get("p_value") is None:
        return f"`{variant}`: {row['diff']:+.3f} AP on one paired seed: no conclusion ({row['note']})."
    lo, hi = row["diff_ci_low"], row["diff_ci_high"]
    pct = int(CONFIDENCE * 100)
    if lo > 0 or hi < 0:
        word = "raises" if lo > 0 else "lowers"
        return (
            f"`{variant}` {word} AP by {row['diff']:+.3f} [{lo:+.3f}, {hi:+.3f}] over {row['seeds']} paired seeds: "
            f"the {pct}% interval excludes zero (p={row['p_value']:.3f})."
        )
    return (
        f"`{variant}`: {row['diff']:+.3f} AP [{lo:+.3f}, {hi:+.3f}] over {row['seeds']} paired seeds: the {pct}% "
        f"interval holds zero (p={row['p_value']:.2f}), so this ablation cannot tell it from the baseline."
    )


def plot(spec: AblationSpec, rows: list[dict], path: Path) -> None:
    """Means with 95% intervals per metric (left) and paired differences against the baseline (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in table_metrics(rows) if m not in COST_METRICS][:10]  # APs share one axis; costs do not
    by = {(r["variant"], r["metric"]): r for r in rows}
    variants = list(spec.variants)
    colour = {v: f"C{i}" for i, v in enumerate(variants)}  # a variant keeps its colour in both panels
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    width = 0.8 / len(variants)
    for j, v in enumerate(variants):
        xs, ys, lo, hi = [], [], [], []
        for i, m in enumerate(metrics):
            r = by.get((v, m))
            if r and r["mean"] is not None:
                xs.append(i + (j - (len(variants) - 1) / 2) * width)
                ys.append(r["mean"])
                lo.append(r["mean"] - (r["ci_low"] if r["ci_low"] is not None else r["mean"]))
                hi.append((r["ci_high"] if r["ci_high"] is not None else r["mean"]) - r["mean"])
        axes[0].bar(xs, ys, width, yerr=[lo, hi], capsize=3, label=v, color=colour[v])
    axes[0].set_xticks(range(len(metrics)), metrics, rotation=30, ha="right")
    axes[0].set_title(f"mean over seeds {list(spec.seeds)}, {int(CONFIDENCE * 100)}% t interval")
    others = [v for v in variants if v != spec.baseline]
    for j, v in enumerate(others):
        xs, ys, lo, hi = [], [], [], []
        for i, m in enumerate(metrics):
            r = by.get((v, m))
            if r and r.get("diff") is not None:
                xs.append(i + (j - (len(others) - 1) / 2) * (0.8 / max(len(others), 1)))
                ys.append(r["diff"])
                lo.append(r["diff"] - (r["diff_ci_low"] if r.get("diff_ci_low") is not None else r["diff"]))
                hi.append((r["diff_ci_high"] if r.get("diff_ci_high") is not None else r["diff"]) - r["diff"])
        axes[1].errorbar(xs, ys, yerr=[lo, hi], fmt="o", capsize=4, label=f"{v} - {spec.baseline}", color=colour[v])
    axes[1].axhline(0, color="k", lw=0.8)
    axes[1].set_xticks(range(len(metrics)), metrics, rotation=30, ha="right")
    axes[1].set_title(f"paired difference against {spec.baseline} (same seeds)")
    for ax in axes:
        ax.grid(axis="y", alpha=0.3)
    handles = [h for ax in axes for h in ax.get_legend_handles_labels()[0]]
    labels = [lb for ax in axes for lb in ax.get_legend_handles_labels()[1]]
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), frameon=False)
    fig.suptitle(f"{spec.name}: {spec.hypothesis}" if spec.hypothesis else spec.name)
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_results(spec: AblationSpec, out: Path, runs: list[Run], seconds: float) -> None:
    """The tables, the plot and the experiment record of a finished ablation."""
    table = collect(out, runs)
    rows = statistics(spec, table)
    columns = ["variant", "metric", "seeds", "mean", "std", "ci_low", "ci_high", "diff", "diff_ci_low", "diff_ci_high"]
    columns += ["p_value", "note"]
    with open(out / "ablation.csv", "w", newline="") as f:
        w = csv.DictWriter(f, columns)
        w.writeheader()
        w.writerows({k: r.get(k) for k in columns} for r in rows)
    metric_names = list(dict.fromkeys(m for r in rows for m in [r["metric"]]))
    with open(out / "runs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["variant", "seed", "run", *metric_names])
        for run in runs:
            values = table[run.variant][run.seed]
            w.writerow([run.variant, run.seed, run_dir(out, run), *(values.get(m) for m in metric_names)])
    md = markdown(spec, rows)
    (out / "ablation.md").write_text(md)
    (out / "metrics_summary.txt").write_text(md)
    plot(spec, rows, out / "ablation.png")
    (out / "experiment_hypothesis.txt").write_text((spec.hypothesis or "(none given)") + "\n")
    variants = {k: {**v, **({"data_keys": spec.data_keys[k]} if k in spec.data_keys else {})}
                for k, v in spec.variants.items()}  # fmt: skip
    config = {"name": spec.name, "data": spec.data, "seeds": list(spec.seeds), "train": spec.train,
              "baseline": spec.baseline, "variants": variants, "hypothesis": spec.hypothesis}  # fmt: skip
    (out / "experiment_config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    commands = [shlex.join(sys.argv)] + [
        f"# {r.name}: " + shlex.join(["yolo", "train", *(f"{k}={v}" for k, v in r.args.items())]) for r in runs
    ]
    (out / "training_command.txt").write_text("\n".join(commands) + "\n")
    record = {
        "kind": "ablation",
        "name": spec.name,
        "spec": config,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "wall_time_s": round(seconds, 1),
        "confidence": CONFIDENCE,
        "metrics": {m: METRICS[m].help for m in metric_names if m in METRICS},
        "statistics": rows,
        "runs": [
            {
                "variant": r.variant,
                "seed": r.seed,
                "folder": str(run_dir(out, r)),
                "checkpoints": sorted(str(p) for p in (run_dir(out, r) / "weights").glob("*.pt")),
                "metrics": table[r.variant][r.seed],
            }
            for r in runs
        ],
    }
    save_text_atomic(out / RECORD, json.dumps(record, indent=1))
    print(md)
    print(f"ablate: results in {out} (ablation.csv, ablation.md, ablation.png, {RECORD})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="etram-yolo ablate",
        description="Variants x seeds on one data YAML; means, intervals and paired differences against the baseline.",
    )
    ap.add_argument("spec", help="ablation spec YAML (data, seeds, train, baseline, variants, hypothesis)")
    ap.add_argument("--out", default=None, help="output folder (default runs/ablate/<name>); rerun to resume")
    ap.add_argument("--quiet", action="store_true", help="hide the runs' own training output")
    args = ap.parse_args(argv)
    run_ablation(args.spec, args.out, quiet=args.quiet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
