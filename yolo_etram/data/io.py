"""Raw event-camera and label I/O: eTraM/Prophesee HDF5, Prophesee EVT2 ``.dat``, ``.npy`` event arrays and box files.

Readers never load a whole recording: :class:`EventReader` serves events by time window with memory bounded by the
window, whatever the file size. Repairs that RVT makes silently are made here too, and counted:

- out-of-frame events are dropped (real eTraM files hold some, e.g. ``y=33014``),
- decreasing timestamps are replaced by the running maximum (RVT's ``_correct_time``),
- polarity -1/1 becomes 0/1 (RVT's ``clip(p, 0)``).

What cannot be repaired raises :class:`EventDataError` naming the file, the problem and the fix: missing, empty,
truncated or corrupt files (every low-level h5py/numpy error is wrapped), unknown extensions, HDF5 files without
``events/{x,y,p,t}`` or with chunks missing, non-integer columns, a negative first timestamp, an unavailable
compression filter (hdf5plugin), box files without the Prophesee fields or with NaN, negative times or bad class ids.

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
        raise EventDataError(f"{path}: file not found; check the path")
    if mode == "r" and path.stat().st_size == 0:
        raise EventDataError(f"{path}: file is empty; re-copy or re-create it")
    try:
        return h5py.File(path, mode)
    except (OSError, ValueError, RuntimeError, KeyError) as e:  # h5py raises these for truncated or corrupt files
        raise EventDataError(f"{path}: not a readable HDF5 file, truncated or corrupt ({_first_line(e)}); "
                             "re-copy or re-create it") from e


def _first_line(e: BaseException) -> str:
    """An exception's message on one line (HDF5 error stacks span several)."""
    text = " ".join(str(e).split())
    return text[:300] + ("..." if len(text) > 300 else "")


FILTER_MISSING_HINT = "pip install hdf5plugin (blosc and the other compression filters) and import it before h5py reads"


def h5_read_error(path: Path, what: str, e: BaseException) -> EventDataError:
    """A failed HDF5 read as an :class:`EventDataError`: a missing compression filter gets its fix, the rest is corrupt."""
    msg = _first_line(e)
    low = msg.lower()
    # a filter that is not registered: "can't open directory (.../plugin)" (HDF5 1.10+) or "required filter ... is not
    # registered" (older); "filter returned failure during read" is corrupt compressed data
    if any(s in low for s in ("can't open directory", "plugin", "not registered")):
        return EventDataError(f"{path}: cannot decompress {what}: an HDF5 compression filter is not available ({msg}); "
                              f"{FILTER_MISSING_HINT}")
    return EventDataError(f"{path}: cannot read {what}, the file is truncated or corrupt ({msg}); re-copy or re-create it")


def check_h5_filters(path: Path, name: str, dataset) -> None:
    """Raise a one-line :class:`EventDataError` if ``dataset`` needs an HDF5 filter (e.g. blosc, 32001) that is not
    registered, instead of h5py's 'can't open directory /usr/local/hdf5/lib/plugin' on the first read."""
    import h5py

    plist = dataset.id.get_create_plist()
    for i in range(plist.get_nfilters()):
        code, _, _, fname = plist.get_filter(i)
        if not h5py.h5z.filter_avail(code):
            fname = fname.decode("latin-1", "replace") if isinstance(fname, bytes) else str(fname)
            raise EventDataError(f"{path}: {name} is compressed with HDF5 filter {code} ({fname}), which is not "
                                 f"available; {FILTER_MISSING_HINT}")


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


