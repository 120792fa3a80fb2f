"""Event-domain augmentation of prepared frames: polarity suppression and inversion (ReYOLOv8), event drop, background
noise and hot pixels. Ultralytics train arguments, all off by default.

==================  ==========================================================================  ==================
argument            what it does                                                                drawn
==================  ==========================================================================  ==================
suppress_polarity   with this probability one polarity is removed: ReYOLOv8's                   per clip
                    ``SuppressPolarity(p1)``: signed frames lose their positive values          (stream: per
                    (``suppress_on``, ReYOLOv8's ``p2``) or their negative ones; two-polarity   sequence)
                    frames (histograms, voxel grids) their ON or OFF channel group
suppress_on         the share of suppressions that remove ON (positive) events (default 0.5)
invert_polarity     with this probability ON and OFF trade places: ReYOLOv8's                   per clip
                    ``InvertPolarity(p)`` (signed frames negated); two-polarity frames swap
                    their ON and OFF channel groups. Applied after the suppression, as ReYOLOv8
event_drop          a drop rate ``r ~ U[0, event_drop]``; every count ``n`` becomes             rate per clip,
                    ``Binomial(n, 1 - r)`` (binomial thinning: each event kept with ``1 - r``)   events per window
noise_rate          background activity, events per pixel per second: every pixel, time bin     per window
                    and polarity gets ``Poisson(noise_rate * window / nbins / 2)`` more events
hot_pixels          this fraction of the pixels is hot, each firing ``hot_pixel_rate`` events   pixels per clip,
hot_pixel_rate      per second (half of them each polarity), spread evenly over the time bins   events per window
==================  ==========================================================================  ==================

Why per clip: the recurrent memory carries what it saw from window to window, so what describes the camera (a
polarity that is missing or inverted, how many events it loses, which pixels are hot) stays the same for a whole
clip, and in stream mode for the whole sequence, as the flips do: a hot pixel stays hot. What a sensor draws afresh in
time (which events are dropped, noise events, the firings of hot pixels) is drawn for every window, from a seed of
the clip's draw and the window's index in its sequence: a window gets the same draw in any worker and any order.

Event drop, noise and hot pixels add or remove events, so they are defined on counts: the stacked histogram (its
counts as stored, after the cutoff; added events saturate at the cutoff). The other representations are not
counts (last polarities, cumulative sums, time weights): for them these arguments are refused, and so are the rates
in events per second for constant-count windows, which have no fixed duration. Labels are never changed.

Usage:
    >>> import numpy as np, torch
    >>> from yolo_etram.data.event_augment import EventAugConfig, augment_events
    >>> from yolo_etram.data.event_settings import EventSettings
    >>> cfg = EventAugConfig(suppress_polarity=0.5, noise_rate=2.0)
    >>> params = cfg.sample_many(np.random.default_rng(0), 1)[0]
    >>> clip = augment_events(torch.zeros(5, 20, 64, 96, dtype=torch.uint8), params, EventSettings(), range(5))
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import NamedTuple

import numpy as np
import torch

from yolo_etram.utils.errors import UnsupportedOptionError

from .event_settings import EventSettings

COUNT_ONLY = ("event_drop", "noise_rate", "hot_pixels")


class EventAugParams(NamedTuple):
    """One clip's draws: ``suppress`` 0 (none), 1 (ON/positive removed) or 2 (OFF/negative removed); ``invert``;
    ``drop`` the drop rate; ``seed`` for the per-window draws and the hot pixels; and the configured rates."""

    suppress: int = 0
    invert: bool = False
    drop: float = 0.0
    seed: int = 0
    noise_rate: float = 0.0
    hot_pixels: float = 0.0
    hot_pixel_rate: float = 0.0


@dataclass(frozen=True)
class EventAugConfig:
    """The event-domain augmentation (see the module docstring); every field is an Ultralytics train argument."""

    suppress_polarity: float = 0.0
    suppress_on: float = 0.5
    invert_polarity: float = 0.0
    event_drop: float = 0.0
    noise_rate: float = 0.0
    hot_pixels: float = 0.0
    hot_pixel_rate: float = 1000.0

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise UnsupportedOptionError(f"{f.name}={value!r}: must be a number >= 0")
        for name in ("suppress_polarity", "suppress_on", "invert_polarity", "event_drop", "hot_pixels"):
            if getattr(self, name) > 1:
                raise UnsupportedOptionError(f"{name}={getattr(self, name)}: must be in [0, 1]")

    @classmethod
    def from_args(cls, args) -> EventAugConfig:
        """The configuration in Ultralytics train arguments (a namespace or dict); missing keys keep their default."""
        get = args.get if isinstance(args, dict) else lambda k, d: getattr(args, k, d)
        return cls(**{f.name: float(get(f.name, f.default)) for f in fields(cls)})

    @property
    def active(self) -> bool:
        return any(getattr(self, k) > 0 for k in ("suppress_polarity", "invert_polarity", *COUNT_ONLY))

    def check(self, settings: EventSettings, source: str = "the data") -> None:
        """Refuse, in one line, what ``settings`` cannot honour (see the module docstring)."""
        on = [k for k in COUNT_ONLY if getattr(self, k) > 0]
        if on and settings.representation != "stacked_histogram":
            raise UnsupportedOptionError(
                f"{', '.join(on)} add or remove events, which needs counts; {source} holds {settings.representation}, "
                "whose values are not counts: use them with stacked_histogram data"
            )
        rates = [k for k in ("noise_rate", "hot_pixels") if getattr(self, k) > 0]
        if rates and settings.window_events:
            raise UnsupportedOptionError(
                f"{', '.join(rates)} are rates per second, but {source} has constant-count windows "
                f"(the last {settings.window_events} events), which have no fixed duration"
            )

    def sample_many(self, rng: np.random.Generator, n: int) -> list[EventAugParams]:
        """Draw ``n`` clips' parameters: 5 uniforms each, whatever is active."""
        u = rng.random((n, 5))
        suppress = np.where(u[:, 0] < self.suppress_polarity, np.where(u[:, 1] < self.suppress_on, 1, 2), 0)
        rates = (self.noise_rate, self.hot_pixels, self.hot_pixel_rate)
        rows = zip(
            suppress.tolist(),
            (u[:, 2] < self.invert_polarity).tolist(),
            (u[:, 3] * self.event_drop).tolist(),
            (u[:, 4] * 2**62).astype(np.int64).tolist(),
        )
        return [EventAugParams(*row, *rates) for row in rows]


