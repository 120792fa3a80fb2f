"""Sequence-consistent spatial augmentation of event clips: horizontal flip, zoom-out, zoom-in (RVT's set).

One :class:`AugParams` is applied identically to every frame of a clip, to the histograms and the boxes alike. The
sampler draws it (in the main process, from a seeded numpy Generator) with :meth:`AugConfig.sample` and sends it to the
workers inside the clip key; the parameters hold only uniform draws, so they do not depend on the frame size and the
zoom-in window is placed by :func:`augment_clip`, which sees the boxes.

Boxes are ``[cls, x1, y1, x2, y2]`` in pixels with continuous edges: a box ``[x1, x2)`` covers the pixel columns
``x1 .. x2-1``. Under that convention a flip maps ``[x1, x2]`` to ``[W - x2, W - x1]``. RVT writes
``x' = W - 1 - x - w`` (its labels treat the right edge as the last pixel index, clamped to ``W - 1``), one pixel to
the left of where the flipped pixels are; ours lands on the pixels. Resizes use ``nearest-exact`` like RVT, and boxes
are scaled by the exact size ratio of the resize (RVT uses the nominal factor ``f``), so they stay on their pixels.

Event histograms are counts: none of Ultralytics' image augmentations (mosaic, mixup, HSV, letterbox with 114 fill)
apply to them. Empty canvas is zero (no events).

Usage:
    >>> import numpy as np, torch
    >>> from yolo_etram.data.augment import AugConfig, augment_clip
    >>> params = AugConfig.random().sample(np.random.default_rng(0))
    >>> img = torch.zeros(5, 20, 64, 96, dtype=torch.uint8)
    >>> labels = [None] * 4 + [np.array([[0, 10, 10, 30, 40]], np.float32)]
    >>> img, labels = augment_clip(img, labels, params)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from .event_augment import EventAugConfig, EventAugParams

Labels = list[np.ndarray | None]  # one entry per frame: (n, 5) float32 [cls, x1, y1, x2, y2], or None


class AugParams(NamedTuple):  # a NamedTuple: cheap to build by the million and to pickle to workers
    """The random draws of one augmentation: applied alike to every frame of a clip (or of a whole sequence).

    ``zoom_in``/``zoom_out`` are factors (1 = off; at most one is active). ``ux``, ``uy`` in [0, 1) place the zoom
    window; ``ubox`` in [0, 1) picks the box that the zoom-in window must contain.
    """

    hflip: bool = False
    zoom_in: float = 1.0
    zoom_out: float = 1.0
    ux: float = 0.0
    uy: float = 0.0
    ubox: float = 0.0
    events: EventAugParams | None = None  # the event-domain draws (:mod:`.event_augment`), applied by the dataset

    @property
    def identity(self) -> bool:
        return not self.hflip and self.zoom_in == 1.0 and self.zoom_out == 1.0 and self.events is None


@dataclass(frozen=True)
class AugConfig:
    """Probabilities and ranges of the augmentation; defaults are RVT's streaming ones (``config/dataset/base.yaml``).

    Args:
        hflip: probability of a horizontal flip.
        zoom: probability of a zoom (in or out, never both).
        zoom_in_weight, zoom_out_weight: relative odds of in vs out when zooming (RVT random access: 8:2).
        zoom_in_range, zoom_out_range: uniform ranges of the factors.
        events: the event-domain augmentation (polarity, drop, noise), drawn with the same generator after the
            spatial draws (so a configuration without it draws exactly what it drew before).
    """

    hflip: float = 0.5
    zoom: float = 0.5
    zoom_in_weight: float = 0.0
    zoom_out_weight: float = 1.0
    zoom_in_range: tuple[float, float] = (1.0, 1.5)
    zoom_out_range: tuple[float, float] = (1.0, 1.2)
    events: EventAugConfig | None = None

    def __post_init__(self):
        if not (0 <= self.hflip <= 1 and 0 <= self.zoom <= 1):
            raise ValueError(f"probabilities must be in [0, 1]: hflip={self.hflip}, zoom={self.zoom}")
        if self.zoom_in_weight < 0 or self.zoom_out_weight < 0:
            raise ValueError("zoom weights must be >= 0")
        for name in ("zoom_in_range", "zoom_out_range"):
            lo, hi = getattr(self, name)
            if not 1 <= lo <= hi:
                raise ValueError(f"{name} must satisfy 1 <= min <= max, got {(lo, hi)}")

    @classmethod
    def stream(cls) -> AugConfig:
        """RVT's streaming augmentation: hflip 0.5, zoom-out 0.5 with f ~ U[1, 1.2], no zoom-in."""
        return cls()

    @classmethod
    def random(cls) -> AugConfig:
        """RVT's random-access augmentation: hflip 0.5, zoom 0.8 split in:out 8:2, f_in ~ U[1, 1.5]."""
        return cls(zoom=0.8, zoom_in_weight=8.0, zoom_out_weight=2.0)

    @property
    def has_zoom_in(self) -> bool:
        return self.zoom > 0 and self.zoom_in_weight > 0

    def sample(self, rng: np.random.Generator) -> AugParams:
        """Draw one :class:`AugParams`."""
        return self.sample_many(rng, 1)[0]

    def sample_many(self, rng: np.random.Generator, n: int) -> list[AugParams]:
        """Draw ``n`` :class:`AugParams`, 7 uniforms each whatever is active (the same as ``n`` calls of ``sample``)."""
        u = rng.random((n, 7))
        total = self.zoom_in_weight + self.zoom_out_weight
        zoom = (u[:, 1] < self.zoom) & (total > 0)
        zoom_in = zoom & (u[:, 2] * total < self.zoom_in_weight)
        zoom_out = zoom & ~zoom_in
        lo = np.where(zoom_in, self.zoom_in_range[0], self.zoom_out_range[0])
        hi = np.where(zoom_in, self.zoom_in_range[1], self.zoom_out_range[1])
        factor = lo + u[:, 3] * (hi - lo)
        rows = zip(
            (u[:, 0] < self.hflip).tolist(),
            np.where(zoom_in, factor, 1.0).tolist(),
            np.where(zoom_out, factor, 1.0).tolist(),
            *u[:, 4:].T.tolist(),
        )
        params = [AugParams(*row) for row in rows]
        if self.events is not None and self.events.active:
            params = [p._replace(events=e) for p, e in zip(params, self.events.sample_many(rng, n))]
        return params


