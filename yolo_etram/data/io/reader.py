"""``EventReader``: any event file by time window, with memory bounded by the window, and the pairing of recordings
with their box files in a raw split folder."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from yolo_etram.utils.errors import EventDataError

from .dat import DatEventSource
from .h5 import H5EventSource
from .npy import NpyEventSource
from .raw import RawEventSource
from .source import EventSource

SENSOR_SIZES = {"gen1": (240, 304), "gen4": (720, 1280), "etram": (720, 1280)}  # (H, W) when a file does not say
RAW_SUFFIXES = ("_td.h5", "_td.dat.h5", "_td.dat", "_td.npy", "_td.raw", ".raw")
"""What follows ``<name>`` in a recording paired with ``<name>_bbox.npy`` (camera files: ``<name>.raw``)."""
EVENT_FILE_SUFFIXES = (".h5", ".hdf5", ".dat", ".npy", ".raw")


@dataclass
class RepairCounts:
    """What the reader repaired in the events it read: out-of-frame events dropped, decreasing timestamps raised to the
    running maximum. A sequential pass (:meth:`EventReader.iter_windows`) counts each event once."""

    out_of_frame: int = 0
    decreasing_t: int = 0
    negative_p: bool = field(default=False)


def open_source(path: Path) -> EventSource:
    name = path.name
    if not path.is_file():
        raise EventDataError(f"{path}: event file not found; check the path")
    if path.stat().st_size == 0:
        raise EventDataError(f"{path}: event file is empty; re-copy or re-create it")
    if name.endswith(".h5") or name.endswith(".hdf5"):
        return H5EventSource(path)
    if name.endswith(".dat"):
        return DatEventSource(path)
    if name.endswith(".npy"):
        return NpyEventSource(path)
    if name.endswith(".raw"):
        return RawEventSource(path)
    raise EventDataError(
        f"{path}: unknown event file type '{path.suffix}' (expected .h5, .hdf5, .dat, .npy or .raw); convert or "
        "rename it"
    )


class EventReader:
    """Time-windowed reading of an event recording with bounded memory.

    Timestamps are made non-decreasing with a running maximum (RVT's repair), computed chunk by chunk so the whole
    ``t`` column is never in memory. Window bounds follow RVT: the window ending at ``τ`` holds events with
    ``τ - duration <= t <= τ`` (closed on both ends), so an event exactly on a boundary belongs to both windows.

    Args:
        path: ``*_td.h5`` / ``*.dat`` / ``*.npy`` / ``*.raw`` recording.
        height, width: sensor size when the file does not store it.
        chunk: events per read when scanning timestamps (a ``.raw`` file reads by its own chunks of words).
    """

    def __init__(self, path: str | Path, height: int | None = None, width: int | None = None, chunk: int = 1 << 20):
        self.path = Path(path)
        self.src = open_source(self.path)
        self.height = self.src.height or height
        self.width = self.src.width or width
        if self.height is None or self.width is None:
            self.close()
            raise EventDataError(f"{self.path}: the file does not store the sensor size; pass height and width")
        if not (1 <= int(self.height) <= 1 << 16 and 1 <= int(self.width) <= 1 << 16):
            self.close()
            raise EventDataError(
                f"{self.path}: sensor size {self.width}x{self.height} is out of range; pass height and width"
            )
        self.height, self.width = int(self.height), int(self.width)
        self.chunk = chunk
        self.repairs = RepairCounts()
        self._index_t: np.ndarray | None = None  # running-max t at every chunk start, for fast searchsorted
        self._chunk_last: np.ndarray | None = None
        self._starts: np.ndarray | None = None  # event index where each chunk starts

    def __len__(self) -> int:
        return self.src.n

    def _negative_t(self, t0: int) -> str:
        return (
            f"{self.path}: negative timestamp {int(t0)} at the first event; timestamps must count microseconds from "
            "the recording start (>= 0): shift them"
        )

    # -- timestamp index ----------------------------------------------------------------------------------------------
    def _build_index(self) -> None:
        """The repaired (running max) time at each chunk's first and last event: one pass over ``t``, or, for a
        source that indexes itself (``.raw``: its chunks' times from one scan), from that index."""
        if hasattr(self.src, "chunk_starts"):
            starts = self.src.chunk_starts
            t_first, t_max = self.src.chunk_times
            if len(t_first) and t_first[0] < 0:
                raise EventDataError(self._negative_t(t_first[0]))
            last = np.maximum.accumulate(t_max) if len(t_max) else t_max
            first = np.maximum(t_first, np.concatenate([[np.iinfo(np.int64).min], last[:-1]]))
            self._starts, self._index_t, self._chunk_last = starts, first, last
            return
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
        self._starts, self._index_t, self._chunk_last = starts, first, last

    def _chunk_stop(self, i: int) -> int:
        return int(self._starts[i + 1]) if i + 1 < len(self._starts) else self.src.n

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
        t = self.src.read_t(int(self._starts[i]), self._chunk_stop(i)).astype(np.int64)
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
            out[sel] = self._starts[c] + np.searchsorted(t, values[sel], side=side)
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
            raise EventDataError(
                f"{self.path}: polarity values up to {int(p.max())} (expected 0/1 or -1/1); "
                "the file is corrupt or not an event recording"
            )
        inside = (x >= 0) & (x < self.width) & (y >= 0) & (y < self.height)
        if not inside.all():
            self.repairs.out_of_frame += int(len(inside) - np.count_nonzero(inside))
            x, y, p, t = x[inside], y[inside], p[inside], t[inside]
        return x, y, p, t, running

    def read_range(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Events ``start:stop`` as ``x, y, p`` (int32) and ``t`` (int64), timestamps repaired, polarity in {0, 1},
        out-of-frame events dropped (both counted in :attr:`repairs`)."""
        return self._clean(*self.src.read(start, stop), self._running_max_before(start))[:4]

    def _blocks_from(self, pos: int):
        """The file's events from event ``pos`` on, a block at a time (a self-indexing source by its own chunks)."""
        n = self.src.n
        indexed = hasattr(self.src, "chunk_starts")
        if indexed and self._starts is None:
            self._build_index()
        while pos < n:
            if indexed:
                stop = self._chunk_stop(int(np.searchsorted(self._starts, pos, side="right")) - 1)
            else:
                stop = min(pos + self.chunk, n)
            yield self.src.read(pos, stop)
            pos = stop

    def _running_max_before(self, start: int) -> int:
        """The running maximum of the timestamps before event ``start`` (the repair's state there)."""
        if self._index_t is None:
            self._build_index()
        if not len(self._starts):  # no events
            return np.iinfo(np.int64).min
        c = max(int(np.searchsorted(self._starts, start, side="right")) - 1, 0)
        running = int(self._chunk_last[c - 1]) if c > 0 else np.iinfo(np.int64).min
        if start > self._starts[c]:  # the running maximum up to ``start`` within its chunk
            running = max(running, int(self.src.read_t(int(self._starts[c]), start).max()))
        return running

    def read_window(self, t_end: int, duration: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Events with ``t_end - duration <= t <= t_end``."""
        start = int(self.searchsorted([t_end - duration], "left")[0])
        stop = int(self.searchsorted([t_end], "right")[0])
        return self.read_range(start, stop)

    def iter_windows(
        self, t_ends: Iterable[int], duration: int, seek: bool = False, count: int | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """Events of each window ``[τ - duration, τ]`` for non-decreasing end times ``τ``, in one sequential pass.

        ``count``: RVT's constant-count windows instead, the last ``count`` events at or before ``τ``
        (``max(end - count, 0):end`` with ``end = searchsorted(t, τ, 'right')``, as RVT's ``preprocess_dataset``).

        Memory holds one read block plus one window, whatever the recording's length. Each repaired event is counted
        once in :attr:`repairs`, even where windows overlap. ``seek``: start reading at the first window through the
        time index instead of at the file's start (a time range late in a long recording).
        """
        t_ends = np.asarray(list(t_ends), np.int64)
        if np.any(np.diff(t_ends) < 0):
            raise ValueError("iter_windows needs non-decreasing window end times; use read_window for random access")
        if not seek and hasattr(self.src, "iter_chunks"):  # a .raw file: decoded in order, no index needed
            blocks, n = self.src.iter_chunks(), None
        else:
            n = self.src.n
            pos = 0
            if seek and len(t_ends):
                pos = int(self.searchsorted([t_ends[0] - duration], "left")[0])
                if count is not None:
                    pos = max(int(self.searchsorted([t_ends[0]], "right")[0]) - count, 0)
            blocks = self._blocks_from(pos)
        running = self._running_max_before(pos) if seek and len(t_ends) and n is not None else np.iinfo(np.int64).min
        more = True
        buf = [np.zeros(0, np.int32)] * 3 + [np.zeros(0, np.int64)]
        for tau in t_ends.tolist():
            lo = tau - duration
            while more and running <= tau:  # load until an event after tau has been read (or the file ends)
                block = next(blocks, None)
                if block is None:
                    more = False
                    break
                *block, running = self._clean(*block, running)
                keep = int(np.searchsorted(buf[3], lo, side="left")) if count is None else 0
                buf = [np.concatenate([b[keep:], nb]) for b, nb in zip(buf, block)]
            end = int(np.searchsorted(buf[3], tau, side="right"))
            if count is None:
                start = int(np.searchsorted(buf[3], lo, side="left"))
            else:  # the buffer starts at or before the previous window's start, which is at or before this one's
                start = max(end - count, 0)
            yield tuple(b[start:end] for b in buf)
            if start:
                buf = [b[start:] for b in buf]

    def close(self) -> None:
        self.src.close()

    def __enter__(self) -> EventReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def find_recordings(split_dir: str | Path) -> list[tuple[str, Path, Path]]:
    """Pairs ``(name, events_path, boxes_path)`` in a raw split folder, matched the way RVT matches them
    (``<name>_bbox.npy`` with ``<name>_td.h5``, ``<name>_td.dat.h5``, ..., or a camera's ``<name>.raw``). A box file
    without its event file, or an
    event file without its box file, is an error naming the file: a recording is never skipped silently."""
    split_dir = Path(split_dir)
    pairs = []
    for bbox in sorted(split_dir.glob("*_bbox.npy")):
        name = bbox.name[: -len("_bbox.npy")]
        candidates = [split_dir / f"{name}{s}" for s in RAW_SUFFIXES]
        events = next((c for c in candidates if c.is_file()), None)
        if events is None:
            raise EventDataError(
                f"{bbox}: no event file beside it (looked for {name}{', '.join(RAW_SUFFIXES)}); add the recording or "
                "move the box file out of the folder"
            )
        pairs.append((name, events, bbox))
    paired = {p[0] for p in pairs}
    for f in sorted(split_dir.iterdir()) if split_dir.is_dir() else []:
        suffix = next((s for s in sorted(RAW_SUFFIXES, key=len, reverse=True) if f.name.endswith(s)), None)
        if suffix and f.is_file() and f.name[: -len(suffix)] not in paired:
            raise EventDataError(
                f"{f}: no box file beside it (looked for {f.name[: -len(suffix)]}_bbox.npy); add the "
                "labels or move the recording out of the folder"
            )
    return pairs
