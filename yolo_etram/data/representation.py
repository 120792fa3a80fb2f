"""The stacked event histogram of RVT, in NumPy, bit-identical to RVT's ``StackedHistogram`` (fastmode) + downsample.

Channel ``c = p * nbins + b``: channels ``0..nbins-1`` hold OFF events (p=0), ``nbins..2*nbins-1`` ON events, bin 0 the
oldest tenth of the window. Time bins are normalised to the window's first and last event (not its bounds), computed in
float32 as RVT's torch code does, so boundary events fall in the same bins.

One deliberate difference (RVT spec section 10.3): RVT accumulates in uint8 and wraps modulo 256 before the clip, so a
hot pixel with 260 events in one bin stores 4; we count exactly and saturate at the cutoff (10). The outputs are equal
whenever no pixel-bin receives more than 255 events.

Downsampling by 2 reproduces RVT's ``F.interpolate(scale_factor=0.5, mode='nearest-exact')``, which keeps pixel
``(2i+1, 2j+1)``: we keep the events at odd x and odd y before counting (a quarter of the work, same bits).

Usage:
    >>> from yolo_etram.data.representation import StackedHistogram
    >>> rep = StackedHistogram(height=720, width=1280, nbins=10, cutoff=10, downsample=2)
    >>> hist = rep(x, y, p, t)  # uint8 (20, 360, 640)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DOWNSAMPLE_FACTORS = (1, 2)
"""``downsample`` everywhere (data YAMLs, ``prepare``, prediction, checkpoints) is a factor: stored resolution = sensor
resolution / factor; 2 is RVT's halving of 1280x720 sensors (``_ds2_nearest``)."""


def check_downsample(value, source: str = "downsample") -> int:
    """``value`` as a downsampling factor (1 or 2); a bool or any other value is a ``ValueError`` naming ``source``."""
    if isinstance(value, bool) or value not in DOWNSAMPLE_FACTORS:
        raise ValueError(
            f"{source}: {value!r} is not a downsampling factor; use 1 (full resolution) or 2 (RVT's "
            "halving of 1280x720 sensors)"
        )
    return int(value)


@dataclass(frozen=True)
class StackedHistogram:
    """RVT's stacked histogram of one event window.

    Args:
        height, width: sensor size in pixels (before downsampling).
        nbins: time bins per polarity.
        cutoff: counts saturate at this value (at most 255).
        downsample: 1, or 2 to keep every second pixel as RVT does for 1280x720 sensors (``_ds2_nearest``).
    """

    height: int
    width: int
    nbins: int = 10
    cutoff: int = 10
    downsample: int = 1

    def __post_init__(self):
        if self.nbins < 1 or self.height < 1 or self.width < 1:
            raise ValueError(
                f"StackedHistogram needs nbins, height, width >= 1 (got {self.nbins}, {self.height}, {self.width})"
            )
        check_downsample(self.downsample, "StackedHistogram downsample")
        if not 1 <= self.cutoff <= 255:
            raise ValueError(f"StackedHistogram cutoff must be in 1..255 (got {self.cutoff})")

    @property
    def out_hw(self) -> tuple[int, int]:
        """Stored height and width: RVT's ``nearest-exact`` halving gives ``floor(H/2), floor(W/2)``."""
        return (self.height // 2, self.width // 2) if self.downsample == 2 else (self.height, self.width)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (2 * self.nbins, *self.out_hw)

    @property
    def name(self) -> str:
        """Folder name of the representation, without the window length (see :func:`representation_dir_name`)."""
        return f"stacked_histogram_nbins={self.nbins}"

    def time_bins(self, t: np.ndarray, t0: int | None = None, t1: int | None = None) -> np.ndarray:
        """Bin of each event: ``min(floor((t - t0) / max(t1 - t0, 1) * nbins), nbins - 1)`` in float32 like RVT.

        ``t0`` and ``t1`` default to the first and last of ``t``; pass the window's when ``t`` is a subset of it."""
        t = np.asarray(t, np.int64)
        t0 = int(t[0]) if t0 is None else t0
        t1 = int(t[-1]) if t1 is None else t1
        dt = (t - t0).astype(np.float32)
        b = np.floor(dt / np.float32(max(t1 - t0, 1)) * np.float32(self.nbins))
        return np.minimum(b, self.nbins - 1).astype(np.int32)

    def __call__(self, x: np.ndarray, y: np.ndarray, p: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Histogram of one window's events (time-sorted, in-frame, p in {0, 1}) as uint8 ``(2*nbins, H', W')``."""
        out = np.zeros(self.shape, np.uint8)
        if len(t) == 0:
            return out
        t0, t1 = int(t[0]), int(t[-1])  # bins span all events of the window, also those the downsample drops
        x, y, p = np.asarray(x), np.asarray(y), np.asarray(p)
        if self.downsample == 2:
            h, w = self.out_hw
            keep = (x & y & 1).astype(bool)  # odd x and odd y
            x, y, p, t = x[keep] >> 1, y[keep] >> 1, p[keep], t[keep]
            inside = (x < w) & (y < h)  # odd sizes: the last odd row/column has no output pixel
            if not inside.all():
                x, y, p, t = x[inside], y[inside], p[inside], t[inside]
        else:
            h, w = self.height, self.width
        if len(x) == 0:
            return out
        b = self.time_bins(t, t0, t1)
        itype = np.int32 if out.size < 2**31 else np.int64
        flat = ((p.astype(itype) * self.nbins + b) * h + y) * w + x
        if len(flat) * 8 > out.size:  # dense: counting every index beats sorting
            counts = np.bincount(flat, minlength=out.size)
            return np.minimum(counts, self.cutoff).astype(np.uint8).reshape(self.shape)
        idx, n = np.unique(flat, return_counts=True)
        out.reshape(-1)[idx] = np.minimum(n, self.cutoff)
        return out


REPRESENTATION_DIR = "stacked_histogram_dt={window_ms}_nbins={nbins}"
"""RVT's folder name (under ``event_representations_v2/``) of a duration-windowed stacked histogram."""


def representation_dir_name(nbins: int = 10, window_ms: int = 50) -> str:
    """RVT's folder name for a duration-windowed stacked histogram, e.g. ``stacked_histogram_dt=50_nbins=10``."""
    return REPRESENTATION_DIR.format(window_ms=window_ms, nbins=nbins)


def parse_representation_dir(name: str | None) -> tuple[int, int] | None:
    """``(window_ms, nbins)`` of a folder named by :func:`representation_dir_name`; None for any other name."""
    import re

    m = re.fullmatch(REPRESENTATION_DIR.format(window_ms=r"(\d+)", nbins=r"(\d+)"), name or "")
    return (int(m[1]), int(m[2])) if m else None


def representation_file_name(downsample: int = 1) -> str:
    """RVT's file name: ``event_representations_ds2_nearest.h5`` when downsampled by 2."""
    return f"event_representations{'_ds2_nearest' if check_downsample(downsample) == 2 else ''}.h5"
