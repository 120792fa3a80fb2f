"""A tiny prepared synthetic event dataset (128x96 sensor, seconds-long recordings) and its data YAML, shared by the
training, validation and CLI tests."""

from __future__ import annotations

from pathlib import Path

TINY = dict(width=128, height=96, duration_s=1.6)
# stage-4 maps of a 96x128 input are 3x4: partition (3, 4) divides every stage, so no padding is needed
TINY_PARTITION = [3, 4]


def make_tiny_event_data(
    root: Path, train: int = 2, val: int = 1, test: int = 1, seq_len: int = 3, sampling: str = "stream"
) -> Path:
    """Recordings in ``root/raw``, prepared sequences and their ``data.yaml`` in ``root/prepared``."""
    from yolo_etram.data.synth import SynthConfig, make_synthetic_dataset

    splits = {"train": train, "val": val, "test": test}
    return make_synthetic_dataset(
        root / "prepared",
        splits,
        SynthConfig(**TINY, seed=3),
        raw=root / "raw",
        seq_len=seq_len,
        partition=TINY_PARTITION,
        workers=1,
        progress=False,
        sampling=sampling,
        eval={"skip_ts_us": 500_000, "min_box_diag": 8, "min_box_side": 3},  # tiny sensor: tiny boxes
    )


def raw_dir(data_yaml: Path) -> Path:
    """The raw recordings of a data set made by :func:`make_tiny_event_data` (``<root>/raw``)."""
    return Path(data_yaml).parents[1] / "raw"
