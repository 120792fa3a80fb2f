"""A straightforward per-window re-statement of RVT's preprocessing, with torch, used as the reference in tests and
in ``benchmarks/bench_prepare.py``. It follows ``RVT:scripts/genx/preprocess_dataset.py`` and
``RVT:data/utils/representations.py`` operation by operation (uint8 accumulation that wraps, float32 time bins,
``nearest-exact`` downsampling of the full-resolution histogram), loading the whole recording like RVT does.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def rvt_histogram(x, y, p, t, height, width, nbins=10, cutoff=10, downsample=False) -> np.ndarray:
    """RVT's ``StackedHistogram.construct`` (fastmode) and, optionally, ``downsample_ev_repr``."""
    x, y, p, t = (torch.from_numpy(np.asarray(a, np.int64)) for a in (x, y, p, t))
    rep = torch.zeros((2, nbins, height, width), dtype=torch.uint8)
    if x.numel():
        t0, t1 = t[0], t[-1]
        t_norm = (t - t0) / max((t1 - t0), 1)
        t_idx = torch.clamp((t_norm * nbins).floor(), max=nbins - 1)
        idx = x.long() + width * y.long() + height * width * t_idx.long() + nbins * height * width * p.long()
        rep.put_(idx, torch.ones_like(idx, dtype=torch.uint8), accumulate=True)
        rep = torch.clamp(rep, min=0, max=cutoff)
    rep = rep.reshape(-1, height, width)
    if downsample:
        rep = F.interpolate(rep[None], scale_factor=0.5, mode="nearest-exact")[0]
    return rep.numpy()


def correct_time(t: np.ndarray) -> np.ndarray:
    """RVT's numba ``_correct_time``: a running maximum, starting from 0."""
    t = t.copy()
    last = 0
    for i in range(len(t)):
        if t[i] < last:
            t[i] = last
        else:
            last = t[i]
    return t


def rvt_windows(t: np.ndarray, window_t: np.ndarray, window_us: int) -> tuple[np.ndarray, np.ndarray]:
    """Start and end event indices of each window ``[τ - window, τ]`` (RVT's two searchsorted calls)."""
    return np.searchsorted(t, window_t - window_us, side="left"), np.searchsorted(t, window_t, side="right")


def rvt_prepare_events(x, y, p, t, window_t, height, width, window_us=50_000, downsample=False, nbins=10, cutoff=10):
    """All histograms of one recording, window by window, as RVT computes them (in-frame events assumed)."""
    t = correct_time(np.asarray(t, np.int64))
    p = np.clip(np.asarray(p, np.int64), 0, None)
    starts, ends = rvt_windows(t, window_t, window_us)
    return np.stack([rvt_histogram(x[s:e], y[s:e], p[s:e], t[s:e], height, width, nbins, cutoff, downsample)
                     for s, e in zip(starts, ends)])


def rvt_loader_labels(boxes: np.ndarray, full_hw, downsample_factor=None) -> np.ndarray:
    """RVT's ObjectLabelFactory + ``__getitem__``: float32 (N, 7) [t, x, y, w, h, class_id, confidence] at load
    resolution (clamp at full resolution, then ``scale_(1/downsample)`` and flat-box removal)."""
    lab = torch.from_numpy(np.stack([boxes[k].astype("float32") for k in
                                     ("t", "x", "y", "w", "h", "class_id", "class_confidence")], 1))
    ht, wd = full_hw
    x0 = torch.clamp(lab[:, 1], min=0, max=wd - 1)
    y0 = torch.clamp(lab[:, 2], min=0, max=ht - 1)
    x1 = torch.clamp(lab[:, 1] + lab[:, 3], min=0, max=wd - 1)
    y1 = torch.clamp(lab[:, 2] + lab[:, 4], min=0, max=ht - 1)
    lab[:, 1], lab[:, 2], lab[:, 3], lab[:, 4] = x0, y0, x1 - x0, y1 - y0
    if downsample_factor:
        s = 1 / downsample_factor
        nh, nw = s * ht, s * wd
        x1 = torch.clamp((lab[:, 1] + lab[:, 3]) * s, max=nw - 1)
        y1 = torch.clamp((lab[:, 2] + lab[:, 4]) * s, max=nh - 1)
        lab[:, 1] = lab[:, 1] * s
        lab[:, 2] = lab[:, 2] * s
        lab[:, 3] = x1 - lab[:, 1]
        lab[:, 4] = y1 - lab[:, 2]
        lab = lab[(lab[:, 3] > 0) & (lab[:, 4] > 0)]
    return lab.numpy()
