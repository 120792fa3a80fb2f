"""HDF5 event files (eTraM/Prophesee ``*_td.h5``: ``events/{x,y,p,t}``, plain or blosc-compressed): opening with the
compression filters registered, one-line errors for truncated files or missing filters, the reader's source, and an
atomic writer.

Usage:
    >>> with EventH5Writer("rec_td.h5", width=640, height=360) as w:
    ...     w.append(x, y, p, t)
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from yolo_etram.utils.errors import EventDataError, one_line
from yolo_etram.utils.files import atomic_path

from .source import EVENT_FIELDS, EventSource, check_event_dtypes, sensor_dim


def ensure_hdf5plugin() -> None:
    """Register the blosc and other HDF5 filters, so users never see 'Unknown compression filter 32001'."""
    try:
        import hdf5plugin  # noqa: F401
    except ImportError as e:  # pragma: no cover - hdf5plugin is a requirement
        raise EventDataError(
            "hdf5plugin is not installed: blosc-compressed event files cannot be read; pip install hdf5plugin"
        ) from e


def open_h5(path: str | Path, mode: str = "r"):
    """Open an HDF5 file with the compression plugins registered, raising :class:`EventDataError` on failure."""
    import h5py

    ensure_hdf5plugin()
    path = Path(path)
    if mode == "r" and not path.is_file():
        raise EventDataError(f"{path}: file not found; check the path")
    if mode == "r" and path.stat().st_size == 0:
        raise EventDataError(f"{path}: file is empty; re-copy or re-create it")
    try:
        return h5py.File(path, mode)
    except (OSError, ValueError, RuntimeError, KeyError) as e:  # h5py raises these for truncated or corrupt files
        raise EventDataError(
            f"{path}: not a readable HDF5 file, truncated or corrupt ({one_line(e, 300)}); re-copy or re-create it"
        ) from e


FILTER_MISSING_HINT = "pip install hdf5plugin (blosc and the other compression filters) and import it before h5py reads"


def h5_read_error(path: Path, what: str, e: BaseException) -> EventDataError:
    """A failed HDF5 read as an :class:`EventDataError`: a missing compression filter gets its fix, else corrupt."""
    msg = one_line(e, 300)
    low = msg.lower()
    # a filter that is not registered: "can't open directory (.../plugin)" (HDF5 1.10+) or "required filter ... is not
    # registered" (older); "filter returned failure during read" is corrupt compressed data
    if any(s in low for s in ("can't open directory", "plugin", "not registered")):
        return EventDataError(
            f"{path}: cannot decompress {what}: an HDF5 compression filter is not available ({msg}); "
            f"{FILTER_MISSING_HINT}"
        )
    return EventDataError(
        f"{path}: cannot read {what}, the file is truncated or corrupt ({msg}); re-copy or re-create it"
    )


def check_h5_filters(path: Path, name: str, dataset) -> None:
    """Raise a one-line :class:`EventDataError` if ``dataset`` needs an HDF5 filter (e.g. blosc, 32001) that is not
    registered, instead of h5py's 'can't open directory /usr/local/hdf5/lib/plugin' on the first read."""
    import h5py

    plist = dataset.id.get_create_plist()
    for i in range(plist.get_nfilters()):
        code, _, _, fname = plist.get_filter(i)
        if not h5py.h5z.filter_avail(code):
            fname = fname.decode("latin-1", "replace") if isinstance(fname, bytes) else str(fname)
            raise EventDataError(
                f"{path}: {name} is compressed with HDF5 filter {code} ({fname}), which is not "
                f"available; {FILTER_MISSING_HINT}"
            )


def blosc(codec: str = "zstd"):
    """Blosc compression (h5py filter 32001) at level 1, as RVT writes its histograms.

    ``zstd`` with byte shuffle is RVT's choice (smallest files); ``lz4`` without shuffle writes ~3x and reads ~2x faster
    for files about twice as large. Both read anywhere hdf5plugin is installed, RVT included.
    """
    ensure_hdf5plugin()
    import hdf5plugin

    if codec == "zstd":
        return hdf5plugin.Blosc(cname="zstd", clevel=1, shuffle=hdf5plugin.Blosc.SHUFFLE)
    if codec == "lz4":
        return hdf5plugin.Blosc(cname="lz4", clevel=1, shuffle=hdf5plugin.Blosc.NOSHUFFLE)
    raise ValueError(f"unknown codec '{codec}' (choose zstd or lz4)")


def check_h5_chunks(path: Path, name: str, d) -> None:
    """A chunked 1-D column must store every chunk its length needs: HDF5 reads missing chunks as zeros, silently (a
    writer killed mid-way, or a corrupt length)."""
    if d.chunks is None or not hasattr(d.id, "get_num_chunks"):
        return
    need = -(-d.shape[0] // d.chunks[0])
    have = d.id.get_num_chunks()
    if have < need:
        raise EventDataError(
            f"{path}: {name} holds {d.shape[0]} events but only {have} of its {need} chunks are stored; "
            "the file is truncated or corrupt, re-copy or re-create it"
        )


class H5EventSource(EventSource):
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
                raise EventDataError(
                    f"{path}: HDF5 file has no 'events' group with x, y, p, t datasets (missing "
                    f"{', '.join(missing)}); write events/x, events/y, events/p, events/t"
                )
            self.ds = [g[k] for k in EVENT_FIELDS]
            bad = [k for k, d in zip(EVENT_FIELDS, self.ds) if d.ndim != 1]
            if bad:
                raise EventDataError(
                    f"{path}: events {', '.join(bad)} are not 1-D arrays (shapes "
                    f"{[d.shape for d in self.ds]}); write one value per event"
                )
            check_event_dtypes(path, {k: d.dtype for k, d in zip(EVENT_FIELDS, self.ds)})
            self.n = len(self.ds[3])
            if any(len(d) != self.n for d in self.ds):
                raise EventDataError(
                    f"{path}: events x, y, p, t have different lengths {[len(d) for d in self.ds]}; "
                    "the file is truncated or corrupt, re-copy or re-create it"
                )
            for k, d in zip(EVENT_FIELDS, self.ds):
                check_h5_filters(path, f"events/{k}", d)
                check_h5_chunks(path, f"events/{k}", d)
            self.width, self.height = (
                sensor_dim(path, k, g[k][()]) if isinstance(g.get(k), h5py.Dataset) else None
                for k in ("width", "height")
            )
        except EventDataError:
            self.file.close()
            raise
        except (OSError, KeyError, ValueError, TypeError, RuntimeError, AttributeError) as e:  # corrupt metadata
            self.file.close()
            raise EventDataError(
                f"{path}: corrupt HDF5 event file ({one_line(e, 300)}); re-copy or re-create it"
            ) from e

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
        self.datasets = {
            k: group.create_dataset(k, shape=(0,), maxshape=(None,), dtype=v, chunks=(chunk,), **comp)
            for k, v in dtypes.items()
        }
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
            d[self.count :] = np.asarray(v).astype(d.dtype, copy=False)
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

    def __enter__(self) -> EventH5Writer:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(commit=exc_type is None)


def write_events_h5(path: str | Path, x, y, p, t, width: int, height: int) -> None:
    """Write a whole event recording in the eTraM HDF5 layout (blosc-compressed), atomically."""
    with EventH5Writer(path, width, height) as w:
        w.append(x, y, p, t)
