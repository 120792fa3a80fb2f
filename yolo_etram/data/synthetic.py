"""Synthetic eTraM-like recordings: a static event camera over a road with traffic that stops and goes.

The project's embedded default dataset. It is written in the raw eTraM layout, so everything downstream (``prepare``,
training, evaluation, prediction) treats it exactly like a real split::

    OUT/{train,val,test}/synth_<split>_<i:04d>_td.h5       events/{x,y,p,t,width,height}, blosc zstd
    OUT/{train,val,test}/synth_<split>_<i:04d>_bbox.npy    Prophesee boxes at 30 Hz (BBOX_DTYPE)
    OUT/{train,val,test}/synth_<split>_<i:04d>_motion.npz  optional extra ground truth, row-aligned with the boxes

How a recording is made:

1. A ground plane seen obliquely by a static camera (rows farther away are smaller) holds a road: sidewalks, a parking
   lane, bike lanes, two lanes each way, a zebra crossing, and building facades behind. The background is rendered once.
2. A traffic simulation (20 ms steps, starting ``warmup_s`` before the recording so the road is populated) moves
   pedestrians, vehicles and micromobility: vehicles queue behind each other and yield to pedestrians on the crossing,
   pedestrians wait at the curb, cross, walk and pause, some objects halt for ``stop_duration_s`` at random, cars park
   and leave. Stopped objects keep their labels but stop emitting events: the case recurrent memory is for.
3. A DVS model renders the scene every ``render_dt_us`` (only the regions that changed), keeps a per-pixel
   log-intensity reference, and emits ON/OFF events each time the log intensity crosses the pixel's contrast threshold
   (per-pixel mismatch), with timestamps interpolated inside the step. Background-activity noise and hot pixels are
   added. Events are generated and written ``chunk_s`` at a time, so memory does not grow with duration.
4. Boxes at exactly 30 Hz (``t = int(k * 1e6 / 30)``, k >= 1) for every object at least partly visible (full object
   box, clipped to the frame), class ids in eTraM's 3-class (default) or 8-class scheme, ``track_id`` = object id.

Everything is a function of the seed: the same config gives identical files.

This module imports numpy and the standard library only (h5py and hdf5plugin come in through ``.io`` when a file is
written; no torch, no Ultralytics): it starts fast. Speed: a 10 s recording takes about 4 s at 640x360 and 13 s at
1280x720 on one CPU core; peak memory follows the events of one chunk, not the duration.

Usage:
    >>> from yolo_etram.data.synthetic import SynthConfig, synthesize_dataset
    >>> synthesize_dataset("datasets/etram_synth_raw", {"train": 4, "val": 1, "test": 1},
    ...                    SynthConfig(width=640, height=360, duration_s=10))
    $ etram-yolo synth datasets/etram_synth_raw --width 640 --height 360 --train 4 --val 1 --test 1
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .io import BBOX_DTYPE, EventH5Writer, save_npz_atomic, write_boxes

# ----------------------------------------------------------------------------------------------------------------------
# Classes
# ----------------------------------------------------------------------------------------------------------------------

FINE_CLASS_NAMES = ("pedestrian", "car", "bicycle", "bus", "motorbike", "truck", "tram", "wheelchair")
"""eTraM's 8 classes, in id order."""
COARSE_CLASS_NAMES = ("pedestrian", "vehicle", "micromobility")
"""eTraM's 3 classes (the grouping all eTraM baselines use), in id order."""
FINE_TO_COARSE = (0, 1, 2, 1, 2, 1, 1, 2)
"""8-class id -> 3-class id."""

MOTION_DTYPE = np.dtype([("t", "<u8"), ("track_id", "<u4"), ("moving", "?"), ("stationary_for_us", "<i8"),
                         ("seen_moving", "?")])
"""Rows of ``<name>_motion.npz``, aligned with the box file. ``moving``: speed above ``moving_threshold_mps``.
``stationary_for_us``: time since the object last moved (0 when moving; objects parked from the start count from the
simulation start, ``warmup_s`` before the recording). ``seen_moving``: the object was moving while in the frame at some
time since the recording began, i.e. it has produced events a model could have seen."""


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


# ----------------------------------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------------------------------


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
        self.hot_pixel_rate_hz = tuple(self.hot_pixel_rate_hz)
        self.stop_duration_s = tuple(self.stop_duration_s)

    @property
    def duration_us(self) -> int:
        return int(round(self.duration_s * 1e6))

    @property
    def class_names(self) -> tuple[str, ...]:
        return COARSE_CLASS_NAMES if self.classes == 3 else FINE_CLASS_NAMES


