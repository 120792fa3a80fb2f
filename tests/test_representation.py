"""The stacked histogram equals RVT's torch code bit for bit (except where RVT's uint8 counts wrap)."""

import numpy as np
import pytest
from rvt_reference import rvt_histogram

from yolo_etram.data.representations import StackedHistogram


def window(n, span, w, h, seed):
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(1_000_000, 1_000_000 + span + 1, n))
    return rng.integers(0, w, n), rng.integers(0, h, n), rng.integers(0, 2, n), t


@pytest.mark.parametrize("downsample", [1, 2])
@pytest.mark.parametrize("hw", [(36, 64), (35, 63), (12, 9)])
def test_random_windows_match_rvt(downsample, hw):
    h, w = hw
    rep = StackedHistogram(h, w, downsample=downsample)
    for seed, (n, span) in enumerate([(500, 50_000), (3000, 7), (50, 1), (20_000, 49_999), (5000, 3)]):
        ev = window(n, span, w, h, seed)
        ours = rep(*ev)
        assert ours.dtype == np.uint8 and ours.shape == rep.shape
        np.testing.assert_array_equal(ours, rvt_histogram(*ev, h, w, downsample=downsample))


def test_time_bins_in_float32_like_torch():
    """Every (dt, span) pair for small spans: bins agree with torch's float32 division at the boundaries."""
    rep = StackedHistogram(1, 1)
    for span in range(1, 400):
        t = np.arange(span + 1, dtype=np.int64) + 123_456_789
        ours = rep.time_bins(t)
        import torch

        tt = torch.from_numpy(t)
        ref = torch.clamp(((tt - tt[0]) / max(tt[-1] - tt[0], 1) * 10).floor(), max=9).long().numpy()
        np.testing.assert_array_equal(ours, ref)


def test_empty_single_and_same_timestamp_windows():
    rep = StackedHistogram(8, 8)
    empty = rep(*(np.zeros(0, np.int64),) * 4)
    assert empty.shape == (20, 8, 8) and not empty.any()
    single = rep(np.array([3]), np.array([2]), np.array([1]), np.array([77]))
    assert single[10, 2, 3] == 1 and single.sum() == 1  # ON, bin 0
    n = 7
    same = rep(np.full(n, 1), np.full(n, 1), np.zeros(n, int), np.full(n, 500))
    assert same[0, 1, 1] == n and same.sum() == n  # all in bin 0
    for ev in (
        (np.array([3]), np.array([2]), np.array([1]), np.array([77])),
        (np.full(n, 1), np.full(n, 1), np.zeros(n, int), np.full(n, 500)),
    ):
        np.testing.assert_array_equal(rep(*ev), rvt_histogram(*ev, 8, 8))


def test_counts_saturate_instead_of_wrapping():
    """RVT's fastmode wraps at 256 (260 events store 4); we saturate at the cutoff, on purpose (spec 10.3)."""
    rep = StackedHistogram(4, 4, cutoff=10)
    n = 260
    ev = (np.full(n, 2), np.full(n, 1), np.ones(n, int), np.zeros(n, int))
    ours = rep(*ev)
    assert ours[10, 1, 2] == 10
    assert rvt_histogram(*ev, 4, 4)[10, 1, 2] == 4  # RVT's wrap-around
    ev = (np.full(255, 2), np.full(255, 1), np.ones(255, int), np.zeros(255, int))
    np.testing.assert_array_equal(rep(*ev), rvt_histogram(*ev, 4, 4))  # no wrap: identical


def test_downsample_keeps_odd_pixels_and_normalises_over_all_events():
    rep = StackedHistogram(4, 4, downsample=2)
    # the even-pixel event at t=0 is dropped, but still sets t0, so the odd-pixel event at t=10 lands in bin 9
    out = rep(np.array([0, 3]), np.array([0, 1]), np.array([0, 0]), np.array([0, 10]))
    assert out.shape == (20, 2, 2) and out[9, 0, 1] == 1 and out.sum() == 1


def test_invalid_parameters():
    with pytest.raises(ValueError, match="cutoff"):
        StackedHistogram(4, 4, cutoff=300)
