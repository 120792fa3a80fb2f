"""What each labeled object was doing: moving, stopped after moving, or parked all along (synthetic ground truth).

Event cameras see change only: an object that stops emits almost no events, and only a model with memory can still
see it. The synthetic generator writes ``<stem>_motion.npz`` (``MOTION_DTYPE`` rows, one per box); ``prepare`` aligns
it with the labels it keeps (``labels_v2/motion.npy``); the dataset gives every box a motion code and the time since it
stopped; the validator scores AP per :func:`motion_subsets`. Real recordings have no motion file: nothing changes.

Usage:
    >>> codes, still_s = motion_columns(np.load("seq/labels_v2/motion.npy"))
    >>> subsets = motion_subsets(codes, still_s)  # {"moving": mask, "stationary": mask, ...}
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

MOTION_DTYPE = np.dtype(
    [("t", "<u8"), ("track_id", "<u4"), ("moving", "?"), ("stationary_for_us", "<i8"), ("seen_moving", "?")]
)
"""Rows of ``<name>_motion.npz``, aligned with the box file. ``moving``: speed above ``moving_threshold_mps``.
``stationary_for_us``: time since the object last moved (0 when moving; objects parked from the start count from the
simulation start, ``warmup_s`` before the recording). ``seen_moving``: the object was moving while in the frame at some
time since the recording began, i.e. it has produced events a model could have seen."""

__all__ = [
    "MOTION_DTYPE",
    "MOVING",
    "STOPPED",
    "PARKED",
    "UNKNOWN",
    "MOTION_FILE",
    "raw_motion_path",
    "align_motion",
    "motion_columns",
    "motion_subsets",
    "STILL_BINS_S",
]

MOVING, STOPPED, PARKED, UNKNOWN = 0, 1, 2, -1
"""Motion codes: moving; stationary after having moved in view (its last events are in the past: memory's case);
stationary since before the recording began (never produced events: no event model can see it); no information."""
MOTION_FILE = "motion.npy"
"""Under ``<sequence>/labels_v2/``, row-aligned with ``labels.npz``'s ``labels``."""
STILL_BINS_S = (0.0, 1.0, 3.0, float("inf"))
"""Bins of the time since a stopped object last moved, for AP against stationary time."""


def raw_motion_path(boxes_path: str | Path) -> Path:
    """``<stem>_motion.npz`` beside a raw ``<stem>_bbox.npy``."""
    p = Path(boxes_path)
    stem = p.name[: -len("_bbox.npy")] if p.name.endswith("_bbox.npy") else p.stem
    return p.with_name(stem + "_motion.npz")


def align_motion(labels: np.ndarray, motion: np.ndarray) -> np.ndarray:
    """Motion rows for ``labels`` (any box dtype with ``t`` and ``track_id``), joined on ``(t, track_id)``.

    Boxes without a motion row get ``stationary_for_us = -1`` (:data:`UNKNOWN` in :func:`motion_columns`)."""
    out = np.zeros(len(labels), MOTION_DTYPE)
    out["t"], out["track_id"], out["stationary_for_us"] = labels["t"], labels["track_id"], -1
    if not len(labels) or not len(motion):
        return out
    key = lambda a: (a["t"].astype(np.uint64) << np.uint64(32)) | a["track_id"].astype(np.uint64)  # noqa: E731
    mkeys = key(motion)
    order = np.argsort(mkeys, kind="stable")
    lkeys = key(labels)
    pos = np.clip(np.searchsorted(mkeys[order], lkeys), 0, len(order) - 1)
    found = mkeys[order][pos] == lkeys
    out[found] = motion[order[pos[found]]]
    return out


def motion_columns(motion: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per box: the motion code (``int8``) and the seconds since it stopped (``float32``, 0 when moving or unknown)."""
    codes = np.full(len(motion), UNKNOWN, np.int8)
    known = motion["stationary_for_us"] >= 0
    codes[known & motion["moving"]] = MOVING
    codes[known & ~motion["moving"] & motion["seen_moving"]] = STOPPED
    codes[known & ~motion["moving"] & ~motion["seen_moving"]] = PARKED
    still = np.where(codes == STOPPED, motion["stationary_for_us"] / 1e6, 0.0).astype(np.float32)
    return codes, still


def motion_subsets(codes: np.ndarray, still_s: np.ndarray) -> dict[str, np.ndarray]:
    """Ground-truth subsets scored on their own (other boxes are ignored, not missed): ``moving``, ``stationary``
    (stopped after moving: memory's case), ``parked`` (never moved), and ``stationary <lo>-<hi>s`` by time stopped."""
    codes, still_s = np.asarray(codes), np.asarray(still_s)
    out = {"moving": codes == MOVING, "stationary": codes == STOPPED, "parked": codes == PARKED}
    for lo, hi in zip(STILL_BINS_S[:-1], STILL_BINS_S[1:]):
        name = f"stationary {lo:g}-{hi:g}s" if np.isfinite(hi) else f"stationary >{lo:g}s"
        out[name] = (codes == STOPPED) & (still_s >= lo) & (still_s < hi)
    return out
