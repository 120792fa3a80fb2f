"""The statistics that judge a lever: mean, spread and a confidence interval over seeds, and the paired difference
against the baseline on the same seeds.

- :func:`summarize`: mean, sample standard deviation (``ddof=1``) and the two-sided Student-t interval
  ``mean +- t(1 - alpha/2, n - 1) * std / sqrt(n)``. One seed gives a mean and no spread: no interval is made up.
- :func:`paired_difference`: for the seeds both variants ran, ``d_i = variant_i - baseline_i``; the mean of ``d``, its
  t interval, and the two-sided p-value of the paired t-test (``H0: E[d] = 0``). Pairing removes what a seed does to
  both runs alike (data order, initial weights), which is most of the run-to-run noise; with fewer than two pairs
  there is no test.

Usage:
    >>> s = summarize([0.27, 0.29, 0.25])
    >>> s.mean, s.ci
    (0.27, (0.2203..., 0.3196...))
    >>> paired_difference(base=[0.27, 0.29, 0.25], other=[0.30, 0.31, 0.27]).p_value
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

CONFIDENCE = 0.95
"""The level of every interval printed (two-sided)."""


def t_quantile(q: float, dof: int) -> float:
    """The ``q`` quantile of Student's t with ``dof`` degrees of freedom."""
    from scipy.stats import t

    return float(t.ppf(q, dof))


def t_two_sided_p(t_stat: float, dof: int) -> float:
    """Two-sided p-value of a t statistic."""
    from scipy.stats import t

    return float(2 * t.sf(abs(t_stat), dof))


@dataclass(frozen=True)
class Summary:
    """Mean, spread and interval of one metric over ``n`` seeds; ``std`` and ``ci`` are None below two seeds."""

    n: int
    mean: float | None
    std: float | None
    ci: tuple[float, float] | None

    @property
    def why_no_interval(self) -> str | None:
        if self.n == 0:
            return "no run has this metric"
        if self.n == 1:
            return "one seed: no spread, so no interval (run more seeds)"
        return None


@dataclass(frozen=True)
class PairedDifference:
    """``variant - baseline`` over the seeds both ran: mean, interval, p-value of the paired t-test."""

    n: int
    mean: float | None
    ci: tuple[float, float] | None
    p_value: float | None

    @property
    def why_no_test(self) -> str | None:
        if self.n == 0:
            return "no seed in common with the baseline"
        if self.n == 1:
            return "one paired seed: no spread, so no interval and no test (run more seeds)"
        return None


def _finite(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def summarize(values: Sequence[float | None], confidence: float = CONFIDENCE) -> Summary:
    """Mean, sample standard deviation and t interval of ``values`` (None and NaN are left out)."""
    x = _finite(values)
    n = len(x)
    if n == 0:
        return Summary(0, None, None, None)
    mean = sum(x) / n
    if n == 1:
        return Summary(1, mean, None, None)
    std = math.sqrt(sum((v - mean) ** 2 for v in x) / (n - 1))
    half = t_quantile(0.5 + confidence / 2, n - 1) * std / math.sqrt(n)
    return Summary(n, mean, std, (mean - half, mean + half))


def paired_difference(
    base: Sequence[float | None], other: Sequence[float | None], confidence: float = CONFIDENCE
) -> PairedDifference:
    """``other - base`` per position (one position per seed; pairs with a missing value are left out)."""
    pairs = [(b, o) for b, o in zip(base, other) if _finite([b]) and _finite([o])]
    d = [float(o) - float(b) for b, o in pairs]
    s = summarize(d, confidence)
    if s.n < 2:
        return PairedDifference(s.n, s.mean, None, None)
    if s.std == 0:  # every seed moved by exactly the same amount
        p = 1.0 if s.mean == 0 else 0.0
        return PairedDifference(s.n, s.mean, s.ci, p)
    t_stat = s.mean / (s.std / math.sqrt(s.n))
    return PairedDifference(s.n, s.mean, s.ci, t_two_sided_p(t_stat, s.n - 1))
