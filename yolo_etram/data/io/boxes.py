"""Prophesee box files (``<name>_bbox.npy``): the box dtype, checked loading (legacy field names accepted) and atomic
writing. Geometric problems (flat boxes, boxes outside the frame) are RVT's filters' business (:mod:`..labels`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from yolo_etram.utils.errors import EventDataError, one_line
from yolo_etram.utils.files import save_npy_atomic

from .npy import NPY_ERRORS, load_npy

BBOX_DTYPE = np.dtype(
    [
        ("t", "<u8"),
        ("x", "<f4"),
        ("y", "<f4"),
        ("w", "<f4"),
        ("h", "<f4"),
        ("class_id", "u1"),
        ("class_confidence", "<f4"),
        ("track_id", "<u4"),
    ]
)
"""Prophesee box dtype of ``*_bbox.npy`` files: ``(x, y)`` is the top-left corner in sensor pixels, ``t`` in µs."""


def as_bbox_dtype(boxes: np.ndarray, path) -> np.ndarray:
    """``boxes`` as :data:`BBOX_DTYPE`, checked: a structured 1-D array with t, x, y, w, h and class_id (legacy ``ts``
    and
    ``confidence`` accepted), finite coordinates, integer timestamps >= 0 and class ids in 0..255."""
    names = boxes.dtype.names
    if names is None:
        raise EventDataError(
            f"{path}: box array is not a structured array (dtype {boxes.dtype}); save Prophesee boxes "
            "with fields t, x, y, w, h, class_id"
        )
    if boxes.ndim != 1:
        raise EventDataError(f"{path}: box array has shape {boxes.shape}, expected one row per box")
    if boxes.dtype != BBOX_DTYPE:
        rename = {"ts": "t", "confidence": "class_confidence"}  # legacy Prophesee/gen1 field names
        names_new = [rename.get(n, n) if rename.get(n, n) not in names else n for n in names]
        missing = [n for n in ("t", "x", "y", "w", "h", "class_id") if n not in names_new]
        if missing:
            raise EventDataError(
                f"{path}: box array lacks field(s) {', '.join(missing)} (has {', '.join(names)}); "
                "save Prophesee boxes with fields t, x, y, w, h, class_id"
            )
        fields = dict(zip(names_new, names))
        bad = [
            k
            for k in ("t", "x", "y", "w", "h", "class_id", "class_confidence", "track_id")
            if k in fields and boxes.dtype[fields[k]].kind not in "iufb"
        ]
        if bad:
            raise EventDataError(
                f"{path}: box field(s) {', '.join(bad)} are not numbers (dtype {boxes.dtype}); "
                "save Prophesee boxes with numeric fields"
            )
        t = boxes[fields["t"]]
        if t.dtype.kind == "f" and not (np.isfinite(t).all() and np.array_equal(t, np.floor(t))):
            raise EventDataError(
                f"{path}: box timestamps are fractional or not finite ({t.dtype}); store integer microseconds"
            )
        if t.dtype.kind in "if" and len(t) and t.min() < 0:
            raise EventDataError(
                f"{path}: negative box timestamp {t.min()}; timestamps must count microseconds from "
                "the recording start (>= 0): shift them"
            )
        c = boxes[fields["class_id"]]
        if len(c) and (c.dtype.kind == "f" and not np.array_equal(c, np.floor(c)) or c.min() < 0 or c.max() > 255):
            raise EventDataError(
                f"{path}: class ids must be integers in 0..255 (found {c.min()}..{c.max()}, dtype "
                f"{c.dtype}); fix the box file"
            )
        out = np.zeros(len(boxes), BBOX_DTYPE)
        for dst, src in fields.items():
            if dst in BBOX_DTYPE.names:
                out[dst] = boxes[src]
        if "class_confidence" not in names_new:
            out["class_confidence"] = 1
        boxes = out
    if len(boxes) and boxes["t"].max() >= 1 << 62:
        raise EventDataError(
            f"{path}: box timestamp {boxes['t'].max()} is out of range (negative in the source?); "
            "store microseconds from the recording start"
        )
    coords = np.stack([boxes[k] for k in ("x", "y", "w", "h")]) if len(boxes) else np.zeros(0)
    if not np.isfinite(coords).all():
        raise EventDataError(f"{path}: box coordinates hold NaN or infinite values; fix the box file")
    return boxes


def load_boxes(path: str | Path) -> np.ndarray:
    """Read a Prophesee box file (``*_bbox.npy``) as :data:`BBOX_DTYPE`, accepting the legacy ``ts``/``confidence``
    names.

    Raises :class:`EventDataError` naming the file for a missing, empty, truncated or corrupt file, a wrong extension,
    missing fields, non-numeric or non-finite values, negative timestamps and class ids outside 0..255. Geometric
    problems (zero or negative sizes, boxes outside the frame) are RVT's filters' business (:mod:`.labels`)."""
    path = Path(path)
    if path.suffix != ".npy":
        raise EventDataError(
            f"{path}: a box file must be a Prophesee .npy array (<name>_bbox.npy), not "
            f"'{path.suffix or path.name}'; convert it"
        )
    arr = load_npy(path, "box")
    try:
        boxes = np.array(arr)  # box files are small: load them (this also reads every byte the header promises)
    except NPY_ERRORS as e:
        raise EventDataError(f"{path}: cannot read the box file ({one_line(e, 300)}); re-copy or re-create it") from e
    return as_bbox_dtype(boxes, path)


def write_boxes(path: str | Path, boxes: np.ndarray) -> None:
    """Write a Prophesee ``*_bbox.npy`` file, atomically. ``boxes`` must have (or be castable to) :data:`BBOX_DTYPE`."""
    save_npy_atomic(path, as_bbox_dtype(np.asarray(boxes), path))
