"""ReYOLOv8's voxel grid (``formats_utils.voxel_grid``), float16.

Channels as the histogram's (``p * nbins + bin``, OFF first). Each event adds ``1 - (tnorm * nbins - bin)``, one
minus the distance of its time from the start of its bin, to its own bin only (ReYOLOv8 does not split it between two
bins as the classic voxel grid of Zhu et al. does). The sums are float16, added in event order with float16 rounding
after each event, as torch's CPU ``put_(accumulate=True)`` adds them; float16 counts stop growing at 2048.

Usage:
    >>> from yolo_etram.data.representations import VoxelGrid
    >>> rep = VoxelGrid(height=720, width=1280, nbins=5)
    >>> grid = rep(x, y, p, t)  # float16 (10, 720, 1280)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import EventRepresentation, linear_bins


@dataclass(frozen=True)
class VoxelGrid(EventRepresentation):
    """Time-weighted counts per (polarity, time bin, pixel)."""

    nbins: int = 5
    name = "voxel_grid"
    dtype = np.dtype(np.float16)
    max_cutoff = 0  # no cutoff

    def build(self, x, y, p, t, t0, t1):
        h, w = self.out_hw
        b, scaled = linear_bins(t, t0, t1, self.nbins)
        weight = np.maximum(np.float32(0), np.float32(1) - np.abs(scaled - b.astype(np.float32))).astype(np.float16)
        flat = (p.astype(np.int64) * self.nbins + b) * (h * w) + self.pixel_index(x, y)
        out = self.empty()
        np.add.at(out.reshape(-1), flat, weight)  # sequential, float16 rounding after each add
        return out
