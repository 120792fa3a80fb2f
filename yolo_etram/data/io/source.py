"""What every event-file format gives the reader: random access to the four event columns, in chunks, plus checks
shared by the formats (integer columns, a stored sensor size)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from yolo_etram.utils.errors import EventDataError

EVENT_FIELDS = ("x", "y", "p", "t")


class EventSource:
    """Random access to the four event columns of one file, in chunks."""

    n: int
    width: int | None
    height: int | None

    def read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        raise NotImplementedError

    def read_t(self, start: int, stop: int) -> np.ndarray:
        return self.read(start, stop)[3]

    def close(self) -> None:
        pass


def check_event_dtypes(path: Path, dtypes: dict) -> None:
    """Event columns must be integers (``p`` may be boolean): a float ``x`` or ``t`` would be silently truncated."""
    for k in EVENT_FIELDS:
        dt = np.dtype(dtypes[k])
        if dt.kind not in "iu" and not (k == "p" and dt.kind == "b"):
            raise EventDataError(
                f"{path}: events '{k}' have dtype {dt}, expected integers (x, y in pixels, p 0/1 or "
                "-1/1, t in microseconds); convert the file"
            )


def sensor_dim(path: Path, key: str, value) -> int | None:
    """A stored sensor width or height as a positive int (``None``: not stored, 0 included, as some tools write)."""
    v = np.asarray(value).reshape(-1)
    if v.size != 1 or v.dtype.kind not in "iuf" or not np.isfinite(v).all() or float(v[0]) != int(v[0]):
        raise EventDataError(
            f"{path}: stored sensor {key} {value!r} is not an integer; fix or remove it and pass the size"
        )
    v = int(v[0])
    if v < 0 or v > 1 << 16:
        raise EventDataError(f"{path}: stored sensor {key} {v} is out of range (1..65536); fix it or pass the size")
    return v or None
