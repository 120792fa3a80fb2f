"""What defines a synthetic recording: ``SynthConfig``, eTraM's class names and ids, the size and dynamics of each kind
of road user, and the 30 Hz label clock. Every other module of the package reads these."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FINE_CLASS_NAMES = ("pedestrian", "car", "bicycle", "bus", "motorbike", "truck", "tram", "wheelchair")
"""eTraM's 8 classes, in id order."""
COARSE_CLASS_NAMES = ("pedestrian", "vehicle", "micromobility")
"""eTraM's 3 classes (the grouping all eTraM baselines use), in id order."""
FINE_TO_COARSE = (0, 1, 2, 1, 2, 1, 1, 2)
"""8-class id -> 3-class id."""


@dataclass(frozen=True)
class _KindSpec:
    """Physical size and dynamics of one kind of traffic participant (apparent height includes what an elevated
    camera sees of the roof)."""

    fine_id: int
    length_m: tuple[float, float]
    height_m: tuple[float, float]
    speed_mps: tuple[float, float]
    accel: float  # m/s^2
    decel: float  # comfortable braking, m/s^2
    min_gap_m: float  # bumper-to-bumper distance kept when queued
    frames: int  # animation frames (gait, pedalling, wheel spokes)
    stride_m: float  # distance per animation cycle


_KINDS: dict[str, _KindSpec] = {
    "pedestrian": _KindSpec(0, (0.62, 0.74), (1.55, 1.9), (1.0, 1.6), 1.5, 2.5, 0.5, 8, 1.5),
    "car": _KindSpec(1, (3.9, 4.9), (1.7, 2.0), (8.0, 13.0), 2.2, 3.5, 2.0, 1, 1.0),
    "bicycle": _KindSpec(2, (1.65, 1.85), (1.65, 1.85), (3.5, 6.0), 1.0, 2.5, 1.0, 6, 4.5),
    "bus": _KindSpec(3, (10.5, 12.5), (3.1, 3.4), (7.0, 10.0), 1.2, 2.5, 2.5, 1, 1.0),
    "motorbike": _KindSpec(4, (1.9, 2.2), (1.45, 1.65), (8.0, 13.0), 2.5, 4.0, 1.5, 1, 1.0),
    "truck": _KindSpec(5, (6.5, 9.0), (3.0, 3.7), (7.0, 11.0), 1.3, 3.0, 2.5, 1, 1.0),
    "tram": _KindSpec(6, (18.0, 26.0), (3.3, 3.6), (6.0, 9.0), 1.0, 2.0, 3.0, 1, 1.0),
    "wheelchair": _KindSpec(7, (1.0, 1.2), (1.25, 1.4), (0.7, 1.2), 0.8, 1.5, 0.5, 4, 1.2),
}

_VEHICLE_MIX = (("car", 0.78), ("truck", 0.09), ("bus", 0.06), ("motorbike", 0.05), ("tram", 0.02))
_BIKE_MIX = (("bicycle", 0.88), ("motorbike", 0.12))
_SIDEWALK_MIX = (("pedestrian", 0.94), ("wheelchair", 0.06))


EVENT_FORMATS = ("h5", "evt3", "evt2")
"""How a synthetic recording's events are written: eTraM's HDF5, or a Prophesee camera's EVT 3.0 / 2.0 ``.raw``."""


@dataclass
class SynthConfig:
    """Everything that defines a synthetic recording. Sizes and speeds scale with the sensor height (720 = eTraM)."""

    width: int = 1280
    height: int = 720
    duration_s: float = 10.0
    seed: int = 0
    classes: int = 3  # 3: pedestrian/vehicle/micromobility; 8: eTraM's 8 fine classes
    # sensor
    render_dt_us: int = 2000  # scene rendered (and the DVS model stepped) every this many µs
    contrast_threshold: float = 0.2  # log-intensity change that fires an event
    threshold_mismatch: float = 0.03  # std of the per-pixel threshold (log units)
    log_eps: float = 0.02  # dark level added before the log (a dark pixel is less sensitive)
    noise_rate_hz: float = 0.1  # background-activity events per pixel per second
    hot_pixels: int = -1  # number of hot pixels; -1: about one per 100k pixels
    hot_pixel_rate_hz: tuple[float, float] = (20.0, 200.0)
    # traffic
    density: float = 1.0  # multiplies every arrival rate and initial population
    stop_prob: float = 0.35  # chance that an object halts once at a random place while in view
    stop_duration_s: tuple[float, float] = (1.0, 4.0)
    static_objects: float = 1.0  # multiplies parked cars and people standing still from the start (may never move)
    moving_threshold_mps: float = 0.05  # below this speed an object counts as stationary (motion file)
    warmup_s: float = 8.0  # traffic simulated before t=0 so the road is already busy when the recording starts
    # labels
    label_hz: int = 30
    min_box_side_px: float = 2.0  # boxes narrower or lower than this after clipping are dropped
    min_visible_fraction: float = 0.1  # objects hidden behind nearer ones beyond this are not labeled
    # output
    chunk_s: float = 1.0  # events generated and written this much recording time at a time
    event_format: str = "h5"  # h5 (eTraM's <name>_td.h5, blosc), evt3 or evt2 (a camera's <name>.raw)

    def __post_init__(self) -> None:
        if self.width < 32 or self.height < 32:
            raise ValueError(f"sensor {self.width}x{self.height} too small (at least 32x32)")
        if self.classes not in (3, 8):
            raise ValueError(f"classes must be 3 or 8, not {self.classes}")
        if self.duration_s <= 0 or self.render_dt_us <= 0 or self.chunk_s <= 0:
            raise ValueError("duration_s, render_dt_us and chunk_s must be positive")
        if not 0.01 <= self.contrast_threshold <= 2:
            raise ValueError(f"contrast_threshold {self.contrast_threshold} out of range [0.01, 2]")
        if not 0 <= self.stop_prob <= 1:
            raise ValueError(f"stop_prob {self.stop_prob} out of range [0, 1]")
        if self.event_format not in EVENT_FORMATS:
            raise ValueError(f"event_format must be one of {', '.join(EVENT_FORMATS)}, not {self.event_format!r}")
        self.hot_pixel_rate_hz = tuple(self.hot_pixel_rate_hz)
        self.stop_duration_s = tuple(self.stop_duration_s)

    @property
    def duration_us(self) -> int:
        return int(round(self.duration_s * 1e6))


def label_times_us(duration_us: int, hz: int = 30) -> np.ndarray:
    """Label timestamps of a recording: ``int(k * 1e6 / hz)`` for k = 1, 2, ... up to the duration (33333, 66666,
    100000, ... at 30 Hz), the way Prophesee/eTraM box files are stamped."""
    k = np.arange(1, int(duration_us * hz // 1_000_000) + 1)
    return np.array([int(i * 1_000_000 / hz) for i in k], dtype=np.int64)
