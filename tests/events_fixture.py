"""A tiny prepared synthetic event dataset (128x96 sensor, seconds-long recordings) and its data YAML, shared by the
training, validation and CLI tests."""

from __future__ import annotations

from pathlib import Path

import yaml

TINY = dict(width=128, height=96, duration_s=1.6)
# stage-4 maps of a 96x128 input are 3x4: partition (3, 4) divides every stage, so no padding is needed
TINY_PARTITION = [3, 4]


def make_tiny_event_data(root: Path, train: int = 2, val: int = 1, test: int = 1, seq_len: int = 3,
                         sampling: str = "stream") -> Path:
    from yolo_etram.data.prepare import PrepareConfig, prepare_dataset
    from yolo_etram.data.synthetic import SynthConfig, synthesize_dataset

    raw, prepared = root / "raw", root / "prepared"
    synthesize_dataset(raw, {"train": train, "val": val, "test": test}, SynthConfig(**TINY, seed=3), progress=False)
    prepare_dataset(raw, prepared, PrepareConfig(kind="etram", downsample=False), progress=False)
    data = {
        "path": str(prepared), "train": "train", "val": "val", "test": "test",
        "names": {0: "pedestrian", 1: "vehicle", 2: "micromobility"}, "channels": 20,
        "seq_len": seq_len, "sampling": sampling, "partition": TINY_PARTITION,
        "eval": {"skip_ts_us": 500_000, "min_box_diag": 8, "min_box_side": 3},  # tiny sensor: tiny boxes
    }
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
