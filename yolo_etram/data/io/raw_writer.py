"""Writing Prophesee ``.raw`` files (EVT 3.0 or EVT 2.0) that OpenEB and :mod:`.raw` decode back to the same events,
in the same order, bit for bit.

EVT 3.0 words are written the way cameras write them: TIME_HIGH for every 4096 µs step (so the 16.8 s loops of the
time high are unambiguous), TIME_LOW when the time changes, ADDR_Y when the row changes, and events either one
ADDR_X word each or, for three or more consecutive events on one row with the same time and polarity and rising
columns within 32 of each other, the camera's VECT_BASE_X, VECT_12, VECT_12, VECT_8 group. The order of the events is
kept exactly (a group is only formed where the decoder's ascending order is the given order). EVT 2.0 writes a
TIME_HIGH word when ``t >> 6`` changes and one word per event. Time may go back (file order is kept), by less than a
loop's threshold (16.7 s in EVT 3.0).

The file appears under its name only when the writer closes without error (written aside, then renamed).

Usage:
    >>> with RawWriter("rec.raw", width=1280, height=720, evt="3.0") as w:
    ...     w.append(x, y, p, t)  # any number of chunks, in time order
    >>> write_raw("rec.raw", x, y, p, t, 1280, 720)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from yolo_etram.utils.errors import EventDataError
from yolo_etram.utils.files import atomic_path

__all__ = ["RawWriter", "write_raw", "encode_evt3", "encode_evt2", "raw_header"]

_VECTOR_MIN = 3  # a vector group (4 words) pays off from three events on


@dataclass
class EncoderState:
    """What an encoder carries from one chunk to the next: the time high, time low and row last written."""

    time_high: int = -1  # absolute t >> 12 (EVT 3.0) or t >> 6 (EVT 2.0) last written; -1: none yet
    time_low: int = 0
    y: int = -1


def raw_header(evt: str, width: int, height: int) -> bytes:
    """The ASCII header OpenEB's decoders read: format, geometry, ended by ``% end``."""
    name = {"3.0": "EVT3", "2.0": "EVT2"}[evt]
    lines = [
        f"% evt {evt}",
        f"% format {name};height={height};width={width}",
        f"% geometry {width}x{height}",
        "% integrator_name yolo-etram",
        "% end",
    ]
    return ("\n".join(lines) + "\n").encode("ascii")


def _check(x, y, p, t):
    x, y, p, t = (np.asarray(a) for a in (x, y, p, t))
    if not len(x) == len(y) == len(p) == len(t):
        raise ValueError(f"x, y, p, t lengths differ ({len(x)}, {len(y)}, {len(p)}, {len(t)})")
    if len(t) and (x.min() < 0 or x.max() > 2047 or y.min() < 0 or y.max() > 2047):
        raise ValueError("EVT coordinates must lie in 0..2047")
    if len(t) and t.min() < 0:
        raise ValueError("timestamps must be >= 0 µs")
    return x.astype(np.int64), y.astype(np.int64), (np.asarray(p) > 0).astype(np.int64), t.astype(np.int64)


def _fill_time_highs(words: np.ndarray, at: np.ndarray, first: np.ndarray, count: np.ndarray, prefix: int) -> None:
    """Write ``count[g]`` consecutive TIME_HIGH values ``first[g], first[g] + 1, ...`` at offsets ``at[g]``."""
    total = int(count.sum())
    if not total:
        return
    group = np.repeat(np.arange(len(count)), count)
    step = np.arange(total) - np.repeat(np.cumsum(count) - count, count)
    words[np.repeat(at, count) + step] = prefix | ((first[group] + step) & 0xFFF)


