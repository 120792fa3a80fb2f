"""Clips of consecutive event histograms from prepared sequences, and the collate that makes Ultralytics batches.

A clip is ``seq_len`` (T) consecutive windows ``[start, start + T)`` of one sequence. Two clip tables, as RVT samples:

- ``clips_stream``: each sequence cut into consecutive clips from ``max(first_labeled_window - T + 1, 0)`` to its last
  window (RVT's evaluation ranges); the last clip may be short and is zero-padded to T. Sequences without labels have
  no stream clips.
- ``clips_random``: one clip per labeled window ``r`` with ``r - T + 1 >= 0``, ending at ``r`` (RVT's random access).

Items are addressed by the keys of :mod:`yolo_etram.data.sampler` (``ClipKey(clip, aug, random, is_first)``; a
plain ``(clip, aug)`` tuple or int indexes the active ``sampling`` table); ``PAD_CLIP`` gives an all-padded empty clip.
An item reads its frames with a single HDF5 slice, keeps them in the stored dtype and resolution (the trainer pads and
casts on the device), and carries boxes as ``[cls, x1, y1, x2, y2]`` pixels per frame.

Labels follow RVT's loader: boxes as :class:`PreparedSequence` serves them; a label frame left without boxes (flat
after scaling, dropped classes, cropped away by zoom-in) counts as unlabeled, like RVT's collate turning empty labels
into None.

Usage:
    >>> from yolo_etram.data.dataset import EventClipDataset, collate_clips
    >>> ds = EventClipDataset("datasets/etram", split="train", seq_len=5)
    >>> item = ds[0]  # first stream clip, no augmentation: img uint8 (5, 20, 360, 640), labels, labeled, padded, ...
    >>> batch = collate_clips([ds[0], ds[1]])  # img (2, 5, 20, 360, 640), batch_idx = b * T + t
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from ultralytics.utils.ops import xyxy2xywhn

from yolo_etram.utils.errors import EventDataError

from .augment import augment_clip
from .event_augment import augment_events
from .motion import UNKNOWN, motion_columns
from .prepared import PreparedSequence, list_sequences, scale_boxes
from .sampler import PAD_CLIP, ClipKey, Sampling

STREAM_CLIP = np.dtype([("seq", "<i4"), ("start", "<i8"), ("stop", "<i8"), ("first", "?")])
RANDOM_CLIP = np.dtype([("seq", "<i4"), ("start", "<i8"), ("stop", "<i8")])


class _SequenceBoxes:
    """All boxes of one sequence as ``[cls, x1, y1, x2, y2, motion, still_s, track]`` float32 rows, looked up by window.

    ``motion`` is a :mod:`.motion` code (``UNKNOWN`` without motion ground truth) and ``still_s`` the seconds since a
    stopped object last moved; both ride along through augmentation and reach the batch as ``motion``. ``track`` is
    the box's ``track_id`` made dense within the sequence (0, 1, ...; exact in float32), -1 where the labels have
    none; it reaches the batch as ``track`` (the temporal consistency loss pairs boxes by it)."""

    def __init__(self, seq: PreparedSequence, class_lut: np.ndarray | None):
        labels = seq.labels.copy()
        bounds = np.append(seq.frame_label_idx, len(labels)).astype(np.int64)
        labels["t"] = np.repeat(np.arange(len(bounds) - 1), np.diff(bounds))  # carry the frame through the filter
        row = _with_row_index(labels)  # and the row, for the motion ground truth
        b = scale_boxes(row, seq.hw, seq.downsample)  # RVT's clamp, scale and flat-box removal
        frame, cls = b["t"].astype(np.int64), b["class_id"].astype(np.int64)
        if class_lut is not None:
            lut = np.append(class_lut, -1)  # ids beyond the map land on the trailing -1: dropped
            cls = lut[np.minimum(cls, len(lut) - 1)]
            keep = cls >= 0
            b, frame, cls = b[keep], frame[keep], cls[keep]
        codes, still = np.full(len(b), UNKNOWN, np.float32), np.zeros(len(b), np.float32)
        if seq.motion is not None:
            all_codes, all_still = motion_columns(seq.motion)
            codes, still = all_codes[b["row"]].astype(np.float32), all_still[b["row"]]
        track = np.full(len(b), -1, np.int64)
        if "track_id" in b.dtype.names and len(b):
            track = np.unique(b["track_id"], return_inverse=True)[1].reshape(-1)
        x, y = b["x"].astype(np.float32), b["y"].astype(np.float32)
        self.boxes = np.stack(
            [cls.astype(np.float32), x, y, x + b["w"], y + b["h"], codes, still, track.astype(np.float32)], 1
        ).astype(np.float32)
        self.bounds = np.searchsorted(frame, np.arange(len(bounds)))  # rows of frame f: bounds[f]:bounds[f+1]
        self.window_frame = np.full(len(seq), -1, np.int64)
        self.window_frame[seq.frame_repr_idx] = np.arange(len(seq.frame_repr_idx))

    def classes(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """The distinct classes of the boxes in windows ``[start, stop)`` (all windows by default)."""
        frames = self.window_frame[start:stop]
        frames = frames[frames >= 0]
        if not len(frames):
            return np.zeros(0, np.int64)
        rows = np.concatenate([np.arange(self.bounds[f], self.bounds[f + 1]) for f in frames])
        return np.unique(self.boxes[rows, 0].astype(np.int64))

    def __call__(self, window: int) -> np.ndarray | None:
        f = self.window_frame[window]
        return None if f < 0 else self.boxes[self.bounds[f] : self.bounds[f + 1]].copy()


def _with_row_index(labels: np.ndarray) -> np.ndarray:
    """``labels`` plus a ``row`` field holding each box's row number."""
    out = np.zeros(len(labels), np.dtype(labels.dtype.descr + [("row", "<i8")]))
    for name in labels.dtype.names:
        out[name] = labels[name]
    out["row"] = np.arange(len(labels))
    return out


