"""``etram-yolo convert IN OUT``: an event recording from one format to another, losslessly and streaming.

Formats, by file name: a Prophesee camera's ``.raw`` (EVT 3.0 or 2.0 when written; EVT 2.0/2.1/3.0 read), Prophesee's
EVT 2.0 ``.dat``, eTraM's HDF5 (``_td.h5``, blosc) and a structured ``.npy`` (``x, y, p, t``). The events are copied as
the file stores them, in order (no repair: out-of-frame events and timestamps going back are kept); polarity -1 is
written as 0 where a format stores one bit. Memory holds one chunk of events whatever the recording's length; the
output appears under its name only when complete.

Usage:
    $ etram-yolo convert recording.raw recording_td.h5          # a camera recording for eTraM-style tools
    $ etram-yolo convert recording_td.h5 recording.raw --evt 3.0
    >>> convert("recording.raw", "recording.npy")
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from yolo_etram.utils.errors import EventDataError
from yolo_etram.utils.files import atomic_path

from .io import EventH5Writer
from .io.raw import RawEventSource
from .io.raw_writer import RawWriter
from .io.reader import open_source

CHUNK = 1 << 20
NPY_DTYPE = np.dtype([("x", "<u2"), ("y", "<u2"), ("p", "<i2"), ("t", "<i8")])


def _chunks(src) -> Iterator[tuple]:
    """The source's events in order, a chunk at a time (a ``.raw`` file by its own chunks: each decoded once)."""
    if isinstance(src, RawEventSource):
        for i, c in enumerate(src.scan()):
            if c.n_events:
                yield src._decoded(i)
        return
    for start in range(0, src.n, CHUNK):
        yield src.read(start, min(start + CHUNK, src.n))


class _DatWriter:
    """Prophesee EVT 2.0 ``.dat``: ``%`` header, event type 0 and size 8, then ``t`` (u4) and x | y << 14 | p << 28."""

    def __init__(self, path: Path, width: int, height: int):
        self.path, self.tmp = path, atomic_path(path)
        self.file = open(self.tmp, "wb")
        self.file.write(f"% Height {height}\n% Width {width}\n% version 2\n".encode() + bytes([0, 8]))

    def append(self, x, y, p, t):
        t = np.asarray(t, np.int64)
        if len(t) and (t.min() < 0 or t.max() >= 1 << 32):
            raise EventDataError(
                f"{self.path}: a .dat file stores 32-bit microseconds (up to 71 min); these events "
                f"reach {int(t.max())} us: convert to .raw, _td.h5 or .npy instead"
            )
        packed = (
            (np.asarray(x, np.uint32) & 0x3FFF)
            | ((np.asarray(y, np.uint32) & 0x3FFF) << 14)
            | ((np.asarray(p) > 0).astype(np.uint32) << 28)
        )
        out = np.empty(len(t), [("t", "<u4"), ("w", "<u4")])
        out["t"], out["w"] = t, packed
        self.file.write(out.tobytes())

    def close(self, commit: bool = True):
        self.file.close()
        if commit:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


class _NpyWriter:
    """A structured ``.npy`` of known length, filled chunk by chunk through a memory map."""

    def __init__(self, path: Path, n: int):
        self.path, self.tmp, self.pos = path, atomic_path(path), 0
        self.arr = np.lib.format.open_memmap(self.tmp, mode="w+", dtype=NPY_DTYPE, shape=(n,))

    def append(self, x, y, p, t):
        n = len(t)
        block = self.arr[self.pos : self.pos + n]
        block["x"], block["y"], block["p"], block["t"] = x, y, p, t
        self.pos += n

    def close(self, commit: bool = True):
        self.arr.flush()
        del self.arr
        if commit:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def _writer(out: Path, width: int, height: int, n: int, evt: str):
    name = out.name
    if name.endswith(".raw"):
        return RawWriter(out, width, height, evt)
    if name.endswith((".h5", ".hdf5")):
        return EventH5Writer(out, width, height)
    if name.endswith(".dat"):
        return _DatWriter(out, width, height)
    if name.endswith(".npy"):
        return _NpyWriter(out, n)
    raise EventDataError(f"{out}: unknown output type '{out.suffix}' (write .raw, _td.h5, .dat or .npy)")


def convert(
    src_path: str | Path, out_path: str | Path, evt: str = "3.0", height: int | None = None, width: int | None = None
) -> int:
    """Copy every event of ``src_path`` into ``out_path`` (formats by name, see the module docstring); returns the
    number of events. The sensor size comes from the source file, else ``height``/``width``."""
    src_path, out_path = Path(src_path), Path(out_path)
    if src_path.resolve() == out_path.resolve():
        raise EventDataError(f"{out_path}: the output would overwrite the input")
    src = open_source(src_path)
    try:
        h, w = src.height or height, src.width or width
        if h is None or w is None:
            raise EventDataError(f"{src_path}: the file does not store the sensor size; pass --height and --width")
        writer = _writer(out_path, int(w), int(h), src.n, evt)
        done = 0
        try:
            for x, y, p, t in _chunks(src):
                writer.append(x, y, p, t)
                done += len(t)
        except BaseException:
            writer.close(commit=False)
            raise
        writer.close()
        return done
    finally:
        src.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="etram-yolo convert", description=__doc__.split("\n\n")[0])
    ap.add_argument("input", help="recording: .raw, .dat, _td.h5 or .npy")
    ap.add_argument("output", help="file to write: .raw, .dat, _td.h5 or .npy (the type by name)")
    ap.add_argument("--evt", choices=("3.0", "2.0"), default="3.0", help="EVT format of a written .raw (default 3.0)")
    ap.add_argument("--height", type=int, help="sensor height, when the input does not store it")
    ap.add_argument("--width", type=int, help="sensor width, when the input does not store it")
    args = ap.parse_args(argv)
    n = convert(args.input, args.output, args.evt, args.height, args.width)
    print(f"convert: {n:,} events {args.input} -> {args.output}")
    return 0