def encode_evt3(x, y, p, t, state: EncoderState | None = None) -> tuple[np.ndarray, EncoderState]:
    """EVT 3.0 words (uint16) of the events in the given order, and the state to continue with."""
    state = state or EncoderState()
    x, y, p, t = _check(x, y, p, t)
    n = len(t)
    if not n:
        return np.zeros(0, np.uint16), state
    # groups: runs of equal (t, y, p) with rising x, cut into 32-column segments; >= 3 events: one vector group
    same = (t[1:] == t[:-1]) & (y[1:] == y[:-1]) & (p[1:] == p[:-1]) & (x[1:] > x[:-1])
    run = np.cumsum(np.concatenate([[True], ~same])) - 1
    run_x0 = x[np.flatnonzero(np.concatenate([[True], ~same]))]
    seg = (x - run_x0[run]) // 32
    new_group = np.concatenate([[True], (run[1:] != run[:-1]) | (seg[1:] != seg[:-1])])
    g_start = np.flatnonzero(new_group)
    g_size = np.diff(np.append(g_start, n))
    vector = g_size >= _VECTOR_MIN
    # per group: the time and row words it needs after the previous group
    th, tl, gy = t[g_start] >> 12, t[g_start] & 0xFFF, y[g_start]
    prev_th = np.concatenate([[state.time_high], th[:-1]])
    n_th = np.where(th > prev_th, th - prev_th, (th != prev_th).astype(np.int64))  # every step forward, else one
    th_first = np.where(th > prev_th, prev_th + 1, th)
    prev_tl = np.where(n_th > 0, 0, np.concatenate([[state.time_low], tl[:-1]]))  # a time high resets the time low
    n_tl = (tl != prev_tl).astype(np.int64)
    n_y = (gy != np.concatenate([[state.y], gy[:-1]])).astype(np.int64)
    n_ev = np.where(vector, 4, g_size)
    per_group = n_th + n_tl + n_y + n_ev
    at = np.cumsum(per_group) - per_group
    words = np.zeros(int(per_group.sum()), np.uint16)
    _fill_time_highs(words, at, th_first, n_th, 0x8000)
    pos = at + n_th
    has = n_tl > 0
    words[pos[has]] = 0x6000 | tl[has]
    pos = pos + n_tl
    has = n_y > 0
    words[pos[has]] = gy[has]  # ADDR_Y (type 0)
    pos = pos + n_y
    # single events: ADDR_X words, one per event, in order
    single = ~vector
    ev_group = np.repeat(np.arange(len(g_start)), g_size)
    rank = np.arange(n) - g_start[ev_group]
    lone = single[ev_group]
    words[pos[ev_group[lone]] + rank[lone]] = 0x2000 | (p[lone] << 11) | x[lone]
    # vector groups: VECT_BASE_X (first column, polarity), then the 32-column mask as VECT_12, VECT_12, VECT_8
    vg = np.flatnonzero(vector)
    base = x[g_start[vg]]
    in_vec = vector[ev_group]
    mask = np.zeros(len(g_start), np.int64)
    np.add.at(mask, ev_group[in_vec], 1 << (x[in_vec] - base[np.searchsorted(vg, ev_group[in_vec])]))
    m = mask[vg]
    words[pos[vg]] = 0x3000 | (p[g_start[vg]] << 11) | base
    words[pos[vg] + 1] = 0x4000 | (m & 0xFFF)
    words[pos[vg] + 2] = 0x4000 | ((m >> 12) & 0xFFF)
    words[pos[vg] + 3] = 0x5000 | ((m >> 24) & 0xFF)
    end = EncoderState(int(th[-1]), int(tl[-1]), int(gy[-1]))
    return words, end


def encode_evt2(x, y, p, t, state: EncoderState | None = None) -> tuple[np.ndarray, EncoderState]:
    """EVT 2.0 words (uint32) of the events in the given order, and the state to continue with."""
    state = state or EncoderState()
    x, y, p, t = _check(x, y, p, t)
    n = len(t)
    if not n:
        return np.zeros(0, np.uint32), state
    th = t >> 6
    prev = np.concatenate([[state.time_high], th[:-1]])
    n_th = (th != prev).astype(np.int64)
    at = np.cumsum(n_th + 1) - (n_th + 1)
    words = np.zeros(int(n + n_th.sum()), np.uint32)
    has = n_th > 0
    words[at[has]] = (0x8 << 28) | (th[has] & 0x0FFFFFFF)
    words[at + n_th] = (p << 28) | ((t & 0x3F) << 22) | (x << 11) | y
    return words, EncoderState(int(th[-1]), 0, -1)


class RawWriter:
    """Append events to a ``.raw`` file in EVT 3.0 (default) or EVT 2.0, atomically (see the module docstring)."""

    def __init__(self, path: str | Path, width: int, height: int, evt: str = "3.0"):
        if evt not in ("3.0", "2.0"):
            raise EventDataError(f"{path}: can write EVT 3.0 or 2.0, not '{evt}'")
        if not (1 <= width <= 2048 and 1 <= height <= 2048):
            raise EventDataError(f"{path}: EVT formats address at most 2048x2048 pixels, not {width}x{height}")
        self.path, self.evt = Path(path), evt
        self.tmp = atomic_path(self.path)
        self.file = open(self.tmp, "wb")
        self.file.write(raw_header(evt, width, height))
        self.state = EncoderState()
        self.count = 0

    def append(self, x, y, p, t) -> None:
        encode = encode_evt3 if self.evt == "3.0" else encode_evt2
        words, self.state = encode(x, y, p, t, self.state)
        self.file.write(words.astype("<u2" if self.evt == "3.0" else "<u4").tobytes())
        self.count += len(np.asarray(t))

    def close(self, commit: bool = True) -> None:
        if self.file is None:
            return
        self.file.close()
        self.file = None
        if commit:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> RawWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(commit=exc_type is None)


def write_raw(path: str | Path, x, y, p, t, width: int, height: int, evt: str = "3.0") -> None:
    """Write a whole recording as a ``.raw`` file (EVT 3.0 or 2.0), atomically."""
    with RawWriter(path, width, height, evt) as w:
        w.append(x, y, p, t)
