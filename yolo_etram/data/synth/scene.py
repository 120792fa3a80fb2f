"""The static scene: a ground plane seen obliquely from an elevated camera, the road laid out on it (lanes, kerbs, the
crossing), and its background image (textures, markings, facades), rendered once per recording."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .config import _BIKE_MIX, _VEHICLE_MIX


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
    def for_sensor(cls, width: int, height: int) -> _Ground:
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


def _render_background(
    ground: _Ground, crosswalk_x: float, rng: np.random.Generator, supersample: int = 2, band_rows: int = 128
) -> np.ndarray:
    """The static scene's intensity (H, W) float32 in (0, 1]: facades, sidewalks, road markings, textures.

    Rendered supersampled, in bands of rows so memory stays small at any sensor size."""
    H, W, ss = ground.height, ground.width, supersample
    shape = (H * ss, W * ss)
    noise = {
        "asphalt": _ValueNoise(rng, shape, 12 * ss),
        "wear": _ValueNoise(rng, shape, 6 * ss),
        "grass": _ValueNoise(rng, shape, 3 * ss),
        "facade": _ValueNoise(rng, shape, 20 * ss),
    }
    patches = [
        (rng.uniform(-40, 40), rng.uniform(*_ROAD), rng.uniform(0.3, 1.2), rng.uniform(0.17, 0.24))
        for _ in range(int(rng.integers(3, 7)))
    ]
    facades = _plan_facades(ground, rng, ss)
    out = np.empty((H, W), dtype=np.float32)
    cols = np.arange(shape[1])
    for r0 in range(0, shape[0], band_rows * ss):
        rows = np.arange(r0, min(shape[0], r0 + band_rows * ss))
        band = _background_band(ground, crosswalk_x, rows, cols, ss, noise, patches, facades)
        band += rng.normal(0, 0.012, band.shape).astype(np.float32)  # fine grain
        out[r0 // ss : (r0 + len(rows)) // ss] = band.reshape(len(rows) // ss, ss, W, ss).mean(axis=(1, 3))
    return np.clip(out, 0.03, 1.0)


def _background_band(
    ground: _Ground,
    crosswalk_x: float,
    rows: np.ndarray,
    cols: np.ndarray,
    ss: int,
    noise: dict[str, _ValueNoise],
    patches: list,
    facades: list[_Facade],
) -> np.ndarray:
    """Supersampled rows ``rows`` of the background."""
    ys = ((rows + 0.5) / ss).astype(np.float64)
    ppm = ground.ppm_at_row(ys).astype(np.float32)[:, None]
    Z = ground.depth_at_row(ys).astype(np.float32)[:, None] + np.zeros((1, len(cols)), np.float32)
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
        facades.append(
            _Facade(
                int(x),
                int(min(W, x + bw)),
                base_row - rng.uniform(12, 40) * ppm,
                rng.uniform(0.3, 0.7),
                (rng.uniform(2.5, 3.5), rng.uniform(3.0, 3.6)),
                glass,
            )
        )
        x += bw + rng.uniform(0, 2) * ppm
    return facades


def _facade_band(
    ground: _Ground, rows: np.ndarray, cols: np.ndarray, ss: int, facades: list[_Facade], noise: _ValueNoise
) -> np.ndarray:
    """Building fronts with window grids (sky above low ones) for supersampled ``rows``."""
    ppm = float(ground.ppm_at_depth(_FACADE_Z)) * ss
    base_row = float(ground.row_at_depth(_FACADE_Z)) * ss
    ys = rows[:, None].astype(np.float32)
    out = np.full((len(rows), len(cols)), 0.5, dtype=np.float32)
    for f in facades:
        xs = cols[f.x0 : f.x1][None, :]
        block = np.where(ys >= f.top, f.tone, 0.78).astype(np.float32)
        u = np.mod((xs - f.x0) / ppm, f.window_m[0]) / f.window_m[0]
        v = np.mod((base_row - ys) / ppm, f.window_m[1]) / f.window_m[1]
        windows = (u > 0.25) & (u < 0.75) & (v > 0.35) & (v < 0.8) & (ys >= f.top) & (ys < base_row - 1.2 * ppm)
        out[:, f.x0 : f.x1] = np.where(windows, f.glass, block)
    return out + 0.04 * noise.sample(rows, cols)
