"""What every event representation shares: the window's float32 time normalisation, RVT's ``nearest-exact`` halving,
and the interface (``shape``, ``dtype``, ``__call__(x, y, p, t)``).

Every reference computes a window's time bins the same way, in torch float32 from the window's first and last event
(not its bounds): ``floor((t - t0) / max(t1 - t0, 1) * nbins)``. :func:`normalised_time` reproduces torch's rounding
(int64 difference cast to float32, float32 division), so events on a bin boundary land where the reference puts them.

Downsampling by 2 reproduces RVT's ``downsample_ev_repr`` (``F.interpolate(scale_factor=0.5, mode='nearest-exact')``,
int8 representations shifted through uint8 and back): it keeps pixel ``(2i+1, 2j+1)`` of the full-resolution
representation. Each pixel's value depends on its own events and the window's ``t0``/``t1`` only, so we keep the events
at odd x and odd y before building (a quarter of the work) with the bins still normalised to the whole window.

Usage:
    >>> from yolo_etram.data.representations import build_representation
    >>> rep = build_representation("vtei", height=720, width=1280, nbins=5, downsample=2)
    >>> frame = rep(x, y, p, t)  # int8 (5, 360, 640) in {-1, 0, 1}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

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


def normalised_time(t: np.ndarray, t0: int, t1: int) -> np.ndarray:
    """``(t - t0) / max(t1 - t0, 1)`` in float32, rounded as torch rounds ``int64_tensor / int``."""
    dt = (np.asarray(t, np.int64) - t0).astype(np.float32)
    return dt / np.float32(max(t1 - t0, 1))


def linear_bins(t: np.ndarray, t0: int, t1: int, nbins: int) -> tuple[np.ndarray, np.ndarray]:
    """RVT's (and ReYOLOv8's) bin of each event, ``min(floor(tnorm * nbins), nbins - 1)``, and ``tnorm * nbins``."""
    scaled = normalised_time(t, t0, t1) * np.float32(nbins)
    return np.minimum(np.floor(scaled), nbins - 1).astype(np.int32), scaled


@dataclass(frozen=True)
class EventRepresentation:
    """One event window -> one dense frame ``(channels, H', W')``.

    Args:
        height, width: sensor size in pixels (before downsampling).
        nbins: time bins.
        cutoff: saturation of the values (None: the dtype's range).
        downsample: 1, or 2 to keep every second pixel as RVT does for 1280x720 sensors.
    """

    height: int
    width: int
    nbins: int = 10
    cutoff: int | None = None
    downsample: int = 1

    name: ClassVar[str] = ""
    dtype: ClassVar[np.dtype] = np.dtype(np.uint8)
    polarities: ClassVar[int] = 2  # channel groups per time bin: 2 (OFF, ON stacked) or 1 (signed values)
    max_cutoff: ClassVar[int] = 255  # 0: the representation has no cutoff

    def __post_init__(self):
        if self.nbins < 1 or self.height < 1 or self.width < 1:
            raise ValueError(
                f"{type(self).__name__} needs nbins, height, width >= 1 (got {self.nbins}, {self.height}, {self.width})"
            )
        check_downsample(self.downsample, f"{type(self).__name__} downsample")
        if self.cutoff is not None and not self.max_cutoff:
            raise ValueError(f"{self.name} has no cutoff (got {self.cutoff}); leave it unset")
        if self.cutoff is not None and not 1 <= self.cutoff <= self.max_cutoff:
            raise ValueError(f"{self.name} cutoff must be in 1..{self.max_cutoff} (got {self.cutoff})")

    @property
    def out_hw(self) -> tuple[int, int]:
        """Stored height and width: RVT's ``nearest-exact`` halving gives ``floor(H/2), floor(W/2)``."""
        return (self.height // 2, self.width // 2) if self.downsample == 2 else (self.height, self.width)

    @property
    def channels(self) -> int:
        return self.polarities * self.nbins

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, *self.out_hw)

    def empty(self) -> np.ndarray:
        return np.zeros(self.shape, self.dtype)

    def kept_events(self, x, y, p, t):
        """The events whose pixel survives the downsampling, at stored coordinates; all of them at full resolution."""
        x, y, p, t = np.asarray(x), np.asarray(y), np.asarray(p), np.asarray(t)
        if self.downsample == 1:
            return x, y, p, t
        h, w = self.out_hw
        keep = (x & y & 1).astype(bool)  # odd x and odd y
        x, y, p, t = x[keep] >> 1, y[keep] >> 1, p[keep], t[keep]
        inside = (x < w) & (y < h)  # odd sizes: the last odd row/column has no output pixel
        if not inside.all():
            x, y, p, t = x[inside], y[inside], p[inside], t[inside]
        return x, y, p, t

    def __call__(self, x: np.ndarray, y: np.ndarray, p: np.ndarray, t: np.ndarray) -> np.ndarray:
        """The frame of one window's events (time-sorted, in-frame, p in {0, 1}) as ``dtype`` ``shape``."""
        if len(t) == 0:
            return self.empty()
        t0, t1 = int(t[0]), int(t[-1])  # bins span all events of the window, also those the downsample drops
        x, y, p, t = self.kept_events(x, y, p, t)
        if len(x) == 0:
            return self.empty()
        return self.build(x, y, p, t, t0, t1)

    def build(self, x, y, p, t, t0: int, t1: int) -> np.ndarray:
        raise NotImplementedError

    def pixel_index(self, x, y) -> np.ndarray:
        h, w = self.out_hw
        itype = np.int32 if self.nbins * self.polarities * h * w < 2**31 else np.int64
        return y.astype(itype) * w + x
