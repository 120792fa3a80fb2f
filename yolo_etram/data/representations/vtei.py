"""ReYOLOv8's volume of ternary event images (VTEI, ``formats_utils.vtei``).

``nbins`` linear time bins (as the histogram's); each pixel-bin holds the polarity (``2p - 1``) of its last event, or
0 where it has none. Signed int8 in {-1, 0, 1}, ``nbins`` channels.

ReYOLOv8 writes the polarities with ``put_(accumulate=False)``: on one thread it writes in event order, so the last
event wins; with several threads and more than 32768 events torch splits the writes between threads and a pixel-bin
hit on both sides of a split may keep either. We keep the last event always (what one thread gives).

Usage:
    >>> from yolo_etram.data.representations import VTEI
    >>> rep = VTEI(height=720, width=1280, nbins=5)
    >>> frame = rep(x, y, p, t)  # int8 (5, 720, 1280)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import EventRepresentation, linear_bins


@dataclass(frozen=True)
class VTEI(EventRepresentation):
    """The polarity of the last event per pixel and time bin."""

    nbins: int = 5
    name = "vtei"
    dtype = np.dtype(np.int8)
    polarities = 1
    max_cutoff = 0  # no cutoff

    def build(self, x, y, p, t, t0, t1):
        h, w = self.out_hw
        b = linear_bins(t, t0, t1, self.nbins)[0]
        flat = b.astype(np.int64) * (h * w) + self.pixel_index(x, y)
        idx, last_rev = np.unique(flat[::-1], return_index=True)  # first in reverse = last in time
        out = self.empty()
        out.reshape(-1)[idx] = p[::-1][last_rev].astype(np.int8) * 2 - 1
        return out
