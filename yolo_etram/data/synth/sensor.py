"""The DVS pixel model: per-pixel log-intensity reference and contrast thresholds, ON/OFF events with interpolated
timestamps, and background-activity and hot-pixel noise. The scene event generator (``event_generator.py``) steps it."""

from __future__ import annotations

import numpy as np

from .config import SynthConfig


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


def _noise_events(
    rng: np.random.Generator, cfg: SynthConfig, hot_pix: np.ndarray, hot_rate: np.ndarray, t0_us: int, t1_us: int
):
    """Background activity (Poisson, uniform over pixels, random polarity) and hot pixels in (t0, t1]:
    ``(flat_pixel, p, t)``."""
    dur = t1_us - t0_us
    n = rng.poisson(cfg.noise_rate_hz * cfg.width * cfg.height * dur / 1e6)
    pix = rng.integers(0, cfg.width * cfg.height, n)
    pix = np.concatenate([pix, np.repeat(hot_pix, rng.poisson(hot_rate * dur / 1e6))])
    t = t0_us + 1 + rng.integers(0, dur, pix.size)
    p = (rng.random(pix.size) < 0.5).astype(np.int16)
    return pix, p, t.astype(np.int64)
