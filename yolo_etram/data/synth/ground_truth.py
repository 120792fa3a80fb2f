"""The labels of a recording: Prophesee boxes at 30 Hz for every visible object (clipped to the frame, dropped when
hidden) and the row-aligned motion ground truth. ``synthesize_recording`` calls ``_make_labels`` once."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..io import BBOX_DTYPE
from ..motion import MOTION_DTYPE
from .config import FINE_TO_COARSE, SynthConfig, label_times_us
from .scene import _Ground
from .sprite_bank import _SpriteBank
from .traffic import _SIM_DT_S, _place, _Track


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


def _make_labels(
    cfg: SynthConfig, ground: _Ground, tracks: list[_Track], sim_t0_us: int, bank: _SpriteBank
) -> tuple[np.ndarray, np.ndarray]:
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
                in_frame.append(
                    _InFrame(
                        tr, x, y, w, h, int(pl.frame[i]), int(pl.facing[i]), float(pl.ground_row[i]), float(pl.speed[i])
                    )
                )
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
        m = mask[sy0 - iy : sy1 - iy, sx0 - ix : sx1 - ix]
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