TRAIN_ARGS = {f.name: f.default for f in fields(EventAugConfig)}
"""Our train arguments with their defaults (all off), registered with Ultralytics' defaults by the trainer."""


def hot_pixel_mask(seed: int, hw: tuple[int, int], fraction: float) -> np.ndarray:
    """The clip's hot pixels: the same for every window of the clip (drawn from the clip's seed alone)."""
    return np.random.default_rng([seed, 1]).random(hw) < fraction


def augment_events(img: torch.Tensor, params: EventAugParams, settings: EventSettings, windows) -> torch.Tensor:
    """Apply one clip's draws to its frames ``img`` ``(T, C, H, W)``; ``windows`` are the frames' indices in their
    sequence (the per-window draws' seeds). Returns a new tensor; ``img`` is not modified."""
    out = img.clone()
    nb = settings.nbins
    two = settings.polarities == 2
    if params.suppress:
        if two:  # channels p * nbins + bin: OFF first, ON second
            out[:, slice(nb, None) if params.suppress == 1 else slice(0, nb)] = 0
        else:
            out[out > 0 if params.suppress == 1 else out < 0] = 0
    if params.invert:
        out = torch.cat([out[:, nb:], out[:, :nb]], 1) if two else -out
    if not (params.drop > 0 or params.noise_rate > 0 or params.hot_pixels > 0):
        return out
    counts = out.numpy().astype(np.int64)
    cutoff = 255 if settings.cutoff is None else settings.cutoff
    window_s = settings.window_ms / 1000
    hot = hot_pixel_mask(params.seed, counts.shape[-2:], params.hot_pixels) if params.hot_pixels > 0 else None
    for f, w in enumerate(windows):
        rng = np.random.default_rng([params.seed, 2, int(w)])
        frame = counts[f]
        if params.drop > 0:
            frame = rng.binomial(frame, 1 - params.drop)
        lam = np.full(frame.shape[-2:], params.noise_rate * window_s / nb / 2)
        if hot is not None:
            lam = lam + hot * (params.hot_pixel_rate * window_s / nb / 2)
        if lam.any():
            frame = frame + rng.poisson(np.broadcast_to(lam, frame.shape))
        counts[f] = np.minimum(frame, cutoff)
    return torch.from_numpy(counts.astype(np.uint8))
