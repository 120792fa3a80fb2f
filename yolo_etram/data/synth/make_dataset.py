"""A synthetic data set ready to train on: recordings, prepared sequences and the data YAML, in one call (the demo,
``etram-synth.yaml``'s build on first use, the benchmarks and the tests all use it).

Usage:
    >>> from yolo_etram.data.synth import SynthConfig, make_synthetic_dataset
    >>> data_yaml = make_synthetic_dataset("datasets/etram_synth_demo", {"train": 6, "val": 2},
    ...                                    SynthConfig(width=320, height=192, duration_s=12))
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from yolo_etram.utils.files import save_text_atomic

from ..prepare import PrepareConfig, prepare_dataset, summarize
from .config import COARSE_CLASS_NAMES, FINE_CLASS_NAMES, SynthConfig
from .writer import synthesize_dataset


def prophesee_eval_for_height(height: int) -> dict:
    """eTraM's Prophesee filter (at 360 rows: boxes with a diagonal under 30 or a side under 10 px are ignored, and the
    first 0.5 s), scaled to a sensor of ``height`` rows."""
    return {"skip_ts_us": 500_000, "min_box_diag": 30 * height // 360, "min_box_side": 10 * height // 360}


def make_synthetic_dataset(
    root: str | Path,
    splits: dict[str, int],
    cfg: SynthConfig,
    *,
    raw: str | Path | None = None,
    seq_len: int = 5,
    partition: list[int] | None = None,
    workers: int = 2,
    progress: bool = True,
    prepare: PrepareConfig | None = None,
    downsample: int = 1,
    **keys,
) -> Path:
    """Synthesize raw recordings into ``raw`` (default ``<root>_raw``), prepare them into ``root`` at full resolution
    and write ``<root>/data.yaml``; finished recordings and sequences are skipped (a rerun resumes). Returns the YAML.

    The YAML has the class names of ``cfg.classes``, stream sampling, ``seq_len``, ``partition`` (the attention
    partition for this input size, when given), the Prophesee filter scaled to ``cfg.height``, and ``keys`` on top
    (e.g. ``groups``, ``eval``). ``prepare``: the representation and windows (default RVT's 50 ms stacked histogram);
    ``downsample``: 2 stores the sensor at half resolution (RVT's eTraM setting; the recordings in ``raw`` are the
    same, so one raw folder prepared at 1 and 2 gives twin data, :mod:`yolo_etram.data.twin`)."""
    import yaml

    root = Path(root)
    raw = Path(raw) if raw is not None else root.with_name(root.name + "_raw")
    synthesize_dataset(raw, splits, cfg, progress=progress, workers=workers)
    prepare = replace(prepare or PrepareConfig(), kind="etram", downsample=downsample)
    results = prepare_dataset(raw, root, prepare, workers=workers, progress=progress)
    if progress:
        print(summarize(results))
    names = FINE_CLASS_NAMES if cfg.classes == 8 else COARSE_CLASS_NAMES
    data = {
        "path": str(root),
        **{s: s for s in ("train", "val", "test") if splits.get(s)},
        "names": dict(enumerate(names)),
        "channels": prepare.settings().channels,
        "seq_len": seq_len,
        "sampling": "stream",
        **({"partition": list(partition)} if partition else {}),
        "eval": prophesee_eval_for_height(cfg.height // downsample),
        **keys,
    }
    path = root / "data.yaml"
    save_text_atomic(path, yaml.safe_dump(data, sort_keys=False))
    return path
