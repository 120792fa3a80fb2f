"""Raw event-camera and label I/O: eTraM/Prophesee HDF5, Prophesee EVT2 ``.dat``, ``.npy`` event arrays and box files.

Readers never load a whole recording: :class:`EventReader` serves events by time window with memory bounded by the
window, whatever the file size. Repairs that RVT makes silently are made here too, and counted:

- out-of-frame events are dropped (real eTraM files hold some, e.g. ``y=33014``),
- decreasing timestamps are replaced by the running maximum (RVT's ``_correct_time``),
- polarity -1/1 becomes 0/1 (RVT's ``clip(p, 0)``).

Usage:
    >>> from yolo_etram.data.io import EventReader, load_boxes
    >>> with EventReader("train/rec_td.h5") as reader:
    ...     for x, y, p, t in reader.iter_windows([50_000, 100_000], 50_000):
    ...         ...
    >>> boxes = load_boxes("train/rec_bbox.npy")
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from yolo_etram.errors import EventDataError  # noqa: F401  (re-exported: data modules raise it)

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

EVAL_BBOX_DTYPE = np.dtype(
    {
        "names": ["t", "x", "y", "w", "h", "class_id", "track_id", "class_confidence"],
        "formats": ["<i8", "<f4", "<f4", "<f4", "<f4", "<u4", "<u4", "<f4"],
        "offsets": [0, 8, 12, 16, 20, 24, 28, 32],
        "itemsize": 40,
    }
)
"""RVT's evaluation dtype (``BBOX_DTYPE`` of its Prophesee evaluator)."""

EVENT_FIELDS = ("x", "y", "p", "t")
SENSOR_SIZES = {"gen1": (240, 304), "gen4": (720, 1280), "etram": (720, 1280)}  # (H, W) when a file does not say
RAW_SUFFIXES = ("_td.h5", "_td.dat.h5", "_td.dat", "_td.npy")


def _ensure_hdf5plugin() -> None:
    """Register the blosc and other HDF5 filters, so users never see 'Unknown compression filter 32001'."""
    try:
        import hdf5plugin  # noqa: F401
    except ImportError as e:  # pragma: no cover - hdf5plugin is a requirement
        raise EventDataError("hdf5plugin is not installed: blosc-compressed event files cannot be read; pip install hdf5plugin") from e


def open_h5(path: str | Path, mode: str = "r"):
    """Open an HDF5 file with the compression plugins registered, raising :class:`EventDataError` on failure."""
    import h5py

    _ensure_hdf5plugin()
    path = Path(path)
    if mode == "r" and not path.is_file():
        raise EventDataError(f"{path}: file not found")
    try:
        return h5py.File(path, mode)
    except OSError as e:
        raise EventDataError(f"{path}: not a readable HDF5 file ({e})") from e


def blosc(codec: str = "zstd"):
    """Blosc compression (h5py filter 32001) at level 1, as RVT writes its histograms.

    ``zstd`` with byte shuffle is RVT's choice (smallest files); ``lz4`` without shuffle writes ~3x and reads ~2x faster
    for files about twice as large. Both read anywhere hdf5plugin is installed, RVT included.
    """
    _ensure_hdf5plugin()
    import hdf5plugin

    if codec == "zstd":
        return hdf5plugin.Blosc(cname="zstd", clevel=1, shuffle=hdf5plugin.Blosc.SHUFFLE)
    if codec == "lz4":
        return hdf5plugin.Blosc(cname="lz4", clevel=1, shuffle=hdf5plugin.Blosc.NOSHUFFLE)
    raise ValueError(f"unknown codec '{codec}' (choose zstd or lz4)")


# ----------------------------------------------------------------------------------------------------------------------
# Atomic writes
# ----------------------------------------------------------------------------------------------------------------------


