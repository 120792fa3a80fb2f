"""``.npy`` files read without trusting their header: event arrays (structured, fields x, y, p, t) memory-mapped."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from yolo_etram.utils.errors import EventDataError, one_line

from .source import EVENT_FIELDS, EventSource, check_event_dtypes

# numpy raises nearly anything on a corrupt .npy header (ValueError, SyntaxError, tokenize.TokenError, TypeError,
# OverflowError, ...): for the two calls that parse and map a file, any Exception means "not a readable .npy file"
NPY_ERRORS = (Exception,)


def load_npy(path: Path, what: str) -> np.ndarray:
    """Memory-map a ``.npy`` file (the header's shape is checked against the file size, so a corrupt header cannot make
    numpy allocate terabytes), raising :class:`EventDataError` naming the file when it is not a readable array."""
    if not path.is_file():
        raise EventDataError(f"{path}: {what} file not found; check the path")
    if path.stat().st_size == 0:
        raise EventDataError(f"{path}: {what} file is empty; re-copy or re-create it")
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except NPY_ERRORS as e:
        raise EventDataError(
            f"{path}: not a readable .npy {what} file, truncated or corrupt ({one_line(e, 300)}); "
            "re-copy or re-create it"
        ) from e
    if not isinstance(arr, np.ndarray):  # np.load returns an NpzFile for .npz content
        raise EventDataError(f"{path}: holds an .npz archive, not a .npy {what} array; save one array with np.save")
    return arr


class NpyEventSource(EventSource):
    """A structured ``.npy`` array with fields x, y, p, t (memory-mapped)."""

    def __init__(self, path: Path):
        self.path = path
        self.arr = load_npy(path, "event")
        names = self.arr.dtype.names or ()
        missing = [k for k in EVENT_FIELDS if k not in names and not (k == "t" and "ts" in names)]
        if missing:
            raise EventDataError(
                f"{path}: event array lacks field(s) {', '.join(missing)} (dtype {self.arr.dtype}); "
                "save a structured array with fields x, y, p, t"
            )
        if self.arr.ndim != 1:
            raise EventDataError(f"{path}: event array has shape {self.arr.shape}, expected one row per event")
        self.tname = "t" if "t" in names else "ts"
        check_event_dtypes(path, {k: self.arr.dtype[self.tname if k == "t" else k] for k in EVENT_FIELDS})
        self.n, self.width, self.height = len(self.arr), None, None

    def read(self, start, stop):
        a = self.arr[start:stop]
        return a["x"], a["y"], a["p"], a[self.tname]

    def read_t(self, start, stop):
        return self.arr[self.tname][start:stop]
