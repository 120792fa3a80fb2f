"""Tiny random raw recordings (events + 30 Hz boxes) for I/O and prepare tests; the realistic generator is
``yolo_etram.data.synth``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from yolo_etram.data.io import BBOX_DTYPE, write_boxes, write_events_h5


def random_events(n, duration_us, width, height, seed=0):
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(0, duration_us, n)).astype(np.int64)
    x = rng.integers(0, width, n).astype(np.uint16)
    y = rng.integers(0, height, n).astype(np.uint16)
    p = rng.integers(0, 2, n).astype(np.int16)
    return x, y, p, t


def random_boxes(duration_us, width, height, rate_hz=30, n_obj=3, seed=0, n_classes=3):
    rng = np.random.default_rng(seed)
    times = (np.arange(1, int(duration_us * rate_hz / 1e6)) * 1e6 / rate_hz).astype(np.int64)
    rows = []
    for t in times:
        for k in range(n_obj):
            w, h = rng.uniform(0.05, 0.3) * width, rng.uniform(0.05, 0.3) * height
            rows.append((t, rng.uniform(-0.1, 1) * width, rng.uniform(-0.1, 1) * height, w, h, k % n_classes, 1.0, k))
    return np.array(rows, dtype=BBOX_DTYPE)


def make_raw_dataset(
    root: Path,
    n_per_split=1,
    duration_us=1_600_000,
    width=320,
    height=180,
    n_events=200_000,
    seed=0,
    splits=("train", "val", "test"),
) -> Path:
    for si, split in enumerate(splits):
        for i in range(n_per_split):
            s = seed + 100 * si + i
            stem = root / split / f"rand_{split}_{i:04d}"
            write_events_h5(f"{stem}_td.h5", *random_events(n_events, duration_us, width, height, s), width, height)
            write_boxes(f"{stem}_bbox.npy", random_boxes(duration_us, width, height, seed=s))
    return root


def write_dat(path, x, y, p, t, width=None, height=None):
    """A Prophesee EVT 2.0 .dat file: '%' header, event type and size bytes, then t:u4 + packed x|y<<14|p<<28."""
    header = b"% Data file containing Event2D events.\n% Version 2\n"
    if width:
        header += f"% Width {width}\n% Height {height}\n".encode()
    rec = np.zeros(len(t), [("t", "<u4"), ("w", "<u4")])
    rec["t"] = t
    rec["w"] = np.asarray(x, np.uint32) | (np.asarray(y, np.uint32) << 14) | (np.asarray(p, np.uint32) << 28)
    with open(path, "wb") as f:
        f.write(header + bytes([0, 8]) + rec.tobytes())


def write_npy_events(path, x, y, p, t):
    """A structured ``.npy`` event array (x, y u2; p i2; t i8)."""
    arr = np.zeros(len(t), [("x", "<u2"), ("y", "<u2"), ("p", "<i2"), ("t", "<i8")])
    arr["x"], arr["y"], arr["p"], arr["t"] = x, y, p, t
    np.save(path, arr)
