"""RVT's label preprocessing: box filters, 10 Hz label-frame selection and window end timestamps.

Every rule here reproduces ``RVT:scripts/genx/preprocess_dataset.py`` (RVT spec 2.2-2.4),
including its float32 box arithmetic, so the written labels and indices are bit-identical to RVT's. Two generalisations,
both equal to RVT on its own data: the sensor size comes from the recording (RVT hard-codes 720x1280 / 240x304), and
label rates other than 30/60 Hz give a clear error instead of an assertion. :func:`check_boxes` counts what the filters
drop or crop (``prepare`` reports it) and rejects box files that cannot belong to the recording.

Usage:
    >>> from yolo_etram.data.labels import DATASET_KINDS, select_label_frames
    >>> kind = DATASET_KINDS["gen4"]
    >>> boxes = apply_label_filters(boxes, kind, height=720, width=1280, train=True)
    >>> frames = select_label_frames(boxes, kind)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from yolo_etram.utils.errors import EventDataError


@dataclass(frozen=True)
class DatasetKind:
    """Preprocessing rules of one dataset family.

    Attributes:
        name: ``gen1``, ``gen4`` or ``etram``.
        label_period_us: base label-frame period; ``None`` derives ~100 ms from a 30/60 Hz label rate (gen4/eTraM).
        max_class_id: boxes with a larger class id are dropped (gen4 keeps pedestrian, two-wheeler, car); ``None``
            keeps all.
        psee_filter: Prophesee size filter (diagonal and side) instead of the conservative ``w, h >= 5``.
        min_diag, min_side: the Prophesee size filter's thresholds in sensor pixels.
        faulty_filter: on train, drop boxes wider than 9/10 of the sensor.
        downsample: factor of the stored histograms (2: half resolution, ``_ds2_nearest``).
        class_map: optional id remapping applied before filtering (e.g. eTraM 8 classes to 3); ids mapped to -1 are
            dropped.
    """

    name: str
    label_period_us: int | None
    max_class_id: int | None
    psee_filter: bool
    min_diag: int
    min_side: int
    faulty_filter: bool = True
    downsample: int = 1
    class_map: dict[int, int] = field(default_factory=dict)


DATASET_KINDS = {
    "gen1": DatasetKind("gen1", 250_000, None, True, 30, 10, downsample=1),
    "gen4": DatasetKind("gen4", None, 2, False, 60, 20, downsample=2),
    "etram": DatasetKind("etram", None, None, False, 60, 20, downsample=2),
}

ETRAM_8_TO_3 = {0: 0, 1: 1, 2: 2, 3: 1, 4: 2, 5: 1, 6: 1, 7: 2}
"""eTraM 8 classes (pedestrian, car, bicycle, bus, motorbike, truck, tram, wheelchair) to 3 (pedestrian, vehicle,
micromobility)."""

ALIGN_T_US = 100_000  # the first label frame is the first label time at or after this
FRAME_STEP_MS = 100  # label frames are ~10 Hz
JITTER_US = 2_000  # label times within this of the 10 Hz grid are accepted
LATE_LABELS_US = 1_000_000  # boxes up to this long after the last event are kept (empty windows); later ones: an error


def remap_classes(boxes: np.ndarray, class_map: dict[int, int], source: str = "") -> np.ndarray:
    """Map class ids through ``class_map``; ids it maps to -1 are dropped. Unknown ids are an error."""
    if not class_map:
        return boxes
    ids = boxes["class_id"].astype(np.int64)
    unknown = sorted(set(np.unique(ids).tolist()) - set(class_map))
    if unknown:
        raise EventDataError(
            f"{source or 'boxes'}: class ids {unknown} are not in the class mapping {class_map}; "
            "choose another class map (or none) or fix the box file"
        )
    lut = np.full(max(class_map) + 1, -1, np.int64)
    for k, v in class_map.items():
        lut[k] = v
    new = lut[ids]
    boxes = boxes[new >= 0].copy()
    boxes["class_id"] = new[new >= 0]
    return boxes


def apply_label_filters(
    boxes: np.ndarray, kind: DatasetKind, height: int, width: int, train: bool, source: str = ""
) -> np.ndarray:
    """RVT's ``apply_filters``: class filter, crop to the field of view, size filter, faulty-box filter (train only)."""
    boxes = remap_classes(boxes, kind.class_map, source)
    if kind.max_class_id is not None:
        boxes = boxes[boxes["class_id"] <= kind.max_class_id]
    boxes = boxes.copy()
    x0, y0 = boxes["x"], boxes["y"]
    x1, y1 = x0 + boxes["w"], y0 + boxes["h"]  # float32, as RVT computes
    x0c, y0c = np.clip(x0, 0, width - 1), np.clip(y0, 0, height - 1)
    x1c, y1c = np.clip(x1, 0, width - 1), np.clip(y1, 0, height - 1)
    boxes["x"], boxes["y"], boxes["w"], boxes["h"] = x0c, y0c, x1c - x0c, y1c - y0c
    boxes = boxes[(boxes["w"] > 0) & (boxes["h"] > 0)]
    w, h = boxes["w"], boxes["h"]
    if kind.psee_filter:
        keep = (w**2 + h**2 >= kind.min_diag**2) & (w >= kind.min_side) & (h >= kind.min_side)
    else:
        keep = (w >= 5) & (h >= 5)
    boxes = boxes[keep]
    if train and kind.faulty_filter:
        boxes = boxes[boxes["w"] <= (9 * width) // 10]
    return boxes


@dataclass
class BoxCounts:
    """Box-file problems that RVT's filters repair silently, counted so ``prepare`` can report them (warnings).

    Attributes:
        nonpositive: boxes with zero or negative width or height (RVT's crop leaves them flat: dropped).
        outside: boxes entirely outside the frame (flat after RVT's crop to the frame: dropped).
        clipped: boxes partly outside the frame (cropped to it, as RVT does).
        outside_time: boxes whose event window is empty: before the first event, or more than a window but at most
            :data:`LATE_LABELS_US` after the last one (kept, as RVT keeps them).
    """

    nonpositive: int = 0
    outside: int = 0
    clipped: int = 0
    outside_time: int = 0


def check_boxes(
    boxes: np.ndarray,
    kind: DatasetKind,
    height: int,
    width: int,
    t_range: tuple[int, int] | None = None,
    source: str = "",
    window_us: int = 50_000,
) -> BoxCounts:
    """Count what RVT's filters will drop or crop in ``boxes`` and raise on what cannot be a match for the recording.

    Errors (:class:`EventDataError` naming ``source``): class ids unknown to the class map; every box flat or outside
    the ``width x height`` frame (a box file of another recording or sensor); no box time within ``t_range`` (the
    events' first and last timestamps: another recording, or other units than microseconds); a box time more than
    :data:`LATE_LABELS_US` after the last event (a corrupt time would make RVT's window grid reach it, without bound).
    The rest is counted.
    """
    remap_classes(boxes, kind.class_map, source)
    counts = BoxCounts()
    if len(boxes) == 0:
        return counts
    x0, y0 = boxes["x"], boxes["y"]
    x1, y1 = x0 + boxes["w"], y0 + boxes["h"]  # float32, as RVT's crop computes
    nonpositive = (boxes["w"] <= 0) | (boxes["h"] <= 0)
    w_c = np.clip(x1, 0, width - 1) - np.clip(x0, 0, width - 1)
    h_c = np.clip(y1, 0, height - 1) - np.clip(y0, 0, height - 1)
    outside = ~nonpositive & ((w_c <= 0) | (h_c <= 0))
    clipped = ~nonpositive & ~outside & ((x0 < 0) | (y0 < 0) | (x1 > width - 1) | (y1 > height - 1))
    counts.nonpositive, counts.outside = int(nonpositive.sum()), int(outside.sum())
    counts.clipped = int(clipped.sum())
    if counts.nonpositive + counts.outside == len(boxes):
        raise EventDataError(
            f"{source or 'boxes'}: all {len(boxes)} boxes have zero or negative size or lie outside the "
            f"{width}x{height} frame; the box file belongs to another recording or sensor size"
        )
    if t_range is not None:
        t = boxes["t"].astype(np.int64)
        inside = (t >= t_range[0]) & (t <= t_range[1])
        if not inside.any():
            raise EventDataError(
                f"{source or 'boxes'}: box timestamps {t.min()}..{t.max()} us lie outside the events' "
                f"{t_range[0]}..{t_range[1]} us; the box file belongs to another recording or is not "
                "in microseconds"
            )
        if t.max() > t_range[1] + LATE_LABELS_US:
            raise EventDataError(
                f"{source or 'boxes'}: box timestamp {t.max()} us is more than "
                f"{LATE_LABELS_US // 1000} ms after the last event ({t_range[1]} us); the box file is "
                "corrupt or belongs to another recording"
            )
        counts.outside_time = int(np.count_nonzero((t < t_range[0]) | (t > t_range[1] + window_us)))
    return counts


def base_label_period_us(unique_t: np.ndarray, kind: DatasetKind, source: str = "") -> int:
    """About 100 ms: 3 label periods at 30 Hz, 6 at 60 Hz (gen4/eTraM); 250 ms for gen1."""
    if kind.label_period_us is not None:
        return kind.label_period_us
    if len(unique_t) < 2:
        return 100_000  # one label time: the period is never used
    median = np.median(np.diff(unique_t))
    hz = int(np.rint(1e6 / median))
    if hz not in (30, 60):
        raise EventDataError(
            f"{source}: labels come at {hz} Hz (median spacing {median:.0f} us); RVT's preprocessing "
            "needs 30 or 60 Hz labels to pick 10 Hz frames"
        )
    return int(6 * median if hz == 60 else 3 * median)


@dataclass
class LabelFrames:
    """Labeled frames of one sequence and the end times of its event windows (RVT's ``labels_v2`` content)."""

    labels: np.ndarray  # boxes of all accepted frames, concatenated in time order
    frame_label_idx: np.ndarray  # int64 [F]: first row in ``labels`` of each frame (``objframe_idx_2_label_idx``)
    frame_t: np.ndarray  # int64 [F]: frame times (``labels_v2/timestamps_us.npy``)
    window_t: np.ndarray  # int64 [N]: event-window end times (``timestamps_us.npy`` of the representation)
    frame_repr_idx: np.ndarray  # int64 [F]: window index of each frame (``objframe_idx_2_repr_idx.npy``)


def select_label_frames(
    boxes: np.ndarray, kind: DatasetKind, window_step_ms: int = 50, source: str = ""
) -> LabelFrames:
    """Pick ~10 Hz label frames from filtered, time-sorted boxes and build the window end times around them.

    RVT's ``labels_and_ev_repr_timestamps``: the first frame is the first label time >= 100 ms; later label times are
    kept when within 2 ms of a whole number of base periods after the last kept frame. Windows end every
    ``window_step_ms`` before the first frame (pre-roll, each starting after t=0) and at ``linspace`` points between
    consecutive frames, so a frame's time is always a window end.
    """
    if len(boxes) == 0:
        raise EventDataError(f"{source}: no boxes left after filtering")
    if FRAME_STEP_MS % window_step_ms:
        raise ValueError(f"window step {window_step_ms} ms must divide the {FRAME_STEP_MS} ms frame step")
    t_all = boxes["t"].astype(np.int64)
    if np.any(np.diff(t_all) < 0):
        order = np.argsort(t_all, kind="stable")
        boxes, t_all = boxes[order], t_all[order]
    unique_t = np.unique(t_all)
    period = base_label_period_us(unique_t, kind, source)
    first = int(np.searchsorted(unique_t, ALIGN_T_US, side="left"))
    if first == len(unique_t):
        raise EventDataError(
            f"{source}: no label at or after {ALIGN_T_US} us, where RVT's label frames start; the "
            "labels are missing there or not in microseconds"
        )
    frames = [int(unique_t[first])]
    windows_between = []
    for ts in unique_t[first + 1 :].tolist():
        diff = ts - frames[-1]
        n = round(diff / period)
        if abs(diff - n * period) <= JITTER_US:
            frames.append(ts)
            windows_between.append(n * (FRAME_STEP_MS // window_step_ms))
    frame_t = np.asarray(frames, np.int64)

    step_us = window_step_ms * 1000
    window_t = list(reversed(range(frames[0], 0, -step_us)))[1:-1]
    for i, (n, a, b) in enumerate(zip(windows_between, frames[:-1], frames[1:])):
        edges = np.linspace(a, b, n + 1).astype(np.int64).tolist()
        window_t.extend(edges if i == len(windows_between) - 1 else edges[:-1])
    if len(frames) == 1:
        window_t.append(frames[0])
    window_t = np.asarray(window_t, np.int64)

    starts = np.searchsorted(t_all, frame_t, side="left")
    ends = np.searchsorted(t_all, frame_t, side="right")
    labels = np.concatenate([boxes[s:e] for s, e in zip(starts, ends)])
    frame_label_idx = np.concatenate([[0], np.cumsum(ends - starts)[:-1]]).astype(np.int64)
    frame_repr_idx = np.searchsorted(window_t, frame_t, side="left").astype(np.int64)
    return LabelFrames(labels, frame_label_idx, frame_t, window_t, frame_repr_idx)