class EventClipDataset(Dataset):
    """Clips of ``seq_len`` consecutive windows from the prepared sequences of one split (ours or RVT's layout).

    Args:
        path: a split folder (``<prepared>/<split>``), or the prepared root when ``split`` is given.
        seq_len: windows per clip (T); RVT uses 5 for gen4/eTraM and 21 for gen1.
        split: split name under ``path``.
        sampling: table that int keys and ``len()`` refer to: ``"stream"`` or ``"random"``.
        names: class names (list or dict); default ``{i: str(i)}`` for the class ids found.
        class_map: stored class id -> training class id (a dict, or a list indexed by stored id); ids mapped to a
            negative value or missing are dropped.
        representation: folder under ``event_representations_v2`` (default: the only one).

    Usage:
        >>> ds = EventClipDataset("datasets/etram/train", seq_len=5, sampling="random")
        >>> item = ds[(12, None)]  # random clip 12
    """

    def __init__(
        self,
        path: str | Path,
        seq_len: int = 5,
        *,
        split: str | None = None,
        sampling: str = "stream",
        names: Sequence[str] | Mapping[int, str] | None = None,
        class_map: Mapping[int, int] | Sequence[int] | None = None,
        representation: str | None = None,
    ):
        if seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, got {seq_len}")
        if sampling not in (Sampling.STREAM, Sampling.RANDOM):
            raise ValueError(f"sampling must be 'stream' or 'random', not '{sampling}'")
        self.root = Path(path) / split if split else Path(path)
        self.seq_len, self.sampling = int(seq_len), sampling
        dirs = list_sequences(self.root)
        if not dirs:
            raise EventDataError(f"{self.root}: no prepared sequences (folders with labels_v2/)")
        self.sequences = [PreparedSequence(d, representation) for d in dirs]
        shapes = {(s.channels, *s.hw) for s in self.sequences}
        if len(shapes) != 1:
            raise EventDataError(f"{self.root}: sequences differ in (C, H, W): {sorted(shapes)}")
        self.channels, *hw = shapes.pop()
        self.hw = tuple(hw)
        self.settings = self.sequences[0].settings
        for seq in self.sequences[1:]:
            self.settings.require_same(seq.settings, str(self.sequences[0].repr_dir), str(seq.repr_dir))
        self.dtype = getattr(torch, self.settings.dtype)  # uint8, int8 or float16
        lut = _class_lut(class_map)
        self._boxes = [_SequenceBoxes(s, lut) for s in self.sequences]
        found = sorted({int(c) for b in self._boxes for c in np.unique(b.boxes[:, 0])})
        if names is None:
            names = {i: str(i) for i in range(found[-1] + 1 if found else 1)}
        self.names = dict(enumerate(names)) if not isinstance(names, Mapping) else {int(k): v for k, v in names.items()}
        if found and found[-1] >= len(self.names):
            raise EventDataError(f"{self.root}: class id {found[-1]} found but only {len(self.names)} names")
        self.clips_stream, self.stream_clip_ranges = self._stream_table()
        self.clips_random = self._random_table()

    # ------------------------------------------------------------------------------------------------ clip tables
    def _stream_table(self) -> tuple[np.ndarray, np.ndarray]:
        rows, ranges, T = [], [], self.seq_len
        for i, s in enumerate(self.sequences):
            begin = len(rows)
            if len(s.frame_repr_idx):
                for k, start in enumerate(range(max(int(s.frame_repr_idx.min()) - T + 1, 0), len(s), T)):
                    rows.append((i, start, min(start + T, len(s)), k == 0))
            ranges.append((begin, len(rows)))
        return np.array(rows, STREAM_CLIP), np.array(ranges, np.int64).reshape(-1, 2)

    def _random_table(self) -> np.ndarray:
        T = self.seq_len
        rows = [
            (i, r - T + 1, r + 1)
            for i, s in enumerate(self.sequences)
            for r in np.sort(s.frame_repr_idx).tolist()
            if r - T + 1 >= 0
        ]
        return np.array(rows, RANDOM_CLIP)

    def __len__(self) -> int:
        return len(self.clips_stream if self.sampling == Sampling.STREAM else self.clips_random)

    def random_clip_classes(self) -> list[np.ndarray]:
        """The classes of each random clip's labeled windows (small-object sampling weighs clips by them)."""
        return [self._boxes[int(r["seq"])].classes(int(r["start"]), int(r["stop"])) for r in self.clips_random]

    def sequence_classes(self) -> list[np.ndarray]:
        """The classes of each sequence's labeled windows (small-object sampling weighs streams by them)."""
        return [b.classes() for b in self._boxes]

    def class_counts(self) -> np.ndarray:
        """Boxes per class over every labeled window (``len(names)`` entries)."""
        cls = np.concatenate([b.boxes[:, 0] for b in self._boxes]).astype(np.int64) if self._boxes else []
        return np.bincount(cls, minlength=len(self.names))

    # ------------------------------------------------------------------------------------------------ items
    def window_boxes(self, seq_id: int, window: int) -> np.ndarray | None:
        """Boxes ``[cls, x1, y1, x2, y2]`` of one window (after class mapping), or None without a label frame."""
        return self._boxes[seq_id](window)

    def _parse(self, key) -> ClipKey:
        if isinstance(key, ClipKey):
            return key
        if isinstance(key, (tuple, list)):
            return ClipKey(int(key[0]), key[1] if len(key) > 1 else None, self.sampling == Sampling.RANDOM)
        return ClipKey(int(key), None, self.sampling == Sampling.RANDOM)

    def __getitem__(self, key) -> dict:
        key = self._parse(key)
        T, (H, W) = self.seq_len, self.hw
        padded = np.ones(T, bool)
        window_idx = np.full(T, -1, np.int64)
        window_t = np.full(T, -1, np.int64)
        labels: list[np.ndarray | None] = [None] * T
        if key.clip == PAD_CLIP:
            seq_id, is_first = -1, False
            img = torch.zeros((T, self.channels, H, W), dtype=self.dtype)
        else:
            table = self.clips_random if key.random else self.clips_stream
            row = table[key.clip]
            seq_id, start, stop = int(row["seq"]), int(row["start"]), int(row["stop"])
            is_first = True if key.random else bool(row["first"])
            seq, n = self.sequences[seq_id], stop - start
            hist = torch.from_numpy(seq.histograms(start, stop))
            img = hist if n == T else torch.cat([hist, hist.new_zeros((T - n, *hist.shape[1:]))])
            padded[:n] = False
            window_idx[:n] = np.arange(start, stop)
            window_t[:n] = seq.window_t[start:stop]
            labels[:n] = [self._boxes[seq_id](w) for w in range(start, stop)]
            img, labels = augment_clip(img, labels, key.aug)
            if key.aug is not None and key.aug.events is not None:  # polarity, drop, noise: the frames only
                img[:n] = augment_events(img[:n], key.aug.events, self.settings, range(start, stop))
        if key.is_first is not None:
            is_first = bool(key.is_first)
        labels = [b if b is not None and len(b) else None for b in labels]
        return {
            "img": img,
            "labels": labels,
            "labeled": torch.tensor([b is not None for b in labels]),
            "padded": torch.from_numpy(padded),
            "is_first": is_first,
            "seq_id": seq_id,
            "seq_name": self.sequences[seq_id].name if seq_id >= 0 else "",
            "window_idx": torch.from_numpy(window_idx),
            "window_t": torch.from_numpy(window_t),
            "hw": self.hw,
        }

    # ------------------------------------------------------------------------------------------------ Ultralytics
    @cached_property
    def labels(self) -> list[dict]:
        """One dict per labeled window (``cls`` (n, 1), ``bboxes`` (n, 4) normalised xywh, ``im_file``, ``shape``), for
        Ultralytics' label plots, class weights and max-det checks. Built on first use; not pickled to workers."""
        (H, W), out = self.hw, []
        for seq, boxes in zip(self.sequences, self._boxes):
            for w in np.sort(seq.frame_repr_idx).tolist():
                b = boxes(w)
                if b is None or not len(b):
                    continue
                out.append(
                    {
                        "cls": b[:, :1].copy(),
                        "bboxes": xyxy2xywhn(b[:, 1:5], w=W, h=H),
                        "im_file": f"{seq.name}:{w}",
                        "shape": (H, W),
                    }
                )
        return out

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("labels", None)
        return state

    def close(self) -> None:
        for s in self.sequences:
            s.close()


