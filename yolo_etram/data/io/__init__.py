"""Raw event-camera and label I/O: eTraM/Prophesee HDF5, Prophesee EVT2 ``.dat``, ``.npy`` event arrays and box files,
one module per format behind one reader.

Readers never load a whole recording: :class:`EventReader` serves events by time window with memory bounded by the
window, whatever the file size. Repairs that RVT makes silently are made here too, and counted:

- out-of-frame events are dropped (real eTraM files hold some, e.g. ``y=33014``),
- decreasing timestamps are replaced by the running maximum (RVT's ``_correct_time``),
- polarity -1/1 becomes 0/1 (RVT's ``clip(p, 0)``).

What cannot be repaired raises :class:`EventDataError` naming the file, the problem and the fix: missing, empty,
truncated or corrupt files (every low-level h5py/numpy error is wrapped), unknown extensions, HDF5 files without
``events/{x,y,p,t}`` or with chunks missing, non-integer columns, a negative first timestamp, an unavailable
compression filter (hdf5plugin), box files without the Prophesee fields or with NaN, negative times or bad class ids.

Modules: :mod:`.reader` (``EventReader``, pairing recordings with box files), :mod:`.source` (what a format gives the
reader), :mod:`.h5`, :mod:`.dat`, :mod:`.npy` (the formats), :mod:`.boxes` (Prophesee box files).

Usage:
    >>> from yolo_etram.data.io import EventReader, load_boxes
    >>> with EventReader("train/rec_td.h5") as reader:
    ...     for x, y, p, t in reader.iter_windows([50_000, 100_000], 50_000):
    ...         ...
    >>> boxes = load_boxes("train/rec_bbox.npy")
"""

from yolo_etram.utils.errors import EventDataError

from .boxes import BBOX_DTYPE, load_boxes, write_boxes
from .h5 import EventH5Writer, blosc, check_h5_filters, h5_read_error, open_h5, write_events_h5
from .reader import RAW_SUFFIXES, SENSOR_SIZES, EventReader, RepairCounts, find_recordings
from .source import EVENT_FIELDS

__all__ = [
    "EventReader",
    "RepairCounts",
    "find_recordings",
    "RAW_SUFFIXES",
    "SENSOR_SIZES",
    "EVENT_FIELDS",
    "BBOX_DTYPE",
    "load_boxes",
    "write_boxes",
    "EventH5Writer",
    "write_events_h5",
    "open_h5",
    "blosc",
    "check_h5_filters",
    "h5_read_error",
    "EventDataError",
]
