"""Event windows for prediction: frames built on the fly from raw recordings with the model's event settings (the same
code and bits as ``prepare``, for every representation and window rule), or read from prepared sequences, one window
at a time with bounded memory.

A source is a recording (``*_td.h5``, ``*.dat``, ``*.npy``, a camera's ``*.raw``), a prepared sequence folder, or a
folder of either. Several sources at once (cameras on one box) step in lockstep through :class:`MultiStreamSource`.

Usage:
    >>> from yolo_etram.data.event_settings import EventSettings
    >>> from yolo_etram.data.stream import EventWindowSource
    >>> for win in EventWindowSource("rec_td.h5", EventSettings(downsample=2)):
    ...     win.hist, win.t_end, win.is_first  # uint8 (20, 360, 640), µs, True at each recording's first window
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from yolo_etram.utils.errors import EventDataError

from .event_settings import EventSettings
from .io import RAW_SUFFIXES, EventReader
from .io.reader import EVENT_FILE_SUFFIXES
from .prepared import REPR_ROOT, PreparedSequence, list_sequences


@dataclass
class EventWindow:
    hist: np.ndarray  # the representation's frame (C, H', W') at the stored (possibly downsampled) resolution
    t_end: int  # window end time, µs
    index: int  # window number within its recording
    total: int  # windows in the recording
    source: Path  # the recording or prepared sequence
    is_first: bool  # first window of its recording: the recurrent state must start fresh
    sensor_hw: tuple[int, int]  # full sensor resolution


def window_ends(t_first: int, t_last: int, step_us: int) -> np.ndarray:
    """End times of the windows of a recording whose events span ``t_first..t_last`` µs: every ``step_us`` from the
    first multiple after the first event to the first one at or past the last event."""
    first = (int(t_first) // step_us + 1) * step_us
    return np.arange(first, int(t_last) + step_us, step_us, dtype=np.int64)


def is_event_source(source) -> bool:
    """True for a path that this module can read (a recording, a prepared sequence, or a folder of them)."""
    if not isinstance(source, (str, Path)):
        return False
    p = Path(source)
    if p.is_file():
        return p.suffix in EVENT_FILE_SUFFIXES and not p.name.endswith("_bbox.npy")
    return p.is_dir() and bool(_expand(p))


def _expand(p: Path) -> list[Path]:
    if p.is_file():
        return [p]
    if (p / "labels_v2").is_dir() or (p / "event_representations_v2").is_dir():
        return [p]
    seqs = list_sequences(p)
    if seqs:
        return seqs
    return sorted(f for f in p.iterdir() if f.is_file() and f.name.endswith(RAW_SUFFIXES))


class EventWindowSource:
    """Iterate the windows of one or more recordings or prepared sequences.

    Args:
        source: file or folder.
        settings: how raw recordings become windows (default RVT's: 50 ms stacked histograms, full resolution);
            prepared sequences must have been prepared with them (a mismatch is an error naming both), or, when
            ``settings`` is None, are read as they are.
        start_us, end_us: only windows ending within this time range.
        height, width: sensor size for files that do not store it.
    """

    def __init__(
        self,
        source,
        settings: EventSettings | None = None,
        start_us: int | None = None,
        end_us: int | None = None,
        height: int | None = None,
        width: int | None = None,
    ):
        self.paths = _expand(Path(source))
        if not self.paths:
            raise EventDataError(f"{source}: no event recordings or prepared sequences found")
        self.required = settings
        self.settings = settings or EventSettings()
        self.start_us, self.end_us = start_us, end_us
        self.hw = (height, width)

    @property
    def downsample(self) -> int:
        return self.settings.downsample

    @property
    def step_us(self) -> int:
        """Time between window ends (the frame rate's period)."""
        return self.settings.step_us

    def __len__(self) -> int:
        return len(self.paths)

    def __iter__(self) -> Iterator[EventWindow]:
        for path in self.paths:
            yield from (self._prepared(path) if path.is_dir() else self._raw(path))

    def _in_range(self, t: np.ndarray) -> np.ndarray:
        keep = np.ones(len(t), bool)
        if self.start_us is not None:
            keep &= t >= self.start_us
        if self.end_us is not None:
            keep &= t <= self.end_us
        return keep

    def _raw(self, path: Path) -> Iterator[EventWindow]:
        s = self.settings
        with EventReader(path, *self.hw) as reader:
            if len(reader) == 0:
                return
            t_ends = window_ends(reader.t_start, reader.t_end, s.step_us)
            t_ends = t_ends[self._in_range(t_ends)]
            rep = s.build(reader.height, reader.width)
            seek = self.start_us is not None  # a time range: start at its first window, not at the file's start
            windows = reader.iter_windows(t_ends, s.window_us, seek=seek, count=s.window_events)
            for i, (t, ev) in enumerate(zip(t_ends, windows)):
                yield EventWindow(rep(*ev), int(t), i, len(t_ends), path, i == 0, (reader.height, reader.width))

    def _prepared(self, path: Path) -> Iterator[EventWindow]:
        seq = None
        if self.required is not None and (path / REPR_ROOT / self.required.folder_name).is_dir():
            seq = PreparedSequence(path, self.required.folder_name)
        seq = seq or PreparedSequence(path)  # the only representation there: it must fit the settings
        if self.required is not None:
            self.required.require_same(seq.settings, "the model", str(seq.repr_dir))
        idx = np.flatnonzero(self._in_range(seq.window_t))
        sensor = (seq.hw[0] * seq.downsample, seq.hw[1] * seq.downsample)
        try:
            for n, i in enumerate(idx):
                yield EventWindow(
                    seq.histograms(int(i), int(i) + 1)[0], int(seq.window_t[i]), n, len(idx), path, n == 0, sensor
                )
        finally:
            seq.close()


class MultiStreamSource:
    """Several sources stepped in lockstep, one stream slot each (the cameras of one box): each step gives one
    window per slot, ``None`` for a slot whose source has ended (the others go on). A slot's windows keep their own
    ``is_first`` (its recording starts; its recurrent state must start fresh).

    Example:
        >>> for wins in MultiStreamSource([EventWindowSource("cam0.raw"), EventWindowSource("cam1.raw")]):
        ...     [w.t_end if w is not None else None for w in wins]
    """

    def __init__(self, sources: list[EventWindowSource]):
        if len(sources) < 2:
            raise ValueError("MultiStreamSource: give two sources or more (one source streams on its own)")
        self.sources = list(sources)

    def __len__(self) -> int:
        return len(self.sources)

    def __iter__(self) -> Iterator[list[EventWindow | None]]:
        iterators = [iter(s) for s in self.sources]
        while True:
            wins = [next(it, None) if it is not None else None for it in iterators]
            iterators = [it if w is not None else None for it, w in zip(iterators, wins)]
            if all(w is None for w in wins):
                return
            yield wins