def _class_lut(class_map: Mapping[int, int] | Sequence[int] | None) -> np.ndarray | None:
    if class_map is None:
        return None
    if isinstance(class_map, Mapping):
        lut = np.full(max(int(k) for k in class_map) + 1 if class_map else 0, -1, np.int64)
        for k, v in class_map.items():
            lut[int(k)] = -1 if v is None else int(v)
        return lut
    return np.array([-1 if v is None else int(v) for v in class_map], np.int64)


def collate_clips(items: list[dict]) -> dict:
    """Stack B clip items into an Ultralytics-style batch of B*T frames (frame ``b * T + t``).

    Returns ``img`` uint8 (B, T, C, H, W); ``cls`` (N, 1), ``bboxes`` (N, 4) normalised xywh (stored H, W),
    ``motion`` (N, 2) (motion code, seconds stopped; see :mod:`.motion`), ``track`` (N,) (dense track id within the
    sequence, -1: none) and ``batch_idx`` (N,) float32 over all labeled frames; ``labeled``, ``padded``,
    ``window_idx``, ``window_t`` (B*T,); ``is_first``, ``seq_id`` (B,); per-frame lists ``im_file``
    (``"<sequence>:<window>"``, ``"<pad>"`` for padded frames), ``ori_shape``, ``resized_shape`` and ``ratio_pad``
    (pad-only: ``((1.0, 1.0), (0.0, 0.0))``).
    """
    T = len(items[0]["labels"])
    hw = tuple(items[0]["hw"])
    cls, boxes, idx, motion, track = [], [], [], [], []
    for b, item in enumerate(items):
        for t, lab in enumerate(item["labels"]):
            if lab is not None and len(lab):
                cls.append(lab[:, :1])
                boxes.append(xyxy2xywhn(lab[:, 1:5], w=hw[1], h=hw[0]))
                idx.append(np.full(len(lab), b * T + t, np.float32))
                motion.append(lab[:, 5:7] if lab.shape[1] >= 7 else np.tile([[UNKNOWN, 0.0]], (len(lab), 1)))
                track.append(lab[:, 7] if lab.shape[1] >= 8 else np.full(len(lab), -1, np.float32))
    im_file = [
        f"{item['seq_name']}:{int(w)}" if not p else "<pad>"
        for item in items
        for w, p in zip(item["window_idx"], item["padded"])
    ]
    n_frames = len(items) * T
    return {
        "img": torch.stack([item["img"] for item in items]),
        "cls": torch.from_numpy(np.concatenate(cls).astype(np.float32)) if cls else torch.zeros((0, 1)),
        "bboxes": torch.from_numpy(np.concatenate(boxes)) if boxes else torch.zeros((0, 4)),
        "batch_idx": torch.from_numpy(np.concatenate(idx)) if idx else torch.zeros(0),
        "motion": torch.from_numpy(np.concatenate(motion).astype(np.float32)) if motion else torch.zeros((0, 2)),
        "track": torch.from_numpy(np.concatenate(track).astype(np.float32)) if track else torch.zeros(0),
        "labeled": torch.cat([item["labeled"] for item in items]),
        "padded": torch.cat([item["padded"] for item in items]),
        "is_first": torch.tensor([item["is_first"] for item in items], dtype=torch.bool),
        "seq_id": torch.tensor([item["seq_id"] for item in items], dtype=torch.int64),
        "window_idx": torch.cat([item["window_idx"] for item in items]),
        "window_t": torch.cat([item["window_t"] for item in items]),
        "im_file": im_file,
        "ori_shape": [hw] * n_frames,
        "resized_shape": [hw] * n_frames,
        "ratio_pad": [((1.0, 1.0), (0.0, 0.0))] * n_frames,
    }
