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


def make_tiny_twin_data(root: Path, train: int = 2, val: int = 1, seq_len: int = 3) -> Path:
    """The same synthetic recordings (256x192 sensor) prepared twice: at full resolution into ``root/full`` and
    downsampled by 2 (128x96, RVT's eTraM setting) into ``root/ds2``. Returns the ds2 data YAML, whose ``twin`` is
    the full-resolution set."""
    import yaml

    from yolo_etram.data.prepare import PrepareConfig, prepare_dataset
    from yolo_etram.data.synth import SynthConfig, make_synthetic_dataset

    full = make_synthetic_dataset(
        root / "full",
        {"train": train, "val": val},
        SynthConfig(width=256, height=192, duration_s=1.6, seed=5),
        raw=root / "raw",
        seq_len=seq_len,
        partition=TINY_PARTITION,
        workers=1,
        progress=False,
        eval={"skip_ts_us": 500_000, "min_box_diag": 16, "min_box_side": 6},
    )
    prepare_dataset(root / "raw", root / "ds2", PrepareConfig(kind="etram", downsample=2), workers=1, progress=False)
    data = yaml.safe_load(full.read_text())
    data.update(
        path=str(root / "ds2"), twin=str(root / "full"), eval={**data["eval"], "min_box_diag": 8, "min_box_side": 3}
    )
    path = root / "ds2" / "data.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
