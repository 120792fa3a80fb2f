"""Small-object sampling: training clips and sequences that hold small classes are drawn more often.

The train argument ``small_sampling`` (off by default) takes

- a factor ``f > 1`` (``small_sampling=3``): a clip or sequence that holds a class of the data YAML's small group
  (``groups: {small: [...]}``) weighs ``f``, every other one 1;
- ``inverse``: each clip or sequence weighs ``n_max / n_c`` for the rarest class ``c`` it holds, where ``n_c`` counts
  the training boxes of class ``c`` (inverse class frequency, 1 for the most frequent class and for clips without
  boxes), capped at :data:`MAX_WEIGHT`.

How each sampling mode uses the weights:

- random clips (``sampling: random`` and the random slots of ``mixed``): each epoch draws its clips with replacement,
  with probability proportional to the weight (PyTorch's ``WeightedRandomSampler``, RVT's optional class-weighted
  sampler); an epoch keeps its length.
- stream slots (``sampling: stream`` and the stream slots of ``mixed``): a stream must stay a whole sequence for the
  memory to mean anything, so a sequence is walked ``round(weight)`` times per epoch instead, each walk from a fresh
  state; epochs get longer by the repeats (logged in one line).

Example:
    >>> spec = SmallSampling.parse(3, small_classes=[0, 2], where="train")
    >>> clip_weights([np.array([1]), np.array([0, 1]), np.array([])], spec, counts=np.array([10, 50, 5]))
    array([1., 3., 1.])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from yolo_etram.utils.errors import UnsupportedOptionError

MAX_WEIGHT = 10.0
"""Largest weight (and number of walks of a sequence per epoch): a class seen a handful of times must not fill an
epoch with copies of the same clips."""


@dataclass(frozen=True)
class SmallSampling:
    """``factor`` > 1 for clips holding ``small`` classes, or ``factor`` None for inverse class frequency."""

    factor: float | None
    small: tuple[int, ...] = ()

    @classmethod
    def parse(cls, value, small_classes: Sequence[int] | None, where: str) -> SmallSampling | None:
        """The ``small_sampling`` train argument (0 / None / False: off); a one-line error for what cannot work."""
        if value in (None, False, 0, 0.0, "0", "", "none", "off", 1, 1.0):
            return None
        if str(value).lower() == "inverse":
            return cls(None)
        try:
            factor = float(value)
        except (TypeError, ValueError):
            raise UnsupportedOptionError(
                f"small_sampling={value!r}: give a factor > 1 (e.g. 3) or 'inverse' (inverse class frequency)"
            ) from None
        if factor < 1 or factor > MAX_WEIGHT:
            raise UnsupportedOptionError(f"small_sampling={value}: the factor must be in (1, {MAX_WEIGHT:g}]")
        if not small_classes:
            raise UnsupportedOptionError(
                f"small_sampling={value} needs the small classes: add groups: {{small: [class ids]}} to {where}, "
                "or use small_sampling=inverse (inverse class frequency)"
            )
        return cls(factor, tuple(int(c) for c in small_classes))

    def describe(self) -> str:
        if self.factor is None:
            return "inverse class frequency"
        return f"x{self.factor:g} for clips holding small classes {list(self.small)}"


def clip_weights(classes: Sequence[np.ndarray], spec: SmallSampling, counts: np.ndarray | None = None) -> np.ndarray:
    """One weight per clip (or sequence) from the classes it holds; ``counts[c]``: training boxes of class ``c``
    (needed by inverse class frequency only)."""
    out = np.ones(len(classes), np.float64)
    if spec.factor is not None:
        small = np.asarray(spec.small)
        for i, c in enumerate(classes):
            if np.isin(c, small).any():
                out[i] = spec.factor
        return out
    counts = np.asarray(counts, np.float64)
    present = counts[counts > 0]
    inverse = np.where(counts > 0, (present.max() if len(present) else 1.0) / np.maximum(counts, 1), 1.0)
    for i, c in enumerate(classes):
        if len(c):
            out[i] = inverse[np.asarray(c, np.int64)].max()
    return np.clip(out, 1.0, MAX_WEIGHT)


def walks(weights: np.ndarray) -> np.ndarray:
    """Walks per epoch of each sequence: its weight rounded, at least 1."""
    return np.maximum(np.rint(weights), 1).astype(np.int64)
