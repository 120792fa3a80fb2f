"""The per-object sprite cache that the event generator composes onto the background and the labels use for
occlusion."""

from __future__ import annotations

import numpy as np

from .sprites import _draw_sprite
from .traffic import _Track


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