def save_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` so that a reader sees the old file or the new one, never half of it."""
    path = Path(path)
    tmp = atomic_path(path)
    try:
        tmp.write_text(text)
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
    """``boxes`` as :data:`BBOX_DTYPE`, checked: a structured 1-D array with t, x, y, w, h and class_id (legacy ``ts`` and
    ``confidence`` accepted), finite coordinates, integer timestamps >= 0 and class ids in 0..255."""
    names = boxes.dtype.names
    if names is None:
        raise EventDataError(f"{path}: box array is not a structured array (dtype {boxes.dtype}); save Prophesee boxes "
                             "with fields t, x, y, w, h, class_id")
    if boxes.ndim != 1:
        raise EventDataError(f"{path}: box array has shape {boxes.shape}, expected one row per box")
    if boxes.dtype != BBOX_DTYPE:
        rename = {"ts": "t", "confidence": "class_confidence"}  # legacy Prophesee/gen1 field names
        names_new = [rename.get(n, n) if rename.get(n, n) not in names else n for n in names]
        missing = [n for n in ("t", "x", "y", "w", "h", "class_id") if n not in names_new]
        if missing:
            raise EventDataError(f"{path}: box array lacks field(s) {', '.join(missing)} (has {', '.join(names)}); "
                                 "save Prophesee boxes with fields t, x, y, w, h, class_id")
        fields = dict(zip(names_new, names))
        bad = [k for k in ("t", "x", "y", "w", "h", "class_id", "class_confidence", "track_id")
               if k in fields and boxes.dtype[fields[k]].kind not in "iufb"]
        if bad:
            raise EventDataError(f"{path}: box field(s) {', '.join(bad)} are not numbers (dtype {boxes.dtype}); "
                                 "save Prophesee boxes with numeric fields")
        t = boxes[fields["t"]]
        if t.dtype.kind == "f" and not (np.isfinite(t).all() and np.array_equal(t, np.floor(t))):
            raise EventDataError(f"{path}: box timestamps are fractional or not finite ({t.dtype}); store integer "
                                 "microseconds")
        if t.dtype.kind in "if" and len(t) and t.min() < 0:
            raise EventDataError(f"{path}: negative box timestamp {t.min()}; timestamps must count microseconds from "
                                 "the recording start (>= 0): shift them")
        c = boxes[fields["class_id"]]
        if len(c) and (c.dtype.kind == "f" and not np.array_equal(c, np.floor(c)) or c.min() < 0 or c.max() > 255):
            raise EventDataError(f"{path}: class ids must be integers in 0..255 (found {c.min()}..{c.max()}, dtype "
                                 f"{c.dtype}); fix the box file")
        out = np.zeros(len(boxes), BBOX_DTYPE)
        for dst, src in fields.items():
            if dst in BBOX_DTYPE.names:
                out[dst] = boxes[src]
        if "class_confidence" not in names_new:
            out["class_confidence"] = 1
        boxes = out
    if len(boxes) and boxes["t"].max() >= 1 << 62:
        raise EventDataError(f"{path}: box timestamp {boxes['t'].max()} is out of range (negative in the source?); "
                             "store microseconds from the recording start")
    coords = np.stack([boxes[k] for k in ("x", "y", "w", "h")]) if len(boxes) else np.zeros(0)
    if not np.isfinite(coords).all():
        raise EventDataError(f"{path}: box coordinates hold NaN or infinite values; fix the box file")
    return boxes


def load_boxes(path: str | Path) -> np.ndarray:
    """Read a Prophesee box file (``*_bbox.npy``) as :data:`BBOX_DTYPE`, accepting the legacy ``ts``/``confidence`` names.

    Raises :class:`EventDataError` naming the file for a missing, empty, truncated or corrupt file, a wrong extension,
    missing fields, non-numeric or non-finite values, negative timestamps and class ids outside 0..255. Geometric
    problems (zero or negative sizes, boxes outside the frame) are RVT's filters' business (:mod:`.labels`)."""
    path = Path(path)
    if path.suffix != ".npy":
        raise EventDataError(f"{path}: a box file must be a Prophesee .npy array (<name>_bbox.npy), not "
                             f"'{path.suffix or path.name}'; convert it")
    arr = _load_npy(path, "box")
    try:
        boxes = np.array(arr)  # box files are small: load them (this also reads every byte the header promises)
    except _NPY_ERRORS as e:
        raise EventDataError(f"{path}: cannot read the box file ({_first_line(e)}); re-copy or re-create it") from e
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


def _check_event_dtypes(path: Path, dtypes: dict) -> None:
    """Event columns must be integers (``p`` may be boolean): a float ``x`` or ``t`` would be silently truncated."""
    for k in EVENT_FIELDS:
        dt = np.dtype(dtypes[k])
        if dt.kind not in "iu" and not (k == "p" and dt.kind == "b"):
            raise EventDataError(f"{path}: events '{k}' have dtype {dt}, expected integers (x, y in pixels, p 0/1 or "
                                 "-1/1, t in microseconds); convert the file")


def _sensor_dim(path: Path, key: str, value) -> int | None:
    """A stored sensor width or height as a positive int (``None``: not stored, 0 included, as some tools write)."""
    v = np.asarray(value).reshape(-1)
    if v.size != 1 or v.dtype.kind not in "iuf" or not np.isfinite(v).all() or float(v[0]) != int(v[0]):
        raise EventDataError(f"{path}: stored sensor {key} {value!r} is not an integer; fix or remove it and pass the size")
    v = int(v[0])
    if v < 0 or v > 1 << 16:
        raise EventDataError(f"{path}: stored sensor {key} {v} is out of range (1..65536); fix it or pass the size")
    return v or None


def _check_h5_chunks(path: Path, name: str, d) -> None:
    """A chunked 1-D column must store every chunk its length needs: HDF5 reads missing chunks as zeros, silently (a
    writer killed mid-way, or a corrupt length)."""
    if d.chunks is None or not hasattr(d.id, "get_num_chunks"):
        return
    need = -(-d.shape[0] // d.chunks[0])
    have = d.id.get_num_chunks()
    if have < need:
        raise EventDataError(f"{path}: {name} holds {d.shape[0]} events but only {have} of its {need} chunks are stored; "
                             "the file is truncated or corrupt, re-copy or re-create it")


class _H5Source(_Source):
    def __init__(self, path: Path):
        import h5py

        self.path = path
        self.file = open_h5(path)
        try:
            g = self.file.get("events")
            if not isinstance(g, h5py.Group):
                g = self.file  # some tools write x, y, p, t at the root
            missing = [k for k in EVENT_FIELDS if not isinstance(g.get(k), h5py.Dataset)]
            if missing:
                raise EventDataError(f"{path}: HDF5 file has no 'events' group with x, y, p, t datasets (missing "
                                     f"{', '.join(missing)}); write events/x, events/y, events/p, events/t")
            self.ds = [g[k] for k in EVENT_FIELDS]
            bad = [k for k, d in zip(EVENT_FIELDS, self.ds) if d.ndim != 1]
            if bad:
                raise EventDataError(f"{path}: events {', '.join(bad)} are not 1-D arrays (shapes "
                                     f"{[d.shape for d in self.ds]}); write one value per event")
            _check_event_dtypes(path, {k: d.dtype for k, d in zip(EVENT_FIELDS, self.ds)})
            self.n = len(self.ds[3])
            if any(len(d) != self.n for d in self.ds):
                raise EventDataError(f"{path}: events x, y, p, t have different lengths {[len(d) for d in self.ds]}; "
                                     "the file is truncated or corrupt, re-copy or re-create it")
            for k, d in zip(EVENT_FIELDS, self.ds):
                check_h5_filters(path, f"events/{k}", d)
                _check_h5_chunks(path, f"events/{k}", d)
            self.width, self.height = (_sensor_dim(path, k, g[k][()]) if isinstance(g.get(k), h5py.Dataset) else None
                                       for k in ("width", "height"))
        except EventDataError:
            self.file.close()
            raise
        except (OSError, KeyError, ValueError, TypeError, RuntimeError, AttributeError) as e:  # corrupt metadata
            self.file.close()
            raise EventDataError(f"{path}: corrupt HDF5 event file ({_first_line(e)}); re-copy or re-create it") from e

    def _read(self, cols, start, stop, what):
        try:
            return tuple(d[start:stop] for d in cols)
        except (OSError, KeyError, ValueError, TypeError, RuntimeError) as e:
            raise h5_read_error(self.path, f"{what} {start}:{stop}", e) from e

    def read(self, start, stop):
        return self._read(self.ds, start, stop, "events")

    def read_t(self, start, stop):
        return self._read(self.ds[3:], start, stop, "timestamps")[0]

    def close(self):
        self.file.close()


# numpy raises nearly anything on a corrupt .npy header (ValueError, SyntaxError, tokenize.TokenError, TypeError,
# OverflowError, ...): for the two calls that parse and map a file, any Exception means "not a readable .npy file"
_NPY_ERRORS = (Exception,)


def _load_npy(path: Path, what: str) -> np.ndarray:
    """Memory-map a ``.npy`` file (the header's shape is checked against the file size, so a corrupt header cannot make
    numpy allocate terabytes), raising :class:`EventDataError` naming the file when it is not a readable array."""
    if not path.is_file():
        raise EventDataError(f"{path}: {what} file not found; check the path")
    if path.stat().st_size == 0:
        raise EventDataError(f"{path}: {what} file is empty; re-copy or re-create it")
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except _NPY_ERRORS as e:
        raise EventDataError(f"{path}: not a readable .npy {what} file, truncated or corrupt ({_first_line(e)}); "
                             "re-copy or re-create it") from e
    if not isinstance(arr, np.ndarray):  # np.load returns an NpzFile for .npz content
        raise EventDataError(f"{path}: holds an .npz archive, not a .npy {what} array; save one array with np.save")
    return arr


class _NpySource(_Source):
    """A structured ``.npy`` array with fields x, y, p, t (memory-mapped)."""

    def __init__(self, path: Path):
        self.path = path
        self.arr = _load_npy(path, "event")
        names = self.arr.dtype.names or ()
        missing = [k for k in EVENT_FIELDS if k not in names and not (k == "t" and "ts" in names)]
        if missing:
            raise EventDataError(f"{path}: event array lacks field(s) {', '.join(missing)} (dtype {self.arr.dtype}); "
                                 "save a structured array with fields x, y, p, t")
        if self.arr.ndim != 1:
            raise EventDataError(f"{path}: event array has shape {self.arr.shape}, expected one row per event")
        self.tname = "t" if "t" in names else "ts"
        _check_event_dtypes(path, {k: self.arr.dtype[self.tname if k == "t" else k] for k in EVENT_FIELDS})
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
        try:
            offset = self._parse_header(path)
        except EventDataError:
            raise
        except (ValueError, OverflowError) as e:
            raise EventDataError(f"{path}: corrupt .dat header ({_first_line(e)}); re-copy or re-export it") from e
        size = path.stat().st_size - offset
        self.n = size // 8
        try:
            self.raw = (np.memmap(path, dtype=EVT2_DAT_DTYPE, mode="r", offset=offset, shape=(self.n,)) if self.n
                        else np.zeros(0, EVT2_DAT_DTYPE))
        except (ValueError, OSError) as e:
            raise EventDataError(f"{path}: cannot map the .dat events ({_first_line(e)}); re-copy or re-export it") from e

    def _parse_header(self, path: Path) -> int:
        """Read the ``%`` header lines (sensor size) and the event type/size bytes; returns the offset of the events."""
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
                            setattr(self, key.lower(), _sensor_dim(path, key.lower(), int(parts[parts.index(key) + 1])))
            f.seek(pos)
            header = f.read(2)
            if len(header) < 2:
                raise EventDataError(f"{path}: truncated .dat file (no event type and size after the header); "
                                     "re-copy or re-export it")
            ev_size = header[1]
            if ev_size != 8:
                raise EventDataError(f"{path}: unsupported .dat event size {ev_size} (expected 8, EVT 2.0) or a corrupt "
                                     "header; convert the file to EVT 2.0 .dat or HDF5")
            return pos + 2

    def read(self, start, stop):
        a = self.raw[start:stop]
        w = a["_w"]
        return (w & 0x3FFF), ((w >> 14) & 0x3FFF), ((w >> 28) & 0x1), a["t"]

    def read_t(self, start, stop):
        return self.raw["t"][start:stop]


def _open_source(path: Path) -> _Source:
    name = path.name
    if not path.is_file():
        raise EventDataError(f"{path}: event file not found; check the path")
    if path.stat().st_size == 0:
        raise EventDataError(f"{path}: event file is empty; re-copy or re-create it")
    if name.endswith(".h5") or name.endswith(".hdf5"):
        return _H5Source(path)
    if name.endswith(".dat"):
        return _DatSource(path)
    if name.endswith(".npy"):
        return _NpySource(path)
    raise EventDataError(f"{path}: unknown event file type '{path.suffix}' (expected .h5, .hdf5, .dat or .npy); "
                         "convert or rename it")


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
        if not (1 <= int(self.height) <= 1 << 16 and 1 <= int(self.width) <= 1 << 16):
            self.close()
            raise EventDataError(f"{self.path}: sensor size {self.width}x{self.height} is out of range; pass height and "
                                 "width")
        self.height, self.width = int(self.height), int(self.width)
        self.chunk = chunk
        self.repairs = RepairCounts()
        self._index_t: np.ndarray | None = None  # running-max t at every chunk start, for fast searchsorted
        self._chunk_last: np.ndarray | None = None

    def __len__(self) -> int:
        return self.src.n

    def _negative_t(self, t0: int) -> str:
        return (f"{self.path}: negative timestamp {int(t0)} at the first event; timestamps must count microseconds from "
                "the recording start (>= 0): shift them")

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
                raise EventDataError(self._negative_t(t[0]))
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

    def time_bounds(self, sample: int = 1 << 16) -> tuple[int, int] | None:
        """The first event's timestamp and the largest of the last ``sample`` ones: the recording's time span read from
        its two ends only (cheap; exact unless timestamps decrease by more than ``sample`` events). None: no events."""
        n = self.src.n
        if n == 0:
            return None
        first = int(self.src.read_t(0, 1)[0])
        if first < 0:
            raise EventDataError(self._negative_t(first))
        return first, max(first, int(np.asarray(self.src.read_t(max(n - sample, 0), n)).astype(np.int64).max()))

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
                raise EventDataError(self._negative_t(t[0]))
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
            raise EventDataError(f"{self.path}: polarity values up to {int(p.max())} (expected 0/1 or -1/1); "
                                 "the file is corrupt or not an event recording")
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
    (``<name>_bbox.npy`` with ``<name>_td.h5`` or ``<name>_td.dat.h5`` etc.). A box file without its event file, or an
    event file without its box file, is an error naming the file: a recording is never skipped silently."""
    split_dir = Path(split_dir)
    pairs = []
    for bbox in sorted(split_dir.glob("*_bbox.npy")):
        name = bbox.name[: -len("_bbox.npy")]
        candidates = [split_dir / f"{name}{s}" for s in RAW_SUFFIXES]
        events = next((c for c in candidates if c.is_file()), None)
        if events is None:
            raise EventDataError(f"{bbox}: no event file beside it (looked for {name}_td.h5, _td.dat.h5, _td.dat, "
                                 "_td.npy); add the recording or move the box file out of the folder")
        pairs.append((name, events, bbox))
    paired = {p[0] for p in pairs}
    for f in sorted(split_dir.iterdir()) if split_dir.is_dir() else []:
        suffix = next((s for s in sorted(RAW_SUFFIXES, key=len, reverse=True) if f.name.endswith(s)), None)
        if suffix and f.is_file() and f.name[: -len(suffix)] not in paired:
            raise EventDataError(f"{f}: no box file beside it (looked for {f.name[: -len(suffix)]}_bbox.npy); add the "
                                 "labels or move the recording out of the folder")
    return pairs
