"""The mixed-density event stack: RVT's ``MixedDensityEventStack`` and ReYOLOv8's MDES (the same formula).

Bin ``i`` of ``nbins`` holds the events of the last ``(1/2)^(nbins-i)`` of the window, so the newest bins are the
finest: ``bin = floor(max(nbins - log(tnorm) / log(1/2), 0))`` with ``tnorm`` clamped to ``[1e-6, 1 - 1e-6]``. An event
adds its polarity (``2p - 1``) and the bins are summed cumulatively, so channel ``i`` is the net polarity of all events
up to bin ``i`` and the last channel holds the whole window. Signed int8, ``nbins`` channels.

The logarithm is torch's float32 ``log``, as in both references, so that events exactly on a bin edge (``tnorm = 1/2``,
common when the window spans an even number of microseconds) land in the same bin: numpy's float32 log rounds
differently in the last bit there.

One deliberate difference, as for the histogram: the references accumulate in int8 and wrap at 128 (a pixel with 130
more ON than OFF events in a bin becomes negative); we sum exactly and saturate, at ``cutoff`` (RVT's
``mixeddensity_stack``: 32, then ``clamp(-cutoff, cutoff)`` as RVT does) or at +-127 (ReYOLOv8's ``mdes``, which has
no cutoff). The outputs are equal whenever no per-bin or cumulative sum leaves -127..127.

Usage:
    >>> from yolo_etram.data.representations import MixedDensityStack
    >>> rep = MixedDensityStack(height=720, width=1280, nbins=10, cutoff=32, downsample=2)
    >>> stack = rep(x, y, p, t)  # int8 (10, 360, 640)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .base import EventRepresentation, normalised_time


def log_density_bins(t: np.ndarray, t0: int, t1: int, nbins: int) -> np.ndarray:
    """The references' ``floor(clamp(nbins - log(clamp(tnorm, 1e-6, 1 - 1e-6)) / log(1/2), min=0))``, in torch
    float32."""
    import torch  # torch's float32 log, bit for bit (see the module docstring)

    tnorm = torch.from_numpy(normalised_time(t, t0, t1))
    tnorm = torch.clamp(tnorm, min=1e-6, max=1 - 1e-6)
    bin_float = torch.clamp(nbins - torch.log(tnorm) / math.log(1 / 2), min=0)
    return bin_float.floor().to(torch.int64).numpy()


@dataclass(frozen=True)
class MixedDensityStack(EventRepresentation):
    """RVT's mixed-density event stack (cutoff 32 in RVT's configuration)."""

    cutoff: int | None = 32
    name = "mixeddensity_stack"
    dtype = np.dtype(np.int8)
    polarities = 1
    max_cutoff = 127

    def build(self, x, y, p, t, t0, t1):
        h, w = self.out_hw
        b = log_density_bins(t, t0, t1, self.nbins)
        flat = b * (h * w) + self.pixel_index(x, y)
        pol = p.astype(np.float64) * 2 - 1
        net = np.bincount(flat, weights=pol, minlength=self.nbins * h * w).astype(np.int64)  # exact in float64
        net = np.cumsum(net.reshape(self.shape), axis=0)
        cutoff = 127 if self.cutoff is None else self.cutoff  # symmetric: an inverted frame stays in range
        return np.clip(net, -cutoff, cutoff).astype(np.int8)


@dataclass(frozen=True)
class MDES(MixedDensityStack):
    """ReYOLOv8's MDES (``formats_utils.mdes``): the mixed-density stack without a cutoff."""

    nbins: int = 5
    cutoff: int | None = None
    name = "mdes"