def label_times_us(duration_us: int, hz: int = 30) -> np.ndarray:
    """Label timestamps of a recording: ``int(k * 1e6 / hz)`` for k = 1, 2, ... up to the duration (33333, 66666,
    100000, ... at 30 Hz), the way Prophesee/eTraM box files are stamped."""
    k = np.arange(1, int(duration_us * hz // 1_000_000) + 1)
    return np.array([int(i * 1_000_000 / hz) for i in k], dtype=np.int64)


# ----------------------------------------------------------------------------------------------------------------------
# Scene geometry: a ground plane seen from an elevated camera, and the road laid out on it
# ----------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Ground:
    """Pinhole view of a ground plane whose road runs parallel to the image rows.

    Lines of constant depth Z (metres from the bottom row into the scene) are image rows; the scale (pixels per metre)
    along such a row falls linearly with height in the image and vanishes at the horizon, which lies above the frame.
    """

    width: int
    height: int
    ppm_near: float  # pixels per metre at the bottom row
    y_horizon: float
    depth_k: float  # 1/ppm grows by Z/depth_k with depth

    @classmethod
    def for_sensor(cls, width: int, height: int) -> "_Ground":
        ppm_near = 40.0 * height / 720.0
        return cls(width, height, ppm_near, -0.9 * height, 35.9 * ppm_near)

    @property
    def cx(self) -> float:
        return self.width / 2.0

    def ppm_at_depth(self, z):
        return 1.0 / (1.0 / self.ppm_near + np.asarray(z, dtype=np.float64) / self.depth_k)

    def row_at_depth(self, z):
        return self.y_horizon + self.ppm_at_depth(z) * (self.height - self.y_horizon) / self.ppm_near

    def ppm_at_row(self, y):
        return self.ppm_near * (np.asarray(y, dtype=np.float64) - self.y_horizon) / (self.height - self.y_horizon)

    def depth_at_row(self, y):
        return self.depth_k * (1.0 / self.ppm_at_row(y) - 1.0 / self.ppm_near)

    def visible_x(self, z: float) -> tuple[float, float]:
        """Ground X range (metres) that the frame shows at depth ``z``."""
        ppm = float(self.ppm_at_depth(z))
        return -self.cx / ppm, (self.width - self.cx) / ppm


# Road cross-section, depths in metres from the bottom row.
_NEAR_SIDEWALK = (1.5, 4.5)
_NEAR_CURB = 4.5
_ROAD = (4.7, 24.2)  # kerb to kerb
_CENTRE_LINE = 15.7
_FAR_CURB = 24.4
_FAR_SIDEWALK = (24.4, 27.4)
_FACADE_Z = 27.6
_CROSSWALK_HALF_WIDTH = 2.0
_STOP_LINE_OFFSET = 3.5  # stop line distance from the crosswalk centre
_NO_PARKING_HALF_WIDTH = 10.0


@dataclass
class _Lane:
    """A one-way lane: vehicles follow each other along X and yield at the crossing."""

    name: str
    z: float
    direction: int  # +1 drives towards +X (right), -1 to the left
    half: int  # 0: near half of the road, 1: far half (which half of the crossing it conflicts with)
    mix: tuple[tuple[str, float], ...]
    rate_hz: float
    parking: bool = False
    agents: list = field(default_factory=list)


def _make_lanes(density: float) -> list[_Lane]:
    return [
        _Lane("parking", 5.95, +1, 0, (("car", 0.9), ("truck", 0.1)), 0.0, parking=True),
        _Lane("near_bike", 7.95, +1, 0, _BIKE_MIX, 0.05 * density),
        _Lane("near_outer", 10.45, +1, 0, _VEHICLE_MIX, 0.2 * density),
        _Lane("near_inner", 13.95, +1, 0, _VEHICLE_MIX, 0.18 * density),
        _Lane("far_inner", 17.45, -1, 1, _VEHICLE_MIX, 0.18 * density),
        _Lane("far_outer", 20.95, -1, 1, _VEHICLE_MIX, 0.2 * density),
        _Lane("far_bike", 23.45, -1, 1, _BIKE_MIX, 0.05 * density),
    ]


# ----------------------------------------------------------------------------------------------------------------------
# Procedural textures and the background
# ----------------------------------------------------------------------------------------------------------------------


class _ValueNoise:
    """A smooth random field over the (supersampled) frame: random values on a coarse grid, bilinearly interpolated,
    so any band of rows can be sampled on its own."""

    def __init__(self, rng: np.random.Generator, shape: tuple[int, int], cell_px: float):
        cells = (max(1, int(shape[0] / cell_px)), max(1, int(shape[1] / cell_px)))
        self.grid = rng.standard_normal((cells[0] + 1, cells[1] + 1)).astype(np.float32)
        self.scale = (cells[0] / max(shape[0] - 1, 1), cells[1] / max(shape[1] - 1, 1))

    def sample(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return _bilinear_sample(self.grid, rows * self.scale[0], cols * self.scale[1])


def _bilinear_sample(grid: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Sample a 2-D ``grid`` at the outer product of fractional ``rows`` and ``cols`` coordinates."""
    r0 = np.clip(np.floor(rows).astype(np.int64), 0, grid.shape[0] - 2)
    c0 = np.clip(np.floor(cols).astype(np.int64), 0, grid.shape[1] - 2)
    fr = (rows - r0)[:, None].astype(np.float32)
    fc = (cols - c0)[None, :].astype(np.float32)
    g00, g01 = grid[r0][:, c0], grid[r0][:, c0 + 1]
    g10, g11 = grid[r0 + 1][:, c0], grid[r0 + 1][:, c0 + 1]
    return (g00 * (1 - fc) + g01 * fc) * (1 - fr) + (g10 * (1 - fc) + g11 * fc) * fr


@dataclass
class _Facade:
    """One building front: columns [x0, x1) of the supersampled image, its roof row, tone and window grid."""

    x0: int
    x1: int
    top: float
    tone: float
    window_m: tuple[float, float]
    glass: float


def _render_background(ground: _Ground, crosswalk_x: float, rng: np.random.Generator, supersample: int = 2,
                       band_rows: int = 128) -> np.ndarray:
    """The static scene's intensity (H, W) float32 in (0, 1]: facades, sidewalks, road markings, textures.

    Rendered supersampled, in bands of rows so memory stays small at any sensor size."""
    H, W, ss = ground.height, ground.width, supersample
    shape = (H * ss, W * ss)
    noise = {"asphalt": _ValueNoise(rng, shape, 12 * ss), "wear": _ValueNoise(rng, shape, 6 * ss),
             "grass": _ValueNoise(rng, shape, 3 * ss), "facade": _ValueNoise(rng, shape, 20 * ss)}
    patches = [(rng.uniform(-40, 40), rng.uniform(*_ROAD), rng.uniform(0.3, 1.2), rng.uniform(0.17, 0.24))
               for _ in range(int(rng.integers(3, 7)))]
    facades = _plan_facades(ground, rng, ss)
    out = np.empty((H, W), dtype=np.float32)
    cols = np.arange(shape[1])
    for r0 in range(0, shape[0], band_rows * ss):
        rows = np.arange(r0, min(shape[0], r0 + band_rows * ss))
        band = _background_band(ground, crosswalk_x, rows, cols, ss, noise, patches, facades)
        band += rng.normal(0, 0.012, band.shape).astype(np.float32)  # fine grain
        out[r0 // ss:(r0 + len(rows)) // ss] = band.reshape(len(rows) // ss, ss, W, ss).mean(axis=(1, 3))
    return np.clip(out, 0.03, 1.0)


def _background_band(ground: _Ground, crosswalk_x: float, rows: np.ndarray, cols: np.ndarray, ss: int,
                     noise: dict[str, _ValueNoise], patches: list, facades: list[_Facade]) -> np.ndarray:
    """Supersampled rows ``rows`` of the background."""
    ys = ((rows + 0.5) / ss).astype(np.float64)
    ppm = ground.ppm_at_row(ys).astype(np.float32)[:, None]
    Z = (ground.depth_at_row(ys).astype(np.float32)[:, None] + np.zeros((1, len(cols)), np.float32))
    X = (((cols + 0.5) / ss - ground.cx).astype(np.float32)[None, :]) / ppm
    wear = noise["wear"].sample(rows, cols)
    img = 0.27 + 0.035 * noise["asphalt"].sample(rows, cols)  # asphalt
    img[((Z > 7.2) & (Z < 8.7)) | ((Z > 22.7) & (Z < 24.2))] += 0.04  # bike lanes

    def paint(mask: np.ndarray, value: float, worn: float = 0.1) -> None:
        img[mask] = value * (1 - worn * np.abs(wear[mask]))

    # lane markings
    paint(np.abs(np.abs(Z - _CENTRE_LINE) - 0.18) < 0.08, 0.72)  # double centre line
    for zl in (12.2, 19.2):  # dashed lane dividers, interrupted at the crossing
        paint((np.abs(Z - zl) < 0.08) & (np.mod(X, 9.0) < 3.0) & (np.abs(X - crosswalk_x) > _STOP_LINE_OFFSET), 0.8)
    for zl in (8.7, 22.7, 4.85, 24.05):  # bike-lane and edge lines
        paint(np.abs(Z - zl) < 0.08, 0.78)
    paint((Z > 4.7) & (Z < 5.4) & (np.mod(X, 6.0) < 0.12) & (np.abs(X - crosswalk_x) > _NO_PARKING_HALF_WIDTH), 0.75)
    # zebra crossing and stop lines
    on_road = (Z > _ROAD[0] + 0.1) & (Z < _ROAD[1] - 0.1)
    paint(on_road & (np.abs(X - crosswalk_x) < _CROSSWALK_HALF_WIDTH) & (np.mod(Z - _ROAD[0], 1.0) < 0.5), 0.85, 0.2)
    paint((Z > 7.2) & (Z < _CENTRE_LINE) & (np.abs(X - (crosswalk_x - _STOP_LINE_OFFSET)) < 0.2), 0.8)
    paint((Z > _CENTRE_LINE) & (Z < 22.7) & (np.abs(X - (crosswalk_x + _STOP_LINE_OFFSET)) < 0.2), 0.8)
    for px, pz, r, tone in patches:  # manhole covers and repair patches
        img[(X - px) ** 2 + (Z - pz) ** 2 < r * r] = tone
    # kerbs, sidewalks (paving slabs), grass verge
    img[((Z >= _NEAR_CURB) & (Z <= _ROAD[0])) | ((Z >= _ROAD[1]) & (Z <= _FAR_CURB))] = 0.62
    sidewalk = ((Z >= _NEAR_SIDEWALK[0]) & (Z < _NEAR_CURB)) | ((Z > _FAR_CURB) & (Z <= _FACADE_Z))
    joints = (np.mod(X, 1.2) < 0.05) | (np.mod(Z, 1.2) < 0.05)
    img[sidewalk] = np.where(joints, 0.43, 0.5 + 0.03 * wear)[sidewalk]
    verge = Z < _NEAR_SIDEWALK[0]
    img[verge] = (0.3 + 0.06 * noise["grass"].sample(rows, cols))[verge]
    facade = Z > _FACADE_Z
    if facade.any():
        img[facade] = _facade_band(ground, rows, cols, ss, facades, noise["facade"])[facade]
    return img


def _plan_facades(ground: _Ground, rng: np.random.Generator, ss: int) -> list[_Facade]:
    """Buildings side by side along the far side of the street, with gaps."""
    W = ground.width * ss
    ppm = float(ground.ppm_at_depth(_FACADE_Z)) * ss
    base_row = float(ground.row_at_depth(_FACADE_Z)) * ss
    facades, x = [], 0.0
    while x < W:
        bw = rng.uniform(8, 25) * ppm
        glass = rng.uniform(0.08, 0.25) if rng.random() < 0.7 else rng.uniform(0.6, 0.8)
        facades.append(_Facade(int(x), int(min(W, x + bw)), base_row - rng.uniform(12, 40) * ppm, rng.uniform(0.3, 0.7),
                               (rng.uniform(2.5, 3.5), rng.uniform(3.0, 3.6)), glass))
        x += bw + rng.uniform(0, 2) * ppm
    return facades


def _facade_band(ground: _Ground, rows: np.ndarray, cols: np.ndarray, ss: int, facades: list[_Facade],
                 noise: _ValueNoise) -> np.ndarray:
    """Building fronts with window grids (sky above low ones) for supersampled ``rows``."""
    ppm = float(ground.ppm_at_depth(_FACADE_Z)) * ss
    base_row = float(ground.row_at_depth(_FACADE_Z)) * ss
    ys = rows[:, None].astype(np.float32)
    out = np.full((len(rows), len(cols)), 0.5, dtype=np.float32)
    for f in facades:
        xs = cols[f.x0:f.x1][None, :]
        block = np.where(ys >= f.top, f.tone, 0.78).astype(np.float32)
        u = np.mod((xs - f.x0) / ppm, f.window_m[0]) / f.window_m[0]
        v = np.mod((base_row - ys) / ppm, f.window_m[1]) / f.window_m[1]
        windows = (u > 0.25) & (u < 0.75) & (v > 0.35) & (v < 0.8) & (ys >= f.top) & (ys < base_row - 1.2 * ppm)
        out[:, f.x0:f.x1] = np.where(windows, f.glass, block)
    return out + 0.04 * noise.sample(rows, cols)


# ----------------------------------------------------------------------------------------------------------------------
# Sprites: procedural, antialiased side views of each kind
# ----------------------------------------------------------------------------------------------------------------------


class _Canvas:
    """Paint flat shapes on a supersampled grid. Coordinates are in units of the sprite height: x in [0, aspect],
    y in [0, 1] from the top. ``result`` gives premultiplied intensity and alpha at sprite resolution."""

    def __init__(self, w: int, h: int, texture: np.ndarray):
        self.w, self.h = w, h
        self.ss = 4 if h < 24 else 2
        self.aspect = w / h
        self.u = ((np.arange(w * self.ss) + 0.5) / (self.ss * h))[None, :]
        self.v = ((np.arange(h * self.ss) + 0.5) / (self.ss * h))[:, None]
        self.value = np.zeros((h * self.ss, w * self.ss), dtype=np.float32)
        self.alpha = np.zeros((h * self.ss, w * self.ss), dtype=bool)
        self.texture = _bilinear_sample(texture, np.linspace(0, texture.shape[0] - 1, h * self.ss),
                                        np.linspace(0, texture.shape[1] - 1, w * self.ss))

    def paint(self, mask: np.ndarray, value: float, textured: float = 0.06,
              shade: tuple[float, float, float, float] | None = None) -> None:
        """Fill ``mask`` with ``value``, modulated by the object's texture and optionally by a vertical shading
        ``(y_top, y_bottom, gain_top, gain_bottom)`` (light from the sky: lighter on top, darker below)."""
        mask = np.broadcast_to(mask, self.value.shape)
        val = value * (1 + textured * self.texture)
        if shade is not None:
            y0, y1, g0, g1 = shade
            val = val * (g0 + (g1 - g0) * np.clip((self.v - y0) / (y1 - y0), 0, 1))
        self.value[mask] = np.clip(val, 0.02, 1.0)[mask]
        self.alpha |= mask

    def rect(self, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
        return (self.u >= x0) & (self.u < x1) & (self.v >= y0) & (self.v < y1)

    def ellipse(self, cx: float, cy: float, rx: float, ry: float | None = None) -> np.ndarray:
        ry = rx if ry is None else ry
        return ((self.u - cx) / rx) ** 2 + ((self.v - cy) / ry) ** 2 <= 1.0

    def ring(self, cx: float, cy: float, r_out: float, r_in: float) -> np.ndarray:
        d2 = (self.u - cx) ** 2 + (self.v - cy) ** 2
        return (d2 <= r_out**2) & (d2 >= r_in**2)

    def capsule(self, p0: tuple[float, float], p1: tuple[float, float], r: float) -> np.ndarray:
        (x0, y0), (x1, y1) = p0, p1
        dx, dy = x1 - x0, y1 - y0
        L2 = max(dx * dx + dy * dy, 1e-12)
        s = np.clip(((self.u - x0) * dx + (self.v - y0) * dy) / L2, 0, 1)
        return (self.u - x0 - s * dx) ** 2 + (self.v - y0 - s * dy) ** 2 <= r * r

    def polygon(self, pts: list[tuple[float, float]]) -> np.ndarray:
        """Convex polygon, vertices in either orientation."""
        inside_pos = np.ones(self.value.shape, dtype=bool)
        inside_neg = np.ones(self.value.shape, dtype=bool)
        for (x0, y0), (x1, y1) in zip(pts, pts[1:] + pts[:1]):
            cross = (x1 - x0) * (self.v - y0) - (y1 - y0) * (self.u - x0)
            inside_pos &= cross >= 0
            inside_neg &= cross <= 0
        return inside_pos | inside_neg

    def result(self) -> np.ndarray:
        """(2, h, w) float32: premultiplied intensity and coverage."""
        ss, h, w = self.ss, self.h, self.w
        a = self.alpha.astype(np.float32)
        def pool(img: np.ndarray) -> np.ndarray:
            return img.reshape(h, ss, w, ss).mean(axis=(1, 3))

        return np.stack([pool(self.value * a), pool(a)]).astype(np.float32)


def _make_look(kind: str, rng: np.random.Generator) -> dict:
    """Colours (grey levels) and texture of one object, fixed for its life."""
    # car paints: black, dark, silver/grey, white; mid greys close to asphalt are rarer, as on real roads
    paint = float(rng.choice([0.05, 0.09, 0.14, 0.45, 0.55, 0.65, 0.78, 0.88, 0.93]) * rng.uniform(0.92, 1.08))
    look = {
        "body": paint,
        "glass": float(rng.uniform(0.06, 0.2) if rng.random() < 0.75 else rng.uniform(0.55, 0.75)),
        "skin": float(rng.uniform(0.35, 0.75)),
        "hair": float(rng.uniform(0.05, 0.45)),
        "shirt": float(rng.uniform(0.05, 0.9)),
        "pants": float(rng.uniform(0.05, 0.6)),
        "frame": float(rng.uniform(0.1, 0.8)),
        "accent": float(rng.uniform(0.1, 0.9)),
        "windows": int(rng.integers(5, 9)),
        "texture": rng.standard_normal((6, 10)).astype(np.float32),
    }
    if kind in ("bus", "tram"):
        look["body"] = float(rng.uniform(0.55, 0.9))
    if kind == "truck":
        look["box"] = float(rng.uniform(0.6, 0.92))
    return look


def _draw_sprite(kind: str, w: int, h: int, facing: int, frame: int, look: dict) -> np.ndarray:
    """Premultiplied intensity and alpha (2, h, w) of an object whose box is w x h pixels, facing +X or -X."""
    c = _Canvas(w, h, look["texture"])
    _DRAWERS[kind](c, look, frame)
    pa = c.result()
    return np.ascontiguousarray(pa[:, :, ::-1]) if facing < 0 else pa


def _draw_wheel(c: _Canvas, x: float, y: float, r: float) -> None:
    c.paint(c.ellipse(x, y, r), 0.05, 0.0)
    c.paint(c.ellipse(x, y, 0.5 * r), 0.45)
    c.paint(c.ellipse(x, y, 0.15 * r), 0.2, 0.0)


def _draw_car(c: _Canvas, look: dict, frame: int) -> None:
    A, body = c.aspect, look["body"]
    c.paint(c.rect(0.12 * A, 0.7, 0.9 * A, 0.94), 0.04, 0.0)  # dark underbody and its shadow
    c.paint(c.polygon([(0.2 * A, 0.45), (0.32 * A, 0.0), (0.72 * A, 0.0), (0.87 * A, 0.45)]), body,
            shade=(0.0, 0.45, 1.15, 0.9))
    c.paint(c.rect(0.34 * A, 0.0, 0.7 * A, 0.06), min(1.0, body * 1.2 + 0.1))  # roof seen from above
    c.paint(c.polygon([(0.25 * A, 0.43), (0.35 * A, 0.1), (0.5 * A, 0.1), (0.5 * A, 0.43)]), look["glass"])
    c.paint(c.polygon([(0.53 * A, 0.43), (0.53 * A, 0.1), (0.7 * A, 0.1), (0.82 * A, 0.43)]), look["glass"])
    lower = c.rect(0.0, 0.42, A, 0.8) | c.ellipse(0.04 * A, 0.61, 0.04 * A, 0.19)
    lower |= c.ellipse(0.96 * A, 0.61, 0.04 * A, 0.19)
    c.paint(lower, body, shade=(0.42, 0.8, 1.2, 0.65))
    c.paint(c.rect(0.02 * A, 0.44, 0.98 * A, 0.47), min(1.0, body * 1.3 + 0.15))  # highlight on the shoulder line
    c.paint(c.rect(0.02 * A, 0.62, 0.98 * A, 0.65), body * 0.6)  # trim
    c.paint(c.rect(0.515 * A, 0.45, 0.525 * A, 0.78), body * 0.6)  # door gap
    c.paint(c.rect(0.0, 0.72, A, 0.8), 0.12)  # bumpers and sills
    c.paint(c.rect(0.96 * A, 0.47, A, 0.56), 0.95, 0.0)  # headlight
    c.paint(c.rect(0.0, 0.46, 0.03 * A, 0.55), 0.25, 0.0)  # tail light
    for xw in (0.19 * A, 0.8 * A):
        c.paint(c.ellipse(xw, 0.8, 0.22), 0.05, 0.0)  # wheel arch
        _draw_wheel(c, xw, 0.82, 0.18)


def _draw_bus(c: _Canvas, look: dict, frame: int) -> None:
    A, body = c.aspect, look["body"]
    c.paint(c.rect(0.05 * A, 0.85, 0.95 * A, 0.96), 0.04, 0.0)  # underbody shadow
    c.paint(c.rect(0.02, 0.03, A - 0.02, 0.88) | c.rect(0.0, 0.08, A, 0.88), body, shade=(0.0, 0.88, 1.15, 0.7))
    c.paint(c.rect(0.3 * A, 0.0, 0.5 * A, 0.05), body * 0.8)  # roof unit
    n = look["windows"]
    for i in range(n):
        x0 = 0.2 * A + i * 0.76 * A / n
        c.paint(c.rect(x0, 0.17, x0 + 0.76 * A / n - 0.05, 0.46), look["glass"])
    c.paint(c.rect(0.94 * A, 0.12, A - 0.01, 0.55), look["glass"])  # windscreen
    c.paint(c.rect(0.07 * A, 0.17, 0.16 * A, 0.86), look["glass"] * 0.8)  # door
    c.paint(c.rect(0.0, 0.6, A, 0.66), look["accent"])  # livery stripe
    c.paint(c.rect(0.0, 0.8, A, 0.88), 0.15)  # skirt
    for xw in (0.15 * A, 0.8 * A):
        _draw_wheel(c, xw, 0.9, 0.1)


def _draw_truck(c: _Canvas, look: dict, frame: int) -> None:
    A = c.aspect
    c.paint(c.rect(0.0, 0.0, 0.76 * A, 0.78), look["box"], shade=(0.0, 0.78, 1.1, 0.75))
    c.paint(c.rect(0.02 * A, 0.3, 0.74 * A, 0.34), look["accent"])
    c.paint(c.rect(0.0, 0.76, A, 0.9), 0.05, 0.0)  # chassis and shadow
    c.paint(c.rect(0.78 * A, 0.22, A, 0.86) | c.ellipse(0.95 * A, 0.3, 0.05 * A, 0.08), look["body"],
            shade=(0.22, 0.86, 1.15, 0.7))
    c.paint(c.rect(0.84 * A, 0.28, 0.98 * A, 0.5), look["glass"])
    for xw in (0.12 * A, 0.24 * A, 0.88 * A):
        _draw_wheel(c, xw, 0.88, 0.12)


def _draw_tram(c: _Canvas, look: dict, frame: int) -> None:
    A, body = c.aspect, look["body"]
    c.paint(c.capsule((0.45 * A, 0.12), (0.5 * A, 0.01), 0.01) | c.capsule((0.55 * A, 0.12), (0.5 * A, 0.01), 0.01)
            | c.rect(0.47 * A, 0.0, 0.53 * A, 0.02), 0.15, 0.0)  # pantograph
    c.paint(c.rect(0.0, 0.12, A, 0.93), body, shade=(0.12, 0.93, 1.1, 0.7))
    for i in range(int(A / 0.55)):
        x0 = 0.15 + i * 0.55
        if x0 + 0.4 < A - 0.1:
            c.paint(c.rect(x0, 0.25, x0 + 0.4, 0.55), look["glass"])
    c.paint(c.rect(0.0, 0.62, A, 0.66), look["accent"])
    c.paint(c.rect(0.05, 0.9, A - 0.05, 1.0), 0.05, 0.0)  # bogies


def _draw_pedestrian(c: _Canvas, look: dict, frame: int) -> None:
    A = c.aspect
    xc = A / 2
    phase = 2 * math.pi * frame / 8
    swing = 0.42 * math.sin(phase)
    hip, shoulder, leg, arm = (xc, 0.5), (xc, 0.19), 0.47, 0.3
    for s, shade in ((-1, 0.8), (1, 1.0)):  # far limbs first, a little darker
        foot = (xc + leg * math.sin(s * swing), hip[1] + leg * math.cos(s * swing))
        c.paint(c.capsule(hip, foot, 0.05), look["pants"] * shade)
        hand = (xc - arm * math.sin(s * swing * 0.8), shoulder[1] + arm * math.cos(s * swing * 0.8))
        c.paint(c.capsule(shoulder, hand, 0.035), look["shirt"] * shade * 0.9)
        if s < 0:
            c.paint(c.capsule(shoulder, hip, 0.1) | c.rect(xc - 0.1, 0.17, xc + 0.1, 0.52), look["shirt"])
    c.paint(c.ellipse(xc + 0.01, 0.075, 0.06, 0.07), look["skin"])
    c.paint(c.ellipse(xc - 0.01, 0.055, 0.065, 0.05), look["hair"])


def _draw_bicycle(c: _Canvas, look: dict, frame: int) -> None:
    A = c.aspect
    r = 0.2
    rear, front = (r + 0.01, 0.79), (A - r - 0.01, 0.79)
    crank, seat, head = (0.47 * A, 0.79), (0.4 * A, 0.5), (0.74 * A, 0.47)
    phase = 2 * math.pi * frame / 6
    pedal_far = (crank[0] - 0.08 * math.cos(phase), crank[1] - 0.08 * math.sin(phase))
    pedal_near = (crank[0] + 0.08 * math.cos(phase), crank[1] + 0.08 * math.sin(phase))
    hip, shoulder = (seat[0], seat[1] - 0.04), (0.58 * A, 0.2)
    _draw_leg(c, hip, pedal_far, look["pants"] * 0.8)
    for x, y in (rear, front):
        c.paint(c.ring(x, y, r, r - 0.035), 0.06, 0.0)
        c.paint(c.ellipse(x, y, 0.02), 0.4, 0.0)
    for p, q in ((rear, seat), (seat, crank), (crank, rear), (seat, head), (head, front), (crank, head)):
        c.paint(c.capsule(p, q, 0.018), look["frame"], 0.0)
    c.paint(c.capsule(head, (0.72 * A, 0.38), 0.018), 0.1, 0.0)
    c.paint(c.capsule(hip, shoulder, 0.08), look["shirt"])
    c.paint(c.capsule(shoulder, (0.71 * A, 0.38), 0.03), look["shirt"] * 0.9)
    c.paint(c.ellipse(shoulder[0] + 0.04, 0.1, 0.065, 0.07), look["skin"])
    c.paint(c.ellipse(shoulder[0] + 0.03, 0.07, 0.075, 0.05), look["accent"])  # helmet
    _draw_leg(c, hip, pedal_near, look["pants"])


def _draw_leg(c: _Canvas, hip: tuple[float, float], foot: tuple[float, float], value: float) -> None:
    knee = ((hip[0] + foot[0]) / 2 + 0.07, (hip[1] + foot[1]) / 2 - 0.03)
    c.paint(c.capsule(hip, knee, 0.045) | c.capsule(knee, foot, 0.04), value)


def _draw_motorbike(c: _Canvas, look: dict, frame: int) -> None:
    A = c.aspect
    for x in (0.2, A - 0.2):
        _draw_wheel(c, x, 0.8, 0.19)
    c.paint(c.ellipse(A / 2, 0.58, 0.36 * A, 0.13), look["body"])
    c.paint(c.capsule((A - 0.2, 0.8), (0.78 * A, 0.38), 0.03), 0.2, 0.0)  # fork
    hip, shoulder = (0.42 * A, 0.45), (0.52 * A, 0.2)
    c.paint(c.capsule(hip, shoulder, 0.09), look["shirt"])
    c.paint(c.capsule(shoulder, (0.75 * A, 0.36), 0.035), look["shirt"] * 0.85)
    _draw_leg(c, hip, (0.5 * A, 0.72), look["pants"])
    c.paint(c.ellipse(shoulder[0] + 0.04, 0.1, 0.085), look["accent"])  # helmet


def _draw_wheelchair(c: _Canvas, look: dict, frame: int) -> None:
    A = c.aspect
    wx, wy, r = 0.36 * A, 0.72, 0.26
    c.paint(c.rect(0.25 * A, 0.5, 0.62 * A, 0.57), 0.15, 0.0)  # seat
    c.paint(c.capsule((0.25 * A, 0.2), (0.25 * A, 0.55), 0.02), 0.15, 0.0)  # back rest
    hip, shoulder = (0.33 * A, 0.5), (0.36 * A, 0.2)
    c.paint(c.capsule(hip, shoulder, 0.09), look["shirt"])
    c.paint(c.capsule(hip, (0.66 * A, 0.5), 0.06) | c.capsule((0.66 * A, 0.5), (0.7 * A, 0.86), 0.05), look["pants"])
    c.paint(c.ellipse(shoulder[0] + 0.03, 0.09, 0.07), look["skin"])
    c.paint(c.ring(wx, wy, r, r - 0.04), 0.08, 0.0)
    angle = frame * math.pi / 8
    for k in range(2):  # spokes turn as it rolls
        a = angle + k * math.pi / 2
        dx, dy = (r - 0.03) * math.cos(a), (r - 0.03) * math.sin(a)
        c.paint(c.capsule((wx - dx, wy - dy), (wx + dx, wy + dy), 0.012), 0.55, 0.0)
    c.paint(c.capsule(shoulder, (wx + 0.05, wy - 0.15), 0.03), look["shirt"] * 0.9)
    c.paint(c.ellipse(0.8 * A, 0.93, 0.06), 0.08, 0.0)  # castor


_DRAWERS: dict[str, Callable[[_Canvas, dict, int], None]] = {
    "pedestrian": _draw_pedestrian, "car": _draw_car, "bicycle": _draw_bicycle, "bus": _draw_bus,
    "motorbike": _draw_motorbike, "truck": _draw_truck, "tram": _draw_tram, "wheelchair": _draw_wheelchair,
}


# ----------------------------------------------------------------------------------------------------------------------
# Traffic simulation
# ----------------------------------------------------------------------------------------------------------------------

_SIM_DT_S = 0.02


@dataclass
class _Agent:
    """One traffic participant while the simulation runs; its history becomes a :class:`_Track`."""

    id: int
    kind: str
    length_m: float
    height_m: float
    cruise_mps: float
    x: float
    z: float
    facing: int
    look_seed: int
    lane: _Lane | None = None
    plan: list = field(default_factory=list)  # walkers: steps still to do
    v: float = 0.0
    dist: float = 0.0
    parked: bool = False
    depart_at_s: float = math.inf
    stop_x: float | None = None  # a lane agent halts with its front at this X ...
    stop_for_s: float = 0.0  # ... for this long
    stopped_s: float = 0.0
    ready_s: float = 0.0  # how long a stopped lane agent has had room to go (reaction time)
    reaction_s: float = 0.8
    crossing_half: int | None = None
    wait_s: float = 0.0
    done: bool = False
    first_step: int = 0
    history: list = field(default_factory=list)

    @property
    def spec(self) -> _KindSpec:
        return _KINDS[self.kind]


@dataclass
class _Track:
    """An object's trajectory sampled at the simulation steps ``first_step ... first_step + len - 1``."""

    id: int
    kind: str
    length_m: float
    height_m: float
    look: dict
    first_step: int
    x: np.ndarray
    z: np.ndarray
    v: np.ndarray
    dist: np.ndarray
    facing: np.ndarray

    @property
    def spec(self) -> _KindSpec:
        return _KINDS[self.kind]


class _TrafficSim:
    """A small traffic simulation on the road layout; deterministic given its generator."""

    def __init__(self, cfg: SynthConfig, ground: _Ground, crosswalk_x: float, rng: np.random.Generator):
        self.cfg, self.ground, self.crosswalk_x, self.rng = cfg, ground, crosswalk_x, rng
        self.lanes = _make_lanes(cfg.density)
        self.walkers: list[_Agent] = []
        self.finished: list[_Agent] = []
        self.next_id = 1
        self.step = 0
        self.t0_s = -cfg.warmup_s
        self.n_steps = int(math.ceil((cfg.duration_s + cfg.warmup_s) / _SIM_DT_S)) + 2

    # -- spawning ------------------------------------------------------------------------------------------------------

    def _new_agent(self, kind: str, x: float, z: float, facing: int, **kw) -> _Agent:
        spec, rng = _KINDS[kind], self.rng
        height = rng.uniform(*spec.height_m)
        length = height * rng.uniform(0.36, 0.42) if kind == "pedestrian" else rng.uniform(*spec.length_m)
        agent = _Agent(self.next_id, kind, length, height, rng.uniform(*spec.speed_mps), x, z, facing,
                       int(rng.integers(2**31)), first_step=self.step, reaction_s=rng.uniform(0.5, 1.2), **kw)
        self.next_id += 1
        return agent

    def _choose(self, mix: tuple[tuple[str, float], ...]) -> str:
        names, weights = zip(*mix)
        return names[int(self.rng.choice(len(names), p=np.array(weights) / sum(weights)))]

    def _maybe_random_stop(self, a: _Agent, lane: _Lane) -> None:
        """With probability ``stop_prob``, make a lane agent halt once, somewhere ahead of it in view and away from
        the crossing (queues then form behind it)."""
        if self.rng.random() >= self.cfg.stop_prob:
            return
        x0, x1 = self.ground.visible_x(lane.z)
        span = x1 - x0
        front = lane.direction * a.x + a.length_m / 2
        for _ in range(10):
            xs = float(self.rng.uniform(x0 + 0.15 * span, x1 - 0.15 * span))
            if abs(xs - self.crosswalk_x) > 7.0 and lane.direction * xs > front + 2.0:
                a.stop_x = xs
                a.stop_for_s = float(self.rng.uniform(*self.cfg.stop_duration_s))
                return

    def _spawn_in_lane(self, lane: _Lane, x: float, v: float | None = None) -> _Agent:
        a = self._new_agent(self._choose(lane.mix), x, lane.z + self.rng.uniform(-0.3, 0.3), lane.direction, lane=lane)
        a.v = a.cruise_mps if v is None else v
        lane.agents.append(a)
        return a

    def _lane_entry_x(self, lane: _Lane, length: float) -> float:
        x0, x1 = self.ground.visible_x(lane.z)
        return x0 - length / 2 - 1.0 if lane.direction > 0 else x1 + length / 2 + 1.0

    def _arrive_lane(self, lane: _Lane) -> None:
        a = self._spawn_in_lane(lane, 0.0)
        a.x = self._lane_entry_x(lane, a.length_m)
        others = [b for b in lane.agents if b is not a]
        if others:  # keep the entry clear: drop the arrival when the last vehicle is still at the edge
            rear = min(others, key=lambda b: lane.direction * b.x)
            gap = lane.direction * (rear.x - a.x) - (rear.length_m + a.length_m) / 2
            if gap < a.spec.min_gap_m + 4.0:
                lane.agents.remove(a)
                return
            a.v = min(a.v, rear.v + math.sqrt(2 * a.spec.decel * max(gap - a.spec.min_gap_m, 0.0)))
        self._maybe_random_stop(a, lane)

    def _populate(self) -> None:
        """Initial scene at the start of the warm-up: moving traffic spread along each lane, parked cars, people."""
        rng, cfg = self.rng, self.cfg
        for lane in self.lanes:
            x0, x1 = self.ground.visible_x(lane.z)
            if lane.parking:
                self._park_cars(lane, x0, x1)
                continue
            n = rng.poisson(lane.rate_hz * (x1 - x0) / 10.0)
            for x in np.sort(rng.uniform(x0, x1, n)):
                a = self._spawn_in_lane(lane, float(x))
                if any(abs(b.x - a.x) < (a.length_m + b.length_m) / 2 + 3 for b in lane.agents if b is not a):
                    lane.agents.remove(a)
                else:
                    self._maybe_random_stop(a, lane)
        for side in (0, 1):
            x0, x1 = self.ground.visible_x(np.mean(_NEAR_SIDEWALK) if side == 0 else np.mean(_FAR_SIDEWALK))
            for _ in range(rng.poisson(cfg.density * (x1 - x0) / 12.0)):
                self._spawn_walker(side, x=float(rng.uniform(x0, x1)))
            for _ in range(rng.poisson(1.2 * cfg.density * cfg.static_objects)):
                self._spawn_stander(side, float(rng.uniform(x0 + 2, x1 - 2)))

    def _park_cars(self, lane: _Lane, x0: float, x1: float) -> None:
        rng, cfg = self.rng, self.cfg
        x = x0 + rng.uniform(-3, 2)
        while x < x1 + 3:
            kind = self._choose(lane.mix)
            length = rng.uniform(*_KINDS[kind].length_m)
            clear = abs(x + length / 2 - self.crosswalk_x) > _NO_PARKING_HALF_WIDTH + length / 2
            if clear and rng.random() < 0.45 * cfg.static_objects:
                a = self._new_agent(kind, x + length / 2, lane.z, +1, lane=lane, parked=True)
                a.length_m = length
                a.cruise_mps = rng.uniform(4.0, 7.0)
                if rng.random() < 0.4:
                    a.depart_at_s = rng.uniform(self.t0_s, cfg.duration_s + 10)
                lane.agents.append(a)
                x += length + rng.uniform(1.0, 2.5)
            else:
                x += rng.uniform(4.0, 8.0)

    def _arrive_parker(self, lane: _Lane) -> None:
        """A car that drives into the parking lane and parks behind the last parked car (stationary for long)."""
        x0, x1 = self.ground.visible_x(lane.z)
        limit = self.crosswalk_x - _NO_PARKING_HALF_WIDTH
        parked_left = [b.x - b.length_m / 2 for b in lane.agents if b.x < self.crosswalk_x]
        if parked_left:
            limit = min(limit, min(parked_left))
        a = self._spawn_in_lane(lane, 0.0)
        a.x = self._lane_entry_x(lane, a.length_m)
        a.cruise_mps = self.rng.uniform(4.0, 7.0)
        a.v = a.cruise_mps
        lo, hi = x0 + a.length_m + 2, limit - 1.5
        if hi <= lo or any(lane.direction * (b.x - a.x) < a.length_m + 6 for b in lane.agents if b is not a):
            lane.agents.remove(a)
            return
        a.stop_x = self.rng.uniform(lo, hi)
        a.stop_for_s = self.rng.uniform(8.0, 60.0)

    def _spawn_walker(self, side: int, x: float | None = None) -> None:
        """A pedestrian (or wheelchair) walking along a sidewalk; some cross the road, some pause on the way."""
        rng = self.rng
        kind = self._choose(_SIDEWALK_MIX)
        z = self._sidewalk_z(side)
        facing = 1 if rng.random() < 0.5 else -1
        x0, x1 = self.ground.visible_x(z)
        if x is None:
            x = x0 - 1.0 if facing > 0 else x1 + 1.0
        a = self._new_agent(kind, x, z, facing)
        a.v = a.cruise_mps
        plan: list = []
        ahead = (lambda xx: facing * (xx - x) > 0)
        if rng.random() < 0.3 and ahead(self.crosswalk_x):
            xc = self.crosswalk_x + rng.uniform(-1.5, 1.5)
            plan += self._crossing_plan(side, xc, z)
        elif rng.random() < self.cfg.stop_prob:
            xp = rng.uniform(x0 + 2, x1 - 2)
            if ahead(xp):
                plan += [("walk_to", xp, z), ("wait", rng.uniform(*self.cfg.stop_duration_s))]
        plan.append(("exit",))
        a.plan = plan
        self.walkers.append(a)

    def _crossing_plan(self, side: int, xc: float, z_from: float) -> list:
        rng = self.rng
        kerb_from, kerb_to = (_NEAR_CURB - 0.1, _FAR_CURB + 0.1) if side == 0 else (_FAR_CURB + 0.1, _NEAR_CURB - 0.1)
        first, second = (0, 1) if side == 0 else (1, 0)
        z_after = self._sidewalk_z(1 - side)
        return [("walk_to", xc, z_from), ("walk_to", xc, kerb_from), ("cross_wait", first),
                ("cross", xc, _CENTRE_LINE, first), ("cross_wait", second), ("cross", xc, kerb_to, second),
                ("walk_to", xc + rng.uniform(-1, 1), z_after), ("face", 1 if rng.random() < 0.5 else -1)]

    def _spawn_stander(self, side: int, x: float) -> None:
        """Somebody standing still for a long time (waiting, talking), then walking away."""
        z = self._sidewalk_z(side)
        a = self._new_agent("pedestrian", x, z, 1 if self.rng.random() < 0.5 else -1)
        a.plan = [("wait", self.rng.uniform(self.cfg.warmup_s + 1, self.cfg.warmup_s + 40)), ("exit",)]
        self.walkers.append(a)

    def _sidewalk_z(self, side: int) -> float:
        if side == 0:
            return float(self.rng.uniform(_NEAR_SIDEWALK[0] + 0.3, _NEAR_CURB - 0.3))
        return float(self.rng.uniform(_FAR_CURB + 0.3, _FAR_SIDEWALK[1] - 0.3))

    # -- crossing rules ------------------------------------------------------------------------------------------------

    def _stop_line_x(self, lane: _Lane) -> float:
        return self.crosswalk_x - lane.direction * _STOP_LINE_OFFSET

    def _half_blocked(self, half: int) -> bool:
        return any(w.crossing_half == half for w in self.walkers)

    def _half_safe_to_enter(self, half: int) -> bool:
        """A pedestrian may step onto this half of the crossing: no vehicle is in it or too close to stop."""
        for lane in self.lanes:
            if lane.half != half:
                continue
            d, line = lane.direction, self._stop_line_x(lane)
            far_edge = d * (self.crosswalk_x + d * (_CROSSWALK_HALF_WIDTH + 0.5))
            for a in lane.agents:
                front, rear = d * a.x + a.length_m / 2, d * a.x - a.length_m / 2
                if front > d * line and rear < far_edge:
                    return False
                gap = d * line - front
                if 0 < gap and a.v * a.v / (2 * gap) > 0.7 * a.spec.decel:
                    return False
        return True

    # -- dynamics ------------------------------------------------------------------------------------------------------

    def _update_lane(self, lane: _Lane, t_s: float) -> None:
        d, dt = lane.direction, _SIM_DT_S
        blocked = self._half_blocked(lane.half)
        line = d * self._stop_line_x(lane)
        leader: _Agent | None = None
        for a in sorted(lane.agents, key=lambda b: -d * b.x):
            spec = a.spec
            front = d * a.x + a.length_m / 2
            if a.parked and t_s >= a.depart_at_s and leader is None:
                a.parked = False
            v_cap = 0.0 if a.parked else a.cruise_mps
            room = math.inf  # distance the front may still advance this step
            if leader is not None:
                gap = (d * leader.x - leader.length_m / 2) - front - spec.min_gap_m
                v_cap = min(v_cap, _safe_speed(gap, leader.v, spec.decel))
                room = min(room, max(gap, 0.0) + leader.v * dt)
            if a.stop_x is not None:
                gap = d * a.stop_x - front
                if gap < 0.05 and a.v < 0.01:
                    a.stopped_s += dt
                    if a.stopped_s >= a.stop_for_s:
                        a.stop_x = None
                elif gap > -0.5:
                    v_cap = min(v_cap, _safe_speed(gap, 0.0, spec.decel))
                    room = min(room, max(gap, 0.0))
            if blocked:
                gap = line - front
                if gap > -0.01 and not (gap > 0 and a.v * a.v / (2 * gap) > 1.5 * spec.decel):
                    v_cap = min(v_cap, _safe_speed(gap, 0.0, spec.decel))
                    room = min(room, max(gap, 0.0))
            if a.v < 0.01:  # queued vehicles start one after another, each after a reaction time
                a.ready_s = a.ready_s + dt if v_cap > 0.5 else 0.0
                if a.ready_s < a.reaction_s:
                    v_cap = 0.0
            v_new = max(0.0, min(a.v + spec.accel * dt, v_cap))
            if v_new < 0.02 and v_cap < 0.05:
                v_new = 0.0
            step = min(0.5 * (a.v + v_new) * dt, room)
            a.x += d * step
            a.dist += step
            a.v = v_new
            leader = a
        x0, x1 = self.ground.visible_x(lane.z)
        for a in list(lane.agents):
            if (d > 0 and a.x - a.length_m / 2 > x1 + 2) or (d < 0 and a.x + a.length_m / 2 < x0 - 2):
                lane.agents.remove(a)
                self.finished.append(a)

    def _update_walker(self, a: _Agent) -> None:
        dt = _SIM_DT_S
        while a.plan:
            step = a.plan[0]
            kind = step[0]
            if kind == "wait":
                a.v = 0.0
                a.wait_s += dt
                if a.wait_s >= step[1]:
                    a.wait_s = 0.0
                    a.plan.pop(0)
                return
            if kind == "face":
                a.facing = step[1]
                a.plan[0] = ("exit",)
                continue
            if kind == "cross_wait":
                if self._half_safe_to_enter(step[1]):
                    a.crossing_half = step[1]
                    a.plan.pop(0)
                    continue
                a.v = 0.0
                return
            if kind == "exit":
                x0, x1 = self.ground.visible_x(a.z)
                target = (x1 + a.length_m + 1.0) if a.facing > 0 else (x0 - a.length_m - 1.0)
                if self._walk_towards(a, target, a.z, dt):
                    a.done = True
                return
            # walk_to / cross
            if self._walk_towards(a, step[1], step[2], dt):
                if kind == "cross":
                    a.crossing_half = None
                a.plan.pop(0)
            return
        a.done = True

    def _walk_towards(self, a: _Agent, tx: float, tz: float, dt: float) -> bool:
        """Move a walker towards a ground point; True once it is there."""
        dx, dz = tx - a.x, tz - a.z
        dist = math.hypot(dx, dz)
        a.v = min(a.cruise_mps, a.v + a.spec.accel * dt)
        step = a.v * dt
        if abs(dx) > 0.05:
            a.facing = 1 if dx > 0 else -1
        if dist <= step:
            a.x, a.z = tx, tz
            a.dist += dist
            return True
        a.x += dx / dist * step
        a.z += dz / dist * step
        a.dist += step
        return False

    def _arrivals(self) -> None:
        rng, dt, cfg = self.rng, _SIM_DT_S, self.cfg
        for lane in self.lanes:
            if lane.parking:
                if rng.random() < 0.015 * cfg.density * dt:
                    self._arrive_parker(lane)
            elif rng.random() < lane.rate_hz * dt:
                self._arrive_lane(lane)
        for side in (0, 1):
            if rng.random() < 0.12 * cfg.density * dt:
                self._spawn_walker(side)

    def _record(self, a: _Agent) -> None:
        a.history.append((a.x, a.z, a.v, a.dist, a.facing))

    def run(self) -> list[_Track]:
        """Simulate from ``-warmup_s`` to the end of the recording; returns every object's trajectory."""
        self._populate()
        for self.step in range(self.n_steps):
            t_s = self.t0_s + self.step * _SIM_DT_S
            if self.step:
                self._arrivals()
                for w in self.walkers:
                    self._update_walker(w)
                for lane in self.lanes:
                    self._update_lane(lane, t_s)
                for w in [w for w in self.walkers if w.done]:
                    self.walkers.remove(w)
                    self.finished.append(w)
            for lane in self.lanes:
                for a in lane.agents:
                    if not a.history:
                        a.first_step = self.step
                    self._record(a)
            for w in self.walkers:
                if not w.history:
                    w.first_step = self.step
                self._record(w)
        everyone = self.finished + [a for lane in self.lanes for a in lane.agents] + self.walkers
        return [self._to_track(a) for a in sorted(everyone, key=lambda a: a.id) if a.history]

    def _to_track(self, a: _Agent) -> _Track:
        h = np.array(a.history, dtype=np.float64)
        return _Track(a.id, a.kind, a.length_m, a.height_m, _make_look(a.kind, np.random.default_rng(a.look_seed)),
                      a.first_step, h[:, 0], h[:, 1], h[:, 2], h[:, 3], h[:, 4].astype(np.int8))


def _safe_speed(gap: float, v_obstacle: float, decel: float) -> float:
    """Highest speed from which braking at ``decel`` stops (or matches ``v_obstacle``) within ``gap``."""
    return math.sqrt(max(0.0, v_obstacle * v_obstacle + 2.0 * decel * max(gap, 0.0)))


# ----------------------------------------------------------------------------------------------------------------------
# Where each object is drawn, at any set of times
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class _Placement:
    """Per-time image placement of one track (arrays over the queried times)."""

    present: np.ndarray  # bool
    left: np.ndarray  # float, sprite top-left in pixels
    top: np.ndarray
    w: np.ndarray  # int sprite size
    h: np.ndarray
    frame: np.ndarray  # int animation frame
    facing: np.ndarray  # int8
    ground_row: np.ndarray  # depth order: larger is nearer
    speed: np.ndarray  # m/s


def _place(track: _Track, ground: _Ground, t_us: np.ndarray, sim_t0_us: int) -> _Placement:
    sim_dt_us = _SIM_DT_S * 1e6
    pos = (t_us - sim_t0_us) / sim_dt_us - track.first_step
    n = len(track.x)
    present = (pos >= 0) & (pos <= n - 1)
    p = np.clip(pos, 0, n - 1)
    i0 = np.minimum(np.floor(p).astype(np.int64), n - 1)
    i1 = np.minimum(i0 + 1, n - 1)
    f = p - i0

    def lerp(a: np.ndarray) -> np.ndarray:
        return a[i0] * (1 - f) + a[i1] * f

    x, z, dist = lerp(track.x), lerp(track.z), lerp(track.dist)
    row = ground.row_at_depth(z)
    ppm = ground.ppm_at_row(row)
    w = np.maximum(1, np.rint(track.length_m * ppm)).astype(np.int64)
    h = np.maximum(1, np.rint(track.height_m * ppm)).astype(np.int64)
    spec = track.spec
    frame = np.floor(dist / spec.stride_m * spec.frames).astype(np.int64) % spec.frames
    facing = np.where(f < 0.5, track.facing[i0], track.facing[i1])
    speed = np.where(f > 0, track.v[i1], track.v[i0])  # the speed over the simulation step containing t
    return _Placement(present, ground.cx + x * ppm - w / 2.0, row - h, w, h, frame, facing, row, speed)


class _SpriteBank:
    """Sprites of every object, cached by (object, size, frame, facing), and their sub-pixel shifted versions."""

    def __init__(self, tracks: list[_Track]):
        self.tracks = {t.id: t for t in tracks}
        self.cache: dict[int, dict[tuple, np.ndarray]] = {}
        self.y_shifted: dict[int, tuple[tuple, np.ndarray]] = {}
        self.shifted: dict[int, tuple[tuple, np.ndarray]] = {}

    def sprite(self, tid: int, w: int, h: int, frame: int, facing: int) -> np.ndarray:
        """Premultiplied intensity and alpha (2, h, w)."""
        per = self.cache.setdefault(tid, {})
        key = (w, h, frame, facing)
        pa = per.get(key)
        if pa is None:
            if len(per) > 96:
                per.clear()
            tr = self.tracks[tid]
            pa = per[key] = _draw_sprite(tr.kind, w, h, facing, frame, tr.look)
        return pa

    def shifted_sprite(self, tid: int, w: int, h: int, frame: int, facing: int, fx: float, fy: float) -> np.ndarray:
        """The sprite moved right/down by a sub-pixel (fx, fy) with bilinear weights: (2, h + 1, w + 1).

        Separable: the vertical shift is cached on its own, since most objects move along rows only."""
        key = (w, h, frame, facing, fx, fy)
        last = self.shifted.get(tid)
        if last is not None and last[0] == key:
            return last[1]
        ykey = key[:4] + (fy,)
        ylast = self.y_shifted.get(tid)
        if ylast is not None and ylast[0] == ykey:
            pay = ylast[1]
        else:
            pa = self.sprite(tid, w, h, frame, facing)
            pay = np.empty((2, h + 1, w), dtype=np.float32)
            np.multiply(pa, 1 - fy, out=pay[:, :h])
            pay[:, h] = 0
            pay[:, 1:] += pa * fy
            self.y_shifted[tid] = (ykey, pay)
        out = np.empty((2, h + 1, w + 1), dtype=np.float32)
        np.multiply(pay, 1 - fx, out=out[:, :, :w])
        out[:, :, w] = 0
        out[:, :, 1:] += pay * fx
        self.shifted[tid] = (key, out)
        return out

    def forget(self, tid: int) -> None:
        for store in (self.cache, self.y_shifted, self.shifted):
            store.pop(tid, None)


# ----------------------------------------------------------------------------------------------------------------------
# The event sensor
# ----------------------------------------------------------------------------------------------------------------------


class _DvsSensor:
    """Per-pixel DVS model on flattened pixel arrays: log intensity against a reference, one event per threshold
    crossing (several per step for large changes), ON when brighter."""

    def __init__(self, first_log_frame: np.ndarray, cfg: SynthConfig, rng: np.random.Generator):
        n = first_log_frame.size
        c, s = cfg.contrast_threshold, cfg.threshold_mismatch
        lo = max(0.02, 0.25 * c)
        self.c_on = np.clip(rng.normal(c, s, n), lo, None).astype(np.float32)
        self.c_off = np.clip(rng.normal(c, s, n), lo, None).astype(np.float32)
        self.log_prev = first_log_frame.astype(np.float32).ravel().copy()
        # at power-on the reference sits anywhere inside the no-event band around the current log intensity
        band = np.minimum(self.c_on, self.c_off)
        self.ref = (self.log_prev - rng.uniform(-0.95, 0.95, n).astype(np.float32) * band).astype(np.float32)

    def step(self, idx: np.ndarray, log_new: np.ndarray, t_prev_us: int, dt_us: int):
        """Move pixels ``idx`` (flat, unique) from their previous log intensity to ``log_new`` over one render step.
        Returns ``(flat_pixel, p, t)`` of the events (unsorted) or None; crossing times are interpolated linearly."""
        ref = self.ref[idx]
        d = log_new - ref
        c_on, c_off = self.c_on[idx], self.c_off[idx]
        hit = np.flatnonzero((d >= c_on) | (d <= -c_off))
        if hit.size == 0:
            self.log_prev[idx] = log_new
            return None
        pix = idx[hit]
        d = d[hit]
        on = d > 0
        c = np.where(on, c_on[hit], c_off[hit])
        n = np.floor(np.abs(d) / c).astype(np.int64)
        sign = np.where(on, np.float32(1), np.float32(-1))
        r0, l0, l1 = ref[hit], self.log_prev[pix], log_new[hit]
        self.ref[pix] = r0 + sign * n * c
        self.log_prev[idx] = log_new
        k = np.repeat(np.arange(n.size), n)
        j = np.arange(k.size) - np.repeat(np.cumsum(n) - n, n) + 1  # 1..n within each pixel
        frac = (r0[k] + sign[k] * c[k] * j - l0[k]) / (l1[k] - l0[k])
        t = t_prev_us + np.clip(np.ceil(frac * dt_us), 1, dt_us).astype(np.int64)
        return pix[k], on[k].astype(np.int16), t


def _noise_events(rng: np.random.Generator, cfg: SynthConfig, hot_pix: np.ndarray, hot_rate: np.ndarray,
                  t0_us: int, t1_us: int):
    """Background activity (Poisson, uniform over pixels, random polarity) and hot pixels in (t0, t1]:
    ``(flat_pixel, p, t)``."""
    dur = t1_us - t0_us
    n = rng.poisson(cfg.noise_rate_hz * cfg.width * cfg.height * dur / 1e6)
    pix = rng.integers(0, cfg.width * cfg.height, n)
    pix = np.concatenate([pix, np.repeat(hot_pix, rng.poisson(hot_rate * dur / 1e6))])
    t = t0_us + 1 + rng.integers(0, dur, pix.size)
    p = (rng.random(pix.size) < 0.5).astype(np.int16)
    return pix, p, t.astype(np.int64)


# ----------------------------------------------------------------------------------------------------------------------
# Rendering loop: only the regions that changed
# ----------------------------------------------------------------------------------------------------------------------


def _merge_rects(rects: list[list[int]]) -> list[list[int]]:
    """Merge overlapping [y0, y1, x0, x1] rectangles until none overlap (so no pixel is processed twice)."""
    out: list[list[int]] = []
    for r in rects:
        r = r[:]
        i = 0
        while i < len(out):  # absorb every kept rectangle that overlaps the growing one, then re-check the rest
            a = out[i]
            if a[0] < r[1] and r[0] < a[1] and a[2] < r[3] and r[2] < a[3]:
                r = [min(a[0], r[0]), max(a[1], r[1]), min(a[2], r[2]), max(a[3], r[3])]
                out.pop(i)
                i = 0
            else:
                i += 1
        out.append(r)
    return out


class _SceneEventGenerator:
    """Steps the scene every ``render_dt_us`` and turns what changed into events, one chunk of time at a time.

    Only pixels under objects whose drawing changed since the last step are re-rendered and passed to the sensor; the
    rest of the scene is static, so its pixels cannot fire (apart from noise, added per chunk)."""

    def __init__(self, cfg: SynthConfig, ground: _Ground, background: np.ndarray, tracks: list[_Track],
                 sim_t0_us: int, rng: np.random.Generator):
        self.cfg, self.ground, self.tracks, self.sim_t0_us, self.rng = cfg, ground, tracks, sim_t0_us, rng
        self.background = background
        self.bank = _SpriteBank(tracks)
        n_hot = cfg.hot_pixels if cfg.hot_pixels >= 0 else max(1, round(cfg.width * cfg.height / 100_000))
        self.hot_pix = rng.choice(cfg.width * cfg.height, n_hot, replace=False)
        self.hot_rate = rng.uniform(*cfg.hot_pixel_rate_hz, n_hot)
        self.t_first = sim_t0_us + np.array([t.first_step for t in tracks], dtype=np.float64) * _SIM_DT_S * 1e6
        self.t_last = self.t_first + np.array([len(t.x) - 1 for t in tracks], dtype=np.float64) * _SIM_DT_S * 1e6
        self.index_of = {t.id: i for i, t in enumerate(tracks)}
        self.prev_state: dict[int, tuple] = {}  # track id -> draw state at the last render step
        self.frame = background.copy()  # current intensity
        self._initial_frame()
        self.sensor = _DvsSensor(np.log(self.frame + cfg.log_eps), cfg, rng)

    def _initial_frame(self) -> None:
        """Draw the scene at t=0, objects included: the sensor starts adapted to it (no events at power-on)."""
        states = self._states(np.array([0], dtype=np.int64))
        self.prev_state = {tid: seq[0] for tid, seq in states.items() if seq[0] is not None}
        self._compose([0, self.cfg.height, 0, self.cfg.width], self.prev_state)

    def _states(self, times: np.ndarray) -> dict[int, list[tuple | None]]:
        """Per track alive during ``times``: its draw state ``(w, h, frame, facing, ix, iy, fx, fy, ground_row)`` at
        each time, None when absent or off-frame."""
        out = {}
        alive = (self.t_last >= times[0]) & (self.t_first <= times[-1])
        W, H = self.cfg.width, self.cfg.height
        for k in np.flatnonzero(alive):
            tr = self.tracks[k]
            pl = _place(tr, self.ground, times, self.sim_t0_us)
            ix = np.floor(pl.left).astype(np.int64)
            iy = np.floor(pl.top).astype(np.int64)
            fx = np.round(pl.left - ix, 3)
            fy = np.round(pl.top - iy, 3)
            visible = pl.present & (ix < W) & (iy < H) & (ix + pl.w + 1 > 0) & (iy + pl.h + 1 > 0)
            cols = [a.tolist() for a in (pl.w, pl.h, pl.frame, pl.facing, ix, iy, fx, fy, pl.ground_row)]
            rows = list(zip(*cols))
            out[tr.id] = [rows[i] if v else None for i, v in enumerate(visible.tolist())]
        return out

    def _compose(self, region: list[int], states: dict[int, tuple]) -> None:
        """Redraw a region [y0, y1, x0, x1] of ``self.frame``: background, then every object overlapping it, far to
        near (occlusion)."""
        y0, y1, x0, x1 = region
        dst_region = self.frame[y0:y1, x0:x1]
        dst_region[...] = self.background[y0:y1, x0:x1]
        hits = []
        for tid, s in states.items():
            if s[4] < x1 and s[5] < y1 and s[4] + s[0] + 1 > x0 and s[5] + s[1] + 1 > y0:
                hits.append((s[8], tid, s))
        hits.sort()
        for _, tid, (w, h, frame, facing, ix, iy, fx, fy, _row) in hits:
            pa = self.bank.shifted_sprite(tid, w, h, frame, facing, fx, fy)
            sy0, sy1 = max(iy, y0), min(iy + h + 1, y1)
            sx0, sx1 = max(ix, x0), min(ix + w + 1, x1)
            part = pa[:, sy0 - iy:sy1 - iy, sx0 - ix:sx1 - ix]
            dst = self.frame[sy0:sy1, sx0:sx1]
            dst *= 1.0 - part[1]
            dst += part[0]

    def _footprint(self, s: tuple) -> list[int]:
        w, h, _, _, ix, iy = s[:6]
        return [max(iy, 0), min(iy + h + 1, self.cfg.height), max(ix, 0), min(ix + w + 1, self.cfg.width)]

    def _dirty_rects(self, current: dict[int, tuple]) -> list[list[int]]:
        """One rectangle per object whose drawing changed: the union of where it was and where it is."""
        rects = []
        for tid in sorted(current.keys() | self.prev_state.keys()):
            before, now = self.prev_state.get(tid), current.get(tid)
            if before == now:
                continue
            boxes = [self._footprint(s) for s in (before, now) if s is not None]
            r = [min(b[0] for b in boxes), max(b[1] for b in boxes), min(b[2] for b in boxes), max(b[3] for b in boxes)]
            if r[0] < r[1] and r[2] < r[3]:
                rects.append(r)
        return rects

    def chunks(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """Yield time-sorted events ``(x, y, p, t)`` of consecutive chunks covering (0, duration]."""
        dt = self.cfg.render_dt_us
        n_steps = self.cfg.duration_us // dt
        per_chunk = max(1, int(round(self.cfg.chunk_s * 1e6 / dt)))
        for k0 in range(1, n_steps + 1, per_chunk):
            yield self._chunk(k0, min(n_steps, k0 + per_chunk - 1))

    def _chunk(self, k0: int, k1: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Events of render steps k0..k1 (times ((k0-1)*dt, k1*dt]) plus noise, sorted by time."""
        W, dt, eps = self.cfg.width, self.cfg.render_dt_us, self.cfg.log_eps
        times = np.arange(k0, k1 + 1, dtype=np.int64) * dt
        states = self._states(times)
        for tid in self.prev_state:  # objects that left just before this chunk: their last footprint must be redrawn
            states.setdefault(tid, [None] * len(times))
        parts = []
        for i, t in enumerate(times.tolist()):
            current = {tid: seq[i] for tid, seq in states.items() if seq[i] is not None}
            regions = _merge_rects(self._dirty_rects(current))
            self.prev_state = current
            if not regions:
                continue
            idx, logs = [], []
            for region in regions:
                y0, y1, x0, x1 = region
                self._compose(region, current)
                idx.append((np.arange(y0 * W, y1 * W, W)[:, None] + np.arange(x0, x1)).ravel())
                logs.append(self.frame[y0:y1, x0:x1].ravel())
            idx_all = np.concatenate(idx) if len(idx) > 1 else idx[0]
            log_new = np.log(np.concatenate(logs) + eps) if len(logs) > 1 else np.log(logs[0] + eps)
            ev = self.sensor.step(idx_all, log_new, t - dt, dt)
            if ev is not None:
                parts.append(ev)
        for tid in states:
            if self.t_last[self.index_of[tid]] < times[-1]:
                self.bank.forget(tid)
        parts.append(_noise_events(self.rng, self.cfg, self.hot_pix, self.hot_rate, int(times[0] - dt), int(times[-1])))
        pix, p, t = (np.concatenate([e[i] for e in parts]) for i in range(3))
        order = np.argsort(t, kind="stable")
        pix, p, t = pix[order], p[order], t[order]
        return (pix % W).astype(np.uint16), (pix // W).astype(np.uint16), p, t


# ----------------------------------------------------------------------------------------------------------------------
# Labels
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class _InFrame:
    """An object at least partly inside the frame at one label time (full, unclipped box)."""

    track: _Track
    x: float
    y: float
    w: int
    h: int
    frame: int
    facing: int
    ground_row: float
    speed: float


def _make_labels(cfg: SynthConfig, ground: _Ground, tracks: list[_Track], sim_t0_us: int,
                 bank: _SpriteBank) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (BBOX_DTYPE) and the row-aligned motion array at 30 Hz for every visible object: the full object box
    clipped to the frame, as an annotator draws it, dropped when too small or hidden behind nearer objects."""
    times = label_times_us(cfg.duration_us, cfg.label_hz)
    W, H = cfg.width, cfg.height
    placements = [(tr, _place(tr, ground, times, sim_t0_us)) for tr in tracks]
    stationary_since = {tr.id: _stationary_since_us(tr, cfg, sim_t0_us) for tr in tracks}
    seen_moving = {tr.id: False for tr in tracks}
    rows_box, rows_motion = [], []
    covered = np.zeros((H, W), dtype=bool)
    for i, t in enumerate(times.tolist()):
        in_frame = []
        for tr, pl in placements:
            x, y, w, h = float(pl.left[i]), float(pl.top[i]), int(pl.w[i]), int(pl.h[i])
            if pl.present[i] and x < W and y < H and x + w > 0 and y + h > 0:
                in_frame.append(_InFrame(tr, x, y, w, h, int(pl.frame[i]), int(pl.facing[i]), float(pl.ground_row[i]),
                                         float(pl.speed[i])))
        visible = _unoccluded(in_frame, bank, covered, cfg.min_visible_fraction)
        for o in in_frame:  # tracks are in id order
            tid = o.track.id
            x0, y0, x1, y1 = max(o.x, 0.0), max(o.y, 0.0), min(o.x + o.w, float(W)), min(o.y + o.h, float(H))
            if tid not in visible or x1 - x0 < cfg.min_box_side_px or y1 - y0 < cfg.min_box_side_px:
                continue
            moving = o.speed > cfg.moving_threshold_mps
            seen_moving[tid] |= moving
            fine = o.track.spec.fine_id
            rows_box.append((t, x0, y0, x1 - x0, y1 - y0, FINE_TO_COARSE[fine] if cfg.classes == 3 else fine, 1.0, tid))
            rows_motion.append((t, tid, moving, 0 if moving else t - int(stationary_since[tid][i]), seen_moving[tid]))
    boxes = np.array(rows_box, dtype=BBOX_DTYPE) if rows_box else np.zeros(0, BBOX_DTYPE)
    motion = np.array(rows_motion, dtype=MOTION_DTYPE) if rows_motion else np.zeros(0, MOTION_DTYPE)
    return boxes, motion


def _unoccluded(in_frame: list[_InFrame], bank: _SpriteBank, covered: np.ndarray, min_fraction: float) -> set[int]:
    """Ids of the objects of which at least ``min_fraction`` of the in-frame silhouette is not hidden by nearer
    objects. ``covered`` is a (H, W) scratch buffer."""
    H, W = covered.shape
    covered[:] = False
    visible = set()
    for o in sorted(in_frame, key=lambda o: (-o.ground_row, o.track.id)):  # nearest first
        mask = bank.sprite(o.track.id, o.w, o.h, o.frame, o.facing)[1] > 0.5
        ix, iy = int(round(o.x)), int(round(o.y))
        sy0, sy1, sx0, sx1 = max(iy, 0), min(iy + o.h, H), max(ix, 0), min(ix + o.w, W)
        if sy0 >= sy1 or sx0 >= sx1:
            continue
        m = mask[sy0 - iy:sy1 - iy, sx0 - ix:sx1 - ix]
        total = int(m.sum())
        if total and (m & ~covered[sy0:sy1, sx0:sx1]).sum() >= min_fraction * total:
            visible.add(o.track.id)
        covered[sy0:sy1, sx0:sx1] |= m
    return visible


def _stationary_since_us(track: _Track, cfg: SynthConfig, sim_t0_us: int) -> np.ndarray:
    """For each label time: the last simulation step at or before it at which the object was moving (its first
    step if it never moved). Consistent with :func:`_place`'s speed, so a stationary object gets a positive
    ``stationary_for_us``."""
    times = label_times_us(cfg.duration_us, cfg.label_hz)
    step_t = sim_t0_us + (track.first_step + np.arange(len(track.v))) * _SIM_DT_S * 1e6
    moving = track.v > cfg.moving_threshold_mps
    last_moving = np.maximum.accumulate(np.where(moving, step_t, -np.inf))
    last_moving = np.where(np.isfinite(last_moving), last_moving, step_t[0])
    idx = np.clip(np.searchsorted(step_t, times, side="right") - 1, 0, len(step_t) - 1)
    return np.minimum(last_moving[idx], times).astype(np.int64)


# ----------------------------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------------------------


def _recording_rngs(seed: int) -> dict[str, np.random.Generator]:
    """Independent streams (scene, traffic, sensor), so e.g. changing the noise leaves the traffic unchanged."""
    children = np.random.SeedSequence(seed).spawn(3)
    return {name: np.random.default_rng(s) for name, s in zip(("scene", "traffic", "sensor"), children)}


def recording_paths(path_stem: str | Path) -> dict[str, Path]:
    """The files of one recording: ``<stem>_td.h5``, ``<stem>_bbox.npy``, ``<stem>_motion.npz``."""
    stem = Path(path_stem)
    return {"events": stem.with_name(stem.name + "_td.h5"), "boxes": stem.with_name(stem.name + "_bbox.npy"),
            "motion": stem.with_name(stem.name + "_motion.npz")}


def synthesize_recording(path_stem: str | Path, cfg: SynthConfig | None = None) -> dict:
    """Write one synthetic recording (events, boxes, motion) next to ``path_stem``; return a summary
    ``{n_events, n_boxes, duration_s, events_per_s, seconds}``. Boxes are written last, so a box file means the
    recording is complete."""
    cfg = cfg or SynthConfig()
    start = time.perf_counter()
    paths = recording_paths(path_stem)
    rngs = _recording_rngs(cfg.seed)
    ground = _Ground.for_sensor(cfg.width, cfg.height)
    crosswalk_x = float((rngs["scene"].uniform(0.3, 0.7) * cfg.width - ground.cx) / ground.ppm_near)
    background = _render_background(ground, crosswalk_x, rngs["scene"])
    tracks = _TrafficSim(cfg, ground, crosswalk_x, rngs["traffic"]).run()
    sim_t0_us = -int(round(cfg.warmup_s * 1e6))
    generator = _SceneEventGenerator(cfg, ground, background, tracks, sim_t0_us, rngs["sensor"])
    n_events = 0
    with EventH5Writer(paths["events"], cfg.width, cfg.height) as writer:
        for x, y, p, t in generator.chunks():
            writer.append(x, y, p, t)
            n_events += len(t)
    boxes, motion = _make_labels(cfg, ground, tracks, sim_t0_us, _SpriteBank(tracks))
    save_npz_atomic(paths["motion"], motion=motion)
    write_boxes(paths["boxes"], boxes)
    return {"n_events": n_events, "n_boxes": len(boxes), "duration_s": cfg.duration_s,
            "events_per_s": n_events / cfg.duration_s, "seconds": time.perf_counter() - start}


def recording_seed(base_seed: int, split: str, index: int) -> int:
    """The seed of recording ``index`` of ``split``: independent of the other splits and of how many there are."""
    return int(np.random.SeedSequence([base_seed, zlib.crc32(split.encode()), index]).generate_state(1)[0])


def synthesize_dataset(out_dir: str | Path, splits: dict[str, int] | None = None, cfg: SynthConfig | None = None,
                       progress: bool | Callable[[str], None] = True) -> dict:
    """Write a raw eTraM-layout dataset ``out_dir/{split}/synth_{split}_{i:04d}_*``. Recordings whose files all exist
    are skipped, so an interrupted run resumes. ``progress``: True prints a line per recording, a callable receives
    the lines, False is silent. Returns ``{recordings, written, skipped, n_events, n_boxes, seconds}``."""
    cfg = cfg or SynthConfig()
    splits = {"train": 4, "val": 1, "test": 1} if splits is None else splits
    report = progress if callable(progress) else (print if progress else (lambda _msg: None))
    out_dir = Path(out_dir)
    summary = {"recordings": 0, "written": 0, "skipped": 0, "n_events": 0, "n_boxes": 0, "seconds": 0.0}
    start = time.perf_counter()
    total = sum(splits.values())
    for split, count in splits.items():
        for i in range(count):
            stem = out_dir / split / f"synth_{split}_{i:04d}"
            summary["recordings"] += 1
            if all(p.is_file() for p in recording_paths(stem).values()):
                summary["skipped"] += 1
                report(f"synth {summary['recordings']}/{total} {stem.name}: exists, skipped")
                continue
            stem.parent.mkdir(parents=True, exist_ok=True)
            rec = synthesize_recording(stem, replace(cfg, seed=recording_seed(cfg.seed, split, i)))
            summary["written"] += 1
            summary["n_events"] += rec["n_events"]
            summary["n_boxes"] += rec["n_boxes"]
            report(f"synth {summary['recordings']}/{total} {stem.name}: {rec['n_events']:,} events, "
                   f"{rec['n_boxes']:,} boxes, {rec['seconds']:.1f}s")
    summary["seconds"] = time.perf_counter() - start
    return summary


def main(argv: list[str] | None = None) -> int:
    """``etram-yolo synth OUT``: write a synthetic eTraM-like raw dataset."""
    ap = argparse.ArgumentParser(
        prog="etram-yolo synth",
        description="Write a synthetic eTraM-like raw event dataset (OUT/{train,val,test}/*_td.h5 + *_bbox.npy + "
                    "*_motion.npz); finished recordings are skipped, so an interrupted run resumes.")
    ap.add_argument("out", help="output folder")
    ap.add_argument("--width", type=int, default=1280, help="sensor width (default 1280, eTraM's)")
    ap.add_argument("--height", type=int, default=720, help="sensor height (default 720, eTraM's)")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per recording (default 10)")
    ap.add_argument("--train", type=int, default=4, help="recordings in train/ (default 4)")
    ap.add_argument("--val", type=int, default=1, help="recordings in val/ (default 1)")
    ap.add_argument("--test", type=int, default=1, help="recordings in test/ (default 1)")
    ap.add_argument("--seed", type=int, default=0, help="base seed; each recording derives its own from it")
    ap.add_argument("--classes", type=int, choices=(3, 8), default=3, help="eTraM's 3 or 8 class ids (default 3)")
    ap.add_argument("--density", type=float, default=1.0, help="traffic density multiplier (default 1)")
    ap.add_argument("--stop-prob", type=float, default=0.35, help="chance an object halts once while in view")
    ap.add_argument("--static-objects", type=float, default=1.0,
                    help="multiplier of parked cars and people standing from the start (0: none)")
    ap.add_argument("--noise-rate", type=float, default=0.1, help="background events per pixel per second")
    ap.add_argument("--render-dt-us", type=int, default=2000, help="scene/DVS time step in microseconds")
    ap.add_argument("--quiet", action="store_true", help="no line per recording")
    args = ap.parse_args(argv)
    cfg = SynthConfig(width=args.width, height=args.height, duration_s=args.duration, seed=args.seed,
                      classes=args.classes, density=args.density, stop_prob=args.stop_prob,
                      static_objects=args.static_objects, noise_rate_hz=args.noise_rate,
                      render_dt_us=args.render_dt_us)
    summary = synthesize_dataset(args.out, {"train": args.train, "val": args.val, "test": args.test}, cfg,
                                 progress=not args.quiet)
    print(f"synth: {summary['written']} written, {summary['skipped']} skipped, {summary['n_events']:,} events, "
          f"{summary['n_boxes']:,} boxes in {summary['seconds']:.1f}s -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