def atomic_path(path: str | Path) -> Path:
    """A temporary sibling of ``path`` to write to before :func:`os.replace` makes it visible."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; the final file gets the usual permissions
    return Path(tmp)


def save_npy_atomic(path: str | Path, array: np.ndarray) -> None:
    """``np.save`` that never leaves a half-written file under ``path``."""
    path = Path(path)
    tmp = atomic_path(path)
    try:
        with open(tmp, "wb") as f:
            np.save(f, array)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_npz_atomic(path: str | Path, **arrays: np.ndarray) -> None:
    """``np.savez`` that never leaves a half-written file under ``path``."""
    path = Path(path)
    tmp = atomic_path(path)
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class EventH5Writer:
    """Append events to an eTraM-layout HDF5 file (``events/{x,y,p,t,width,height}``, blosc), atomically.

    The file appears under its final name only when the writer is closed without error.

    Usage:
        >>> with EventH5Writer("rec_td.h5", width=640, height=360) as w:
        ...     w.append(x, y, p, t)
    """

    def __init__(self, path: str | Path, width: int, height: int, chunk: int = 1 << 16, compression=None):
        self.path = Path(path)
        self.tmp = atomic_path(self.path)
        self.file = open_h5(self.tmp, "w")
        group = self.file.create_group("events")
        comp = dict(compression or blosc("zstd"))
        dtypes = {"x": np.uint16, "y": np.uint16, "p": np.int16, "t": np.int64}
        self.datasets = {k: group.create_dataset(k, shape=(0,), maxshape=(None,), dtype=v, chunks=(chunk,), **comp)
                         for k, v in dtypes.items()}
        group.create_dataset("width", data=np.int64(width))
        group.create_dataset("height", data=np.int64(height))
        self.count = 0

    def append(self, x: np.ndarray, y: np.ndarray, p: np.ndarray, t: np.ndarray) -> None:
        n = len(t)
        if not (len(x) == len(y) == len(p) == n):
            raise ValueError(f"{self.path}: x, y, p, t lengths differ ({len(x)}, {len(y)}, {len(p)}, {n})")
        if n == 0:
            return
        for k, v in zip(EVENT_FIELDS, (x, y, p, t)):
            d = self.datasets[k]
            d.resize((self.count + n,))
            d[self.count:] = np.asarray(v).astype(d.dtype, copy=False)
        self.count += n

    def close(self, commit: bool = True) -> None:
        if self.file is None:
            return
        self.file.close()
        self.file = None
        if commit:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> "EventH5Writer":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(commit=exc_type is None)


def write_events_h5(path: str | Path, x, y, p, t, width: int, height: int) -> None:
    """Write a whole event recording in the eTraM HDF5 layout (blosc-compressed), atomically."""
    with EventH5Writer(path, width, height) as w:
        w.append(x, y, p, t)


def write_boxes(path: str | Path, boxes: np.ndarray) -> None:
    """Write a Prophesee ``*_bbox.npy`` file, atomically. ``boxes`` must have (or be castable to) :data:`BBOX_DTYPE`."""
    save_npy_atomic(path, _as_bbox_dtype(np.asarray(boxes), path))


# ----------------------------------------------------------------------------------------------------------------------
# Boxes
# ----------------------------------------------------------------------------------------------------------------------


def _as_bbox_dtype(boxes: np.ndarray, path) -> np.ndarray:
    if boxes.dtype == BBOX_DTYPE:
        return boxes
    names = boxes.dtype.names
    if names is None:
        raise EventDataError(f"{path}: box array is not a structured array (dtype {boxes.dtype})")
    rename = {"ts": "t", "confidence": "class_confidence"}  # legacy Prophesee/gen1 field names
    names_new = [rename.get(n, n) if rename.get(n, n) not in names else n for n in names]
    out = np.zeros(len(boxes), BBOX_DTYPE)
    missing = [n for n in ("t", "x", "y", "w", "h", "class_id") if n not in names_new]
    if missing:
        raise EventDataError(f"{path}: box array lacks field(s) {', '.join(missing)} (has {', '.join(names)})")
    for src, dst in zip(names, names_new):
        if dst in BBOX_DTYPE.names:
            out[dst] = boxes[src]
    if "class_confidence" not in names_new:
        out["class_confidence"] = 1
    return out


def load_boxes(path: str | Path) -> np.ndarray:
    """Read a Prophesee box file (``*_bbox.npy``) as :data:`BBOX_DTYPE`, accepting the legacy ``ts``/``confidence`` names."""
    path = Path(path)
    if not path.is_file():
        raise EventDataError(f"{path}: box file not found")
    try:
        boxes = np.load(path)
    except (ValueError, OSError, EOFError) as e:
        raise EventDataError(f"{path}: not a readable .npy box file ({e})") from e
    return _as_bbox_dtype(boxes, path)


# ----------------------------------------------------------------------------------------------------------------------
# Events
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class RepairCounts:
    """What the reader repaired in the events it read: out-of-frame events dropped, decreasing timestamps raised to the
    running maximum. A sequential pass (:meth:`EventReader.iter_windows`) counts each event once."""

    out_of_frame: int = 0
    decreasing_t: int = 0
    negative_p: bool = field(default=False)


class _Source:
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


class _H5Source(_Source):
    def __init__(self, path: Path):
        self.path = path
        self.file = open_h5(path)
        g = self.file.get("events")
        if g is None:
            g = self.file  # some tools write x, y, p, t at the root
        missing = [k for k in EVENT_FIELDS if k not in g]
        if missing:
            self.file.close()
            raise EventDataError(f"{path}: HDF5 file has no 'events' group with x, y, p, t (missing {', '.join(missing)})")
        self.ds = [g[k] for k in EVENT_FIELDS]
        self.n = len(self.ds[3])
        if any(len(d) != self.n for d in self.ds):
            self.file.close()
            raise EventDataError(f"{path}: events x, y, p, t have different lengths {[len(d) for d in self.ds]}")
        self.width = int(g["width"][()]) if "width" in g else None
        self.height = int(g["height"][()]) if "height" in g else None

    def read(self, start, stop):
        try:
            return tuple(d[start:stop] for d in self.ds)
        except OSError as e:
            raise EventDataError(f"{self.path}: cannot read events {start}:{stop} ({e})") from e

    def read_t(self, start, stop):
        try:
            return self.ds[3][start:stop]
        except OSError as e:
            raise EventDataError(f"{self.path}: cannot read timestamps {start}:{stop} ({e})") from e

    def close(self):
        self.file.close()


class _NpySource(_Source):
    """A structured ``.npy`` array with fields x, y, p, t (memory-mapped)."""

    def __init__(self, path: Path):
        try:
            self.arr = np.load(path, mmap_mode="r")
        except (ValueError, OSError) as e:
            raise EventDataError(f"{path}: not a readable .npy event array ({e})") from e
        names = self.arr.dtype.names or ()
        missing = [k for k in EVENT_FIELDS if k not in names and not (k == "t" and "ts" in names)]
        if missing:
            raise EventDataError(f"{path}: event array lacks field(s) {', '.join(missing)}")
        self.tname = "t" if "t" in names else "ts"
        self.n, self.width, self.height = len(self.arr), None, None

    def read(self, start, stop):
        a = self.arr[start:stop]
        return a["x"], a["y"], a["p"], a[self.tname]

    def read_t(self, start, stop):
        return self.arr[self.tname][start:stop]


EVT2_DAT_DTYPE = np.dtype([("t", "<u4"), ("_w", "<u4")])


class _DatSource(_Source):
    """Prophesee EVT 2.0 ``.dat``: ``%`` header lines, 2 bytes (event type, size), then ``t:u4`` and a packed word
    (x bits 0-13, y bits 14-27, p bit 28)."""

    def __init__(self, path: Path):
        self.width = self.height = None
        with open(path, "rb") as f:
            while True:
                pos = f.tell()
                line = f.readline()
                if not line.startswith(b"%"):
                    break
                text = line.decode("latin-1").strip()
                if "Width" in text or "Height" in text:
                    parts = text.split()
                    for key in ("Width", "Height"):
                        if key in parts and parts.index(key) + 1 < len(parts):
                            val = int(parts[parts.index(key) + 1])
                            setattr(self, key.lower(), val)
            f.seek(pos)
            header = f.read(2)
            if len(header) < 2:
                raise EventDataError(f"{path}: truncated .dat header")
            ev_size = header[1]
            if ev_size != 8:
                raise EventDataError(f"{path}: unsupported .dat event size {ev_size} (expected 8, EVT 2.0)")
            offset = pos + 2
        size = path.stat().st_size - offset
        self.n = size // 8
        self.raw = np.memmap(path, dtype=EVT2_DAT_DTYPE, mode="r", offset=offset, shape=(self.n,)) if self.n else np.zeros(0, EVT2_DAT_DTYPE)

    def read(self, start, stop):
        a = self.raw[start:stop]
        w = a["_w"]
        return (w & 0x3FFF), ((w >> 14) & 0x3FFF), ((w >> 28) & 0x1), a["t"]

    def read_t(self, start, stop):
        return self.raw["t"][start:stop]


def _open_source(path: Path) -> _Source:
    name = path.name
    if not path.is_file():
        raise EventDataError(f"{path}: event file not found")
    if path.stat().st_size == 0:
        raise EventDataError(f"{path}: event file is empty")
    if name.endswith(".h5") or name.endswith(".hdf5"):
        return _H5Source(path)
    if name.endswith(".dat"):
        return _DatSource(path)
    if name.endswith(".npy"):
        return _NpySource(path)
    raise EventDataError(f"{path}: unknown event file type (expected .h5, .dat or .npy)")


class EventReader:
    """Time-windowed reading of an event recording with bounded memory.

    Timestamps are made non-decreasing with a running maximum (RVT's repair), computed chunk by chunk so the whole
    ``t`` column is never in memory. Window bounds follow RVT: the window ending at ``τ`` holds events with
    ``τ - duration <= t <= τ`` (closed on both ends), so an event exactly on a boundary belongs to both windows.

    Args:
        path: ``*_td.h5`` / ``*.dat`` / ``*.npy`` recording.
        height, width: sensor size when the file does not store it.
        chunk: events per read when scanning timestamps.
    """

    def __init__(self, path: str | Path, height: int | None = None, width: int | None = None, chunk: int = 1 << 20):
        self.path = Path(path)
        self.src = _open_source(self.path)
        self.height = self.src.height or height
        self.width = self.src.width or width
        if self.height is None or self.width is None:
            self.close()
            raise EventDataError(f"{self.path}: the file does not store the sensor size; pass height and width")
        self.chunk = chunk
        self.repairs = RepairCounts()
        self._index_t: np.ndarray | None = None  # running-max t at every chunk start, for fast searchsorted
        self._chunk_last: np.ndarray | None = None

    def __len__(self) -> int:
        return self.src.n

    # -- timestamp index ----------------------------------------------------------------------------------------------
    def _build_index(self) -> None:
        """One pass over ``t``: the repaired (running max) value at each chunk's first and last event."""
        starts = np.arange(0, self.src.n, self.chunk)
        first = np.empty(len(starts), np.int64)
        last = np.empty(len(starts), np.int64)
        running = np.iinfo(np.int64).min
        for i, s in enumerate(starts):
            t = self.src.read_t(s, min(s + self.chunk, self.src.n)).astype(np.int64)
            if i == 0 and len(t) and t[0] < 0:
                raise EventDataError(f"{self.path}: negative timestamp {t[0]} at event 0")
            tm = np.maximum.accumulate(np.maximum(t, running))
            first[i], last[i] = tm[0], tm[-1]
            running = tm[-1]
        self._index_t, self._chunk_last = first, last

    @property
    def t_start(self) -> int:
        if self._index_t is None:
            self._build_index()
        return int(self._index_t[0]) if len(self._index_t) else 0

    @property
    def t_end(self) -> int:
        if self._index_t is None:
            self._build_index()
        return int(self._chunk_last[-1]) if len(self._chunk_last) else 0

    def _chunk_times(self, i: int) -> np.ndarray:
        s = i * self.chunk
        t = self.src.read_t(s, min(s + self.chunk, self.src.n)).astype(np.int64)
        prev = self._chunk_last[i - 1] if i > 0 else np.iinfo(np.int64).min
        return np.maximum.accumulate(np.maximum(t, prev))

    def searchsorted(self, values: np.ndarray, side: str = "left") -> np.ndarray:
        """Event indices of ``values`` in the repaired timestamp column, like ``np.searchsorted(t, values, side)``."""
        if self._index_t is None:
            self._build_index()
        values = np.asarray(values, np.int64)
        out = np.empty(values.shape, np.int64)
        if self.src.n == 0:
            out[:] = 0
            return out
        # The chunk that can hold the answer: the last chunk whose first time is < v (left) / <= v (right)
        chunk_id = np.searchsorted(self._index_t, values, side=side) - 1
        for c in np.unique(chunk_id):
            sel = chunk_id == c
            if c < 0:
                out[sel] = 0
                continue
            t = self._chunk_times(int(c))
            out[sel] = c * self.chunk + np.searchsorted(t, values[sel], side=side)
        return out

    # -- reading ------------------------------------------------------------------------------------------------------
    def _clean(self, x, y, p, t, running: int):
        """Repair one block read from the file: running-max timestamps, polarity to {0, 1}, in-frame events only.

        Returns the cleaned ``x, y, p`` (int32) and ``t`` (int64) and the running maximum after the block."""
        t = np.asarray(t).astype(np.int64)
        if len(t):
            if running == np.iinfo(np.int64).min and t[0] < 0:
                raise EventDataError(f"{self.path}: negative timestamp {t[0]} at the first event")
            if running > t[0] or np.any(t[1:] < t[:-1]):
                fixed = np.maximum.accumulate(np.maximum(t, running))
                self.repairs.decreasing_t += int(np.count_nonzero(fixed != t))
                t = fixed
            running = int(t[-1])
        x, y, p = (np.asarray(a).astype(np.int32) for a in (x, y, p))
        if len(p) and p.min() < 0:
            self.repairs.negative_p = True
            p = np.maximum(p, 0)
        if len(p) and p.max() > 1:
            raise EventDataError(f"{self.path}: polarity values up to {int(p.max())} (expected 0/1 or -1/1)")
        inside = (x >= 0) & (x < self.width) & (y >= 0) & (y < self.height)
        if not inside.all():
            self.repairs.out_of_frame += int(len(inside) - np.count_nonzero(inside))
            x, y, p, t = x[inside], y[inside], p[inside], t[inside]
        return x, y, p, t, running

    def read_range(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Events ``start:stop`` as ``x, y, p`` (int32) and ``t`` (int64), timestamps repaired, polarity in {0, 1},
        out-of-frame events dropped (both counted in :attr:`repairs`)."""
        if self._index_t is None:
            self._build_index()
        c = start // self.chunk
        running = int(self._chunk_last[c - 1]) if c > 0 else np.iinfo(np.int64).min
        if start > c * self.chunk:  # the running maximum up to ``start`` within its chunk
            running = max(running, int(self.src.read_t(c * self.chunk, start).max()))
        return self._clean(*self.src.read(start, stop), running)[:4]

    def read_window(self, t_end: int, duration: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Events with ``t_end - duration <= t <= t_end``."""
        start = int(self.searchsorted([t_end - duration], "left")[0])
        stop = int(self.searchsorted([t_end], "right")[0])
        return self.read_range(start, stop)

    def iter_windows(self, t_ends: Iterable[int], duration: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """Events of each window ``[τ - duration, τ]`` for non-decreasing end times ``τ``, in one sequential pass.

        Memory holds one read block plus one window, whatever the recording's length. Each repaired event is counted
        once in :attr:`repairs`, even where windows overlap.
        """
        t_ends = np.asarray(list(t_ends), np.int64)
        if np.any(np.diff(t_ends) < 0):
            raise ValueError("iter_windows needs non-decreasing window end times; use read_window for random access")
        n = self.src.n
        pos, running = 0, np.iinfo(np.int64).min
        buf = [np.zeros(0, np.int32)] * 3 + [np.zeros(0, np.int64)]
        for tau in t_ends.tolist():
            lo = tau - duration
            while pos < n and running <= tau:  # load until an event after tau has been read (or the file ends)
                stop = min(pos + self.chunk, n)
                *block, running = self._clean(*self.src.read(pos, stop), running)
                pos = stop
                keep = int(np.searchsorted(buf[3], lo, side="left"))
                buf = [np.concatenate([b[keep:], nb]) for b, nb in zip(buf, block)]
            start = int(np.searchsorted(buf[3], lo, side="left"))
            end = int(np.searchsorted(buf[3], tau, side="right"))
            yield tuple(b[start:end] for b in buf)
            if start:
                buf = [b[start:] for b in buf]

    def close(self) -> None:
        self.src.close()

    def __enter__(self) -> "EventReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def find_recordings(split_dir: str | Path) -> list[tuple[str, Path, Path]]:
    """Pairs ``(name, events_path, boxes_path)`` in a raw split folder, matched the way RVT matches them
    (``<name>_bbox.npy`` with ``<name>_td.h5`` or ``<name>_td.dat.h5`` etc.). A box file without its event file is an error."""
    split_dir = Path(split_dir)
    pairs = []
    for bbox in sorted(split_dir.glob("*_bbox.npy")):
        name = bbox.name[: -len("_bbox.npy")]
        candidates = [split_dir / f"{name}{s}" for s in RAW_SUFFIXES]
        events = next((c for c in candidates if c.is_file()), None)
        if events is None:
            raise EventDataError(f"{bbox}: no event file beside it (looked for {name}_td.h5, _td.dat.h5, _td.dat, _td.npy)")
        pairs.append((name, events, bbox))
    return pairs
