"""Prophesee EVT 2.0 ``.dat`` files (``%`` header lines, then 8-byte events), memory-mapped."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from yolo_etram.utils.errors import EventDataError, one_line

from .source import EventSource, sensor_dim

EVT2_DAT_DTYPE = np.dtype([("t", "<u4"), ("_w", "<u4")])


class DatEventSource(EventSource):
    """Prophesee EVT 2.0 ``.dat``: ``%`` header lines, 2 bytes (event type, size), then ``t:u4`` and a packed word
    (x bits 0-13, y bits 14-27, p bit 28)."""

    def __init__(self, path: Path):
        self.width = self.height = None
        try:
            offset = self._parse_header(path)
        except EventDataError:
            raise
        except (ValueError, OverflowError) as e:
            raise EventDataError(f"{path}: corrupt .dat header ({one_line(e, 300)}); re-copy or re-export it") from e
        size = path.stat().st_size - offset
        self.n = size // 8
        try:
            self.raw = (
                np.memmap(path, dtype=EVT2_DAT_DTYPE, mode="r", offset=offset, shape=(self.n,))
                if self.n
                else np.zeros(0, EVT2_DAT_DTYPE)
            )
        except (ValueError, OSError) as e:
            raise EventDataError(
                f"{path}: cannot map the .dat events ({one_line(e, 300)}); re-copy or re-export it"
            ) from e

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
                            setattr(self, key.lower(), sensor_dim(path, key.lower(), int(parts[parts.index(key) + 1])))
            f.seek(pos)
            header = f.read(2)
            if len(header) < 2:
                raise EventDataError(
                    f"{path}: truncated .dat file (no event type and size after the header); re-copy or re-export it"
                )
            ev_size = header[1]
            if ev_size != 8:
                raise EventDataError(
                    f"{path}: unsupported .dat event size {ev_size} (expected 8, EVT 2.0) or a corrupt "
                    "header; convert the file to EVT 2.0 .dat or HDF5"
                )
            return pos + 2

    def read(self, start, stop):
        a = self.raw[start:stop]
        w = a["_w"]
        return (w & 0x3FFF), ((w >> 14) & 0x3FFF), ((w >> 28) & 0x1), a["t"]

    def read_t(self, start, stop):
        return self.raw["t"][start:stop]
