"""Read prepared sequences (ours or RVT's): windows, their end times, histogram slices and labels per window.

Labels are served the way RVT's loader serves them (``RVT:data/genx_utils/labels.py``), in float32: boxes are
clamped to the full-resolution frame, then scaled by ``1 / downsample`` with their right and bottom edges clamped to
the stored frame, and boxes left flat are dropped.

Usage:
    >>> from yolo_etram.data.prepared import PreparedSequence
    >>> seq = PreparedSequence("datasets/etram/val/val_night_0001")
    >>> hist = seq.histograms(0, 5)  # uint8 (5, 20, 360, 640), one HDF5 read
    >>> boxes = seq.window_labels(3)  # structured boxes at the stored resolution, or None
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import numpy as np

from yolo_etram.utils.errors import EventDataError, one_line

from .event_settings import EventSettings
from .io import check_h5_filters, h5_read_error, open_h5

REPR_ROOT = "event_representations_v2"


def find_representation_dir(seq_dir: Path, name: str | None = None) -> Path:
    root = seq_dir / REPR_ROOT
    if name:
        d = root / name
        if not d.is_dir():
            raise EventDataError(
                f"{seq_dir}: no representation '{name}' (have {sorted(p.name for p in root.glob('*'))})"
            )
        return d
    dirs = sorted(p for p in root.glob("*") if p.is_dir()) if root.is_dir() else []
    if len(dirs) == 1:
        return dirs[0]
    from .event_settings import EventSettings

    default = root / EventSettings().folder_name  # prepare's default, when others were prepared beside it
    if default in dirs:
        return default
    raise EventDataError(
        f"{seq_dir}: expected one folder in {REPR_ROOT}/, found {[p.name for p in dirs]}; name the representation"
    )


def list_sequences(split_dir: str | Path) -> list[Path]:
    """Prepared sequence folders of a split (those with ``labels_v2``), sorted by name."""
    split_dir = Path(split_dir)
    return sorted(p for p in split_dir.iterdir() if (p / "labels_v2").is_dir()) if split_dir.is_dir() else []


class PreparedSequence:
    """One prepared sequence in RVT's layout.

    Args:
        seq_dir: ``<prepared>/<split>/<name>``.
        representation: folder name under ``event_representations_v2`` (default: the only one).
    """

    def __init__(self, seq_dir: str | Path, representation: str | None = None):
        self.dir = Path(seq_dir)
        self.name = self.dir.name
        self.repr_dir = find_representation_dir(self.dir, representation)
        files = sorted(self.repr_dir.glob("event_representations*.h5"))
        if len(files) != 1:
            raise EventDataError(
                f"{self.repr_dir}: expected one event_representations*.h5, found {[f.name for f in files]}"
            )
        self.h5_path = files[0]
        self.downsample = 2 if self.h5_path.stem.endswith("_ds2_nearest") else 1
        try:
            self.window_t = np.load(self.repr_dir / "timestamps_us.npy")
            self.frame_repr_idx = np.load(self.repr_dir / "objframe_idx_2_repr_idx.npy")
            self.frame_t = np.load(self.dir / "labels_v2" / "timestamps_us.npy")
            with np.load(self.dir / "labels_v2" / "labels.npz") as z:
                self.labels, self.frame_label_idx = z["labels"], z["objframe_idx_2_label_idx"]
        except Exception as e:  # numpy and zipfile raise nearly anything on a truncated or corrupt .npy/.npz
            raise EventDataError(
                f"{self.dir}: incomplete prepared sequence ({one_line(e)}); re-run prepare for it"
            ) from e
        self._check_indices()
        with open_h5(self.h5_path) as f:
            try:
                data = f.get("data")
                if data is None or not hasattr(data, "shape"):
                    raise EventDataError(f"{self.h5_path}: no dataset 'data'; re-run prepare for this sequence")
                self.shape = data.shape  # (N, C, H, W)
                if len(self.shape) != 4:
                    raise EventDataError(
                        f"{self.h5_path}: 'data' has shape {self.shape}, expected (N, C, H, W); "
                        "re-run prepare for this sequence"
                    )
                check_h5_filters(self.h5_path, "'data'", data)
                self.dtype = data.dtype
            except (OSError, KeyError, ValueError, TypeError, RuntimeError) as e:
                if isinstance(e, EventDataError):
                    raise
                raise EventDataError(
                    f"{self.h5_path}: corrupt histogram file ({one_line(e)}); re-run prepare for this sequence"
                ) from e
        if self.shape[0] != len(self.window_t):
            raise EventDataError(f"{self.h5_path}: {self.shape[0]} histograms but {len(self.window_t)} window times")
        self.settings = self._settings()
        self._h5 = None

    def _settings(self) -> EventSettings:
        """The event settings written beside the data, else what RVT's folder name says, else (an unknown name) RVT's
        stacked histogram; they must fit the stored frames."""
        s = EventSettings.load(self.repr_dir) or EventSettings.from_folder_name(self.repr_dir.name, self.downsample)
        if s is None:
            s = EventSettings(nbins=max(self.channels // 2, 1), downsample=self.downsample)
        problem = None
        if s.downsample != self.downsample:
            problem = f"downsample {s.downsample} but the file is {self.h5_path.name}"
        elif (s.channels, s.dtype) != (self.channels, self.dtype.name):
            problem = f"{self.channels} {self.dtype.name} channels stored"
        if problem:
            raise EventDataError(f"{self.repr_dir}: the event settings say {s.describe()}, {problem}; re-run prepare")
        return s

    def _check_indices(self) -> None:
        """The label and window indices must fit each other (a corrupt or mixed-up sequence otherwise fails later, far
        from its cause)."""
        names = self.labels.dtype.names or ()
        missing = [k for k in ("t", "x", "y", "w", "h", "class_id") if k not in names]
        problem = None
        if missing:
            problem = f"labels lack field(s) {', '.join(missing)}"
        elif any(
            a.ndim != 1 for a in (self.window_t, self.frame_repr_idx, self.frame_t, self.frame_label_idx, self.labels)
        ):
            problem = "index arrays are not 1-D"
        elif not (len(self.frame_t) == len(self.frame_repr_idx) == len(self.frame_label_idx)):
            problem = (
                f"{len(self.frame_t)} label frames but {len(self.frame_repr_idx)} window indices and "
                f"{len(self.frame_label_idx)} label indices"
            )
        elif len(self.frame_repr_idx) and (
            self.frame_repr_idx.min() < 0 or self.frame_repr_idx.max() >= len(self.window_t)
        ):
            problem = f"label-frame window indices outside 0..{len(self.window_t) - 1}"
        elif len(self.frame_label_idx) and (
            self.frame_label_idx.min() < 0
            or self.frame_label_idx.max() > len(self.labels)
            or np.any(np.diff(self.frame_label_idx) < 0)
        ):
            problem = f"label indices outside 0..{len(self.labels)} or decreasing"
        if problem:
            raise EventDataError(f"{self.dir}: inconsistent prepared sequence ({problem}); re-run prepare for it")

    def __len__(self) -> int:
        return len(self.window_t)

    @property
    def channels(self) -> int:
        return self.shape[1]

    @property
    def hw(self) -> tuple[int, int]:
        """Stored (possibly downsampled) height and width."""
        return self.shape[2], self.shape[3]

    def histograms(self, start: int, stop: int) -> np.ndarray:
        """Frames of windows ``start:stop`` as ``(n, C, H, W)`` in the stored dtype (uint8 histograms, int8 signed
        representations, float16 voxel grids), with one HDF5 read."""
        if self._h5 is None:
            self._h5 = open_h5(self.h5_path)
        try:
            return self._h5["data"][start:stop]
        except (OSError, KeyError, ValueError, RuntimeError) as e:
            raise h5_read_error(self.h5_path, f"histograms {start}:{stop}", e) from e

    def close(self) -> None:
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None

    def __getstate__(self):  # picklable for DataLoader workers: each opens its own file handle
        return {**self.__dict__, "_h5": None}

    @cached_property
    def repr_idx_to_frame(self) -> dict[int, int]:
        """Window index -> label-frame index, for the windows that carry labels."""
        return {int(r): i for i, r in enumerate(self.frame_repr_idx)}

    def frame_labels(self, frame: int) -> np.ndarray:
        """Boxes of label frame ``frame`` at the stored resolution (RVT's clamp, scale and flat-box removal)."""
        start = int(self.frame_label_idx[frame])
        stop = int(self.frame_label_idx[frame + 1]) if frame + 1 < len(self.frame_label_idx) else len(self.labels)
        return scale_boxes(self.labels[start:stop], self.hw, self.downsample)

    @cached_property
    def motion(self) -> np.ndarray | None:
        """Motion ground truth row-aligned with ``labels`` (``labels_v2/motion.npy``, synthetic data), else None."""
        from .motion import MOTION_DTYPE, MOTION_FILE

        path = self.dir / "labels_v2" / MOTION_FILE
        if not path.is_file():
            return None
        motion = np.load(path)
        if motion.dtype != MOTION_DTYPE or len(motion) != len(self.labels):
            raise EventDataError(
                f"{path}: expected {len(self.labels)} motion rows aligned with the labels, found "
                f"{len(motion)} of dtype {motion.dtype}; re-run prepare"
            )
        return motion

    def window_labels(self, window: int) -> np.ndarray | None:
        """Boxes of window ``window`` (stored resolution), or None if the window carries no label frame."""
        frame = self.repr_idx_to_frame.get(int(window))
        return None if frame is None else self.frame_labels(frame)


def stored_size(data: dict, split: str = "val") -> tuple[int, int] | None:
    """The stored (possibly downsampled) height and width of a split's windows, from its first sequence; None when
    the split has no sequence."""
    seqs = list_sequences(data.get(split) or data["val"])
    return PreparedSequence(seqs[0], data.get("representation")).hw if seqs else None


def scale_boxes(boxes: np.ndarray, stored_hw: tuple[int, int], downsample: int) -> np.ndarray:
    """RVT's ``clamp_to_frame_`` at full resolution, then ``scale_(1/downsample)``; float32 like RVT."""
    out = boxes.copy()
    h, w = stored_hw[0] * downsample, stored_hw[1] * downsample  # RVT's full-resolution frame
    x, y = out["x"].astype(np.float32), out["y"].astype(np.float32)
    x0, y0 = np.clip(x, 0, w - 1), np.clip(y, 0, h - 1)
    bw = np.clip(x + out["w"], 0, w - 1) - x0
    bh = np.clip(y + out["h"], 0, h - 1) - y0
    if downsample != 1:
        s = np.float32(1 / downsample)
        x1 = np.minimum((x0 + bw) * s, np.float32(w * s - 1))  # x0 + w, not x1: the same float32 rounding as RVT
        y1 = np.minimum((y0 + bh) * s, np.float32(h * s - 1))
        x0, y0 = x0 * s, y0 * s
        bw, bh = x1 - x0, y1 - y0
    out["x"], out["y"], out["w"], out["h"] = x0, y0, bw, bh
    return out[(out["w"] > 0) & (out["h"] > 0)]