def resolve_aug(augment: AugConfig | bool | None, default: AugConfig) -> AugConfig | None:
    """``True`` -> ``default``, ``False``/``None`` -> no augmentation, an :class:`AugConfig` -> itself."""
    if augment is True:
        return default
    return augment or None


# ----------------------------------------------------------------------------------------------------------------------
# Transforms: img is a (T, C, H, W) tensor in the stored dtype; labels one entry per frame
# ----------------------------------------------------------------------------------------------------------------------


def _map_boxes(labels: Labels, fn) -> Labels:
    return [None if b is None else fn(b) for b in labels]


def resize_nearest(img: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``F.interpolate(mode='nearest-exact')`` for every stored dtype: int8 frames go through uint8 shifted by 128, as
    RVT's ``downsample_ev_repr`` does (torch has no int8 resize); nearest picks pixels, so the values are unchanged."""
    if img.dtype == torch.int8:
        shifted = (img.to(torch.int16) + 128).to(torch.uint8)
        return (F.interpolate(shifted, size=size, mode="nearest-exact").to(torch.int16) - 128).to(torch.int8)
    return F.interpolate(img, size=size, mode="nearest-exact")


def hflip(img: torch.Tensor, labels: Labels) -> tuple[torch.Tensor, Labels]:
    """Mirror left-right: pixel column ``c -> W-1-c``, box ``[x1, x2] -> [W - x2, W - x1]``."""
    w = img.shape[-1]

    def flip(b):
        out = b.copy()
        out[:, 1], out[:, 3] = w - b[:, 3], w - b[:, 1]
        return out

    return img.flip(-1), _map_boxes(labels, flip)


def zoom_out(img: torch.Tensor, labels: Labels, factor: float, ux: float, uy: float) -> tuple[torch.Tensor, Labels]:
    """Shrink the clip by ``factor`` (nearest-exact) into a zero canvas at ``(int(ux*(W-w)), int(uy*(H-h)))``."""
    h, w = img.shape[-2:]
    zh, zw = int(h / factor), int(w / factor)
    if (zh, zw) == (h, w):
        return img, labels
    x0, y0 = int(ux * (w - zw)), int(uy * (h - zh))
    out = torch.zeros_like(img)
    out[..., y0 : y0 + zh, x0 : x0 + zw] = resize_nearest(img, (zh, zw))
    sx, sy = np.float32(zw / w), np.float32(zh / h)

    def move(b):
        out = b.copy()
        out[:, [1, 3]] = b[:, [1, 3]] * sx + x0
        out[:, [2, 4]] = b[:, [2, 4]] * sy + y0
        return out

    return out, _map_boxes(labels, move)


def zoom_in_window(
    box: np.ndarray,
    hw: tuple[int, int],
    size: tuple[int, int],
    ux: float,
    uy: float,
) -> tuple[int, int]:
    """Top-left ``(x0, y0)`` of a ``size=(h, w)`` window inside the frame that contains ``box`` (x1, y1, x2, y2), or
    lies inside it when the box is larger than the window; ``ux``, ``uy`` place it uniformly in the allowed range."""

    def axis(lo_edge, hi_edge, win, full, u):
        lo = max(min(hi_edge - win, lo_edge), 0.0)
        hi = min(max(lo_edge, hi_edge - win), full - win)
        return int(lo + u * max(hi - lo, 0.0))

    x1, y1, x2, y2 = (float(v) for v in box)
    return axis(x1, x2, size[1], hw[1], ux), axis(y1, y2, size[0], hw[0], uy)


def zoom_in(
    img: torch.Tensor,
    labels: Labels,
    factor: float,
    ux: float,
    uy: float,
    ubox: float,
) -> tuple[torch.Tensor, Labels]:
    """Crop a window of ``(int(H/f), int(W/f))`` that contains one box of the most recent frame with boxes (any box
    can be picked, unlike RVT's ``randint``), and resize it back to (H, W) with nearest-exact. Boxes are clipped to the
    window, flat ones dropped, then scaled. Without any box in the clip the clip is returned unchanged (RVT warns)."""
    h, w = img.shape[-2:]
    zh, zw = int(h / factor), int(w / factor)
    recent = next((b for b in reversed(labels) if b is not None and len(b)), None)
    if recent is None or (zh, zw) == (h, w):
        return img, labels
    box = recent[min(int(ubox * len(recent)), len(recent) - 1), 1:5]
    x0, y0 = zoom_in_window(box, (h, w), (zh, zw), ux, uy)
    out = resize_nearest(img[..., y0 : y0 + zh, x0 : x0 + zw], (h, w))
    sx, sy = np.float32(w / zw), np.float32(h / zh)

    def crop(b):
        out = b.copy()
        out[:, [1, 3]] = (np.clip(b[:, [1, 3]], x0, x0 + zw) - x0) * sx
        out[:, [2, 4]] = (np.clip(b[:, [2, 4]], y0, y0 + zh) - y0) * sy
        return out[(out[:, 3] > out[:, 1]) & (out[:, 4] > out[:, 2])]

    return out, _map_boxes(labels, crop)


def augment_clip(img: torch.Tensor, labels: Labels, params: AugParams | None) -> tuple[torch.Tensor, Labels]:
    """Apply ``params`` to a clip in RVT's order (flip, zoom-in, zoom-out); inputs are never modified in place."""
    if params is None or params.identity:
        return img, labels
    if params.hflip:
        img, labels = hflip(img, labels)
    if params.zoom_in > 1:
        img, labels = zoom_in(img, labels, params.zoom_in, params.ux, params.uy, params.ubox)
    elif params.zoom_out > 1:
        img, labels = zoom_out(img, labels, params.zoom_out, params.ux, params.uy)
    return img, labels
