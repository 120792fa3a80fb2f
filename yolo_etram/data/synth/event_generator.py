"""The scene event generator: steps the scene every ``render_dt_us``, redraws only the regions whose objects changed and
passes them to the DVS model, one chunk of time at a time. ``synthesize_recording`` writes its ``chunks()``."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .config import SynthConfig
from .scene import _Ground
from .sensor import _DvsSensor, _noise_events
from .sprite_bank import _SpriteBank
from .traffic import _SIM_DT_S, _place, _Track


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

    def __init__(
        self,
        cfg: SynthConfig,
        ground: _Ground,
        background: np.ndarray,
        tracks: list[_Track],
        sim_t0_us: int,
        rng: np.random.Generator,
    ):
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
            part = pa[:, sy0 - iy : sy1 - iy, sx0 - ix : sx1 - ix]
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
