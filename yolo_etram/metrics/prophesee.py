"""Prophesee/COCO detection metrics for event cameras, computed exactly as RVT (and the eTraM fork of it) computes them.

The protocol (``RVT:utils/evaluation/prophesee/{evaluation.py,io/box_filtering.py,metrics/coco_eval.py}``):

1. :func:`filter_eval_boxes` drops, from ground truth and predictions alike, every box at ``t <= 0.5 s`` and every box
   with
   a diagonal under ``min_box_diag`` or a side under ``min_box_side`` (30 and 10 half-resolution pixels for gen4/eTraM).
2. :func:`match_times` turns each labeled timestamp that keeps at least one ground-truth box into one COCO image, with
   the detections that lie within ``time_tol_us`` of it (a detection near two labeled times lands in both images).
3. COCO bbox evaluation with category id ``class_id + 1`` and the score ``class_confidence``: class-aware (RVT's
   ``AP``), class-agnostic (the eTraM paper's "All" column), per class and per group of classes.

Usage:
    >>> from yolo_etram.metrics.prophesee import PropheseeEvaluator
    >>> evaluator = PropheseeEvaluator(["pedestrian", "vehicle", "micromobility"], height=360, width=640)
    >>> evaluator.add_sequence("val_night_0001", gt_boxes, pred_boxes)  # structured arrays, one call per sequence
    >>> result = evaluator.evaluate(groups={"road users": [0, 2]})
    >>> result["AP"], result["AP_all"], result["per_class"]["vehicle"]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from yolo_etram.data.io import BBOX_DTYPE
from yolo_etram.utils.files import save_npy_atomic

from .coco import BACKENDS, STAT_KEYS, CocoBackend, average_precision, coco_datasets, pr_curves, summary
from .plots import plot_pr_curves

__all__ = [
    "BACKENDS",
    "as_eval_boxes",
    "AP_KEYS",
    "PROPHESEE_COLUMNS",
    "etram_columns",
    "etram_values",
    "PropheseeEvaluator",
    "evaluate_folder",
    "filter_eval_boxes",
    "filter_mask",
    "match_times",
    "plot_pr_curves",
    "save_sequence_npy",
    "to_eval_boxes",
    "BBOX_DTYPE",
    "EVAL_BBOX_DTYPE",
]

EVAL_BBOX_DTYPE = np.dtype(
    {
        "names": ["t", "x", "y", "w", "h", "class_id", "track_id", "class_confidence"],
        "formats": ["<i8", "<f4", "<f4", "<f4", "<f4", "<u4", "<u4", "<f4"],
        "offsets": [0, 8, 12, 16, 20, 24, 28, 32],
        "itemsize": 40,
    }
)
"""RVT's evaluation dtype (``BBOX_DTYPE`` of its Prophesee evaluator): ``(x, y)`` top-left, evaluation-space pixels."""
AP_KEYS = STAT_KEYS[:6]
"""The keys RVT returns and logs as ``val/AP`` and so on: ``COCOeval.stats[0:6]``."""
PROPHESEE_COLUMNS = tuple(f"prophesee/{k}" for k in (*AP_KEYS, "AP_all"))
"""The validator's Prophesee metrics as Ultralytics results columns (``results.csv``, fitness): COCO AP at IoU
0.5:0.95 (``AP``, ``AP_all`` class-agnostic) and at 0.5 / 0.75, as RVT logs them."""


def etram_columns(classes: Sequence[str]) -> tuple[str, ...]:
    """The eTraM paper's table as results columns: class-agnostic AP at IoU 0.5 (its "All") and each class's AP at
    IoU 0.5 (its per-class columns): ``etram/AP50_all``, ``etram/AP50_<class>``."""
    return ("etram/AP50_all", *(f"etram/AP50_{_column_name(c)}" for c in classes))


def etram_values(result: dict[str, Any], classes: Sequence[str]) -> dict[str, float]:
    """:func:`etram_columns` filled from an :meth:`PropheseeEvaluator.evaluate` result (0 where it has nothing)."""
    per_class = result.get("per_class_AP50") or {}
    values = [result.get("agnostic", {}).get("AP_50", 0.0), *(per_class.get(c, 0.0) for c in classes)]
    return {k: float(v) for k, v in zip(etram_columns(classes), values)}


def _column_name(name: str) -> str:
    """A class name as a CSV-safe column suffix (no separators or spaces)."""
    return "_".join(str(name).replace(",", " ").split())


_REQUIRED_FIELDS = ("t", "x", "y", "w", "h", "class_id")
_LEGACY_FIELDS = {"ts": "t", "confidence": "class_confidence"}  # old Prophesee/iMerit names (RVT's reformat_boxes)


# ---------------------------------------------------------------------------------------------------------------------
# Box arrays
# ---------------------------------------------------------------------------------------------------------------------


def as_eval_boxes(boxes: np.ndarray | None) -> np.ndarray:
    """Return ``boxes`` (``EVAL_BBOX_DTYPE``, ``BBOX_DTYPE`` or any structured array with the same field names) as an
    ``EVAL_BBOX_DTYPE`` array; coordinates become float32, as RVT's loader makes them. Missing ``track_id`` and
    ``class_confidence`` become 0. ``None`` gives an empty array."""
    if boxes is None:
        return np.zeros(0, EVAL_BBOX_DTYPE)
    boxes = np.asarray(boxes)
    if boxes.dtype == EVAL_BBOX_DTYPE:
        return boxes.reshape(-1)
    names = boxes.dtype.names
    if names is None:
        raise TypeError(f"expected a structured box array with fields {_REQUIRED_FIELDS}, got dtype {boxes.dtype}")
    renamed = {_LEGACY_FIELDS.get(n, n): n for n in names}
    missing = [f for f in _REQUIRED_FIELDS if f not in renamed]
    if missing:
        raise ValueError(f"box array lacks fields {missing}; it has {list(names)}")
    boxes = boxes.reshape(-1)
    out = np.zeros(len(boxes), EVAL_BBOX_DTYPE)
    for name in EVAL_BBOX_DTYPE.names:
        if name in renamed:
            out[name] = boxes[renamed[name]]
    return out


def to_eval_boxes(xyxy: np.ndarray, scores: np.ndarray | None, classes: np.ndarray, t: int | np.ndarray) -> np.ndarray:
    """Build an ``EVAL_BBOX_DTYPE`` array from ``(N, 4)`` corner boxes, as RVT's ``to_prophesee`` does.

    Width and height are computed in float32 (``x2 - x1``), like RVT does on its float32 predictions, so that boxes
    at the filter thresholds are treated identically. ``scores`` (the class confidence, 1 for ground truth when
    ``None``) go to ``class_confidence``; ``t`` (µs) is a scalar (the frame's label time) or one value per box.
    """
    xyxy = np.asarray(xyxy, dtype=np.float32).reshape(-1, 4)
    out = np.zeros(len(xyxy), EVAL_BBOX_DTYPE)
    out["t"] = np.broadcast_to(np.asarray(t, dtype=np.int64), len(xyxy))
    out["x"], out["y"] = xyxy[:, 0], xyxy[:, 1]
    out["w"], out["h"] = xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1]
    out["class_id"] = np.asarray(classes).reshape(-1)
    out["class_confidence"] = 1.0 if scores is None else np.asarray(scores, dtype=np.float32).reshape(-1)
    return out


def filter_mask(
    boxes: np.ndarray, skip_ts_us: int = 500_000, min_box_diag: float = 30, min_box_side: float = 10
) -> np.ndarray:
    """Boolean mask of the boxes the Prophesee protocol keeps (RVT's ``filter_boxes``).

    Kept: ``t > skip_ts_us`` (strictly: boxes at exactly 0.5 s are dropped) and ``w² + h² >= min_box_diag²`` and
    ``w >= min_box_side`` and ``h >= min_box_side``. The squares are taken in float32, as RVT does on its float32
    fields, so boxes at a threshold fall on the same side as in RVT.
    """
    w = np.asarray(boxes["w"], dtype=np.float32)
    h = np.asarray(boxes["h"], dtype=np.float32)
    t = np.asarray(boxes["t"]).astype(np.int64)
    return (t > skip_ts_us) & (w * w + h * h >= np.float32(min_box_diag**2)) & (w >= min_box_side) & (h >= min_box_side)


def filter_eval_boxes(
    boxes: np.ndarray, skip_ts_us: int = 500_000, min_box_diag: float = 30, min_box_side: float = 10
) -> np.ndarray:
    """The boxes the Prophesee protocol keeps, in their original order; see :func:`filter_mask`.

    The defaults are gen4/eTraM's thresholds in half-resolution pixels (60 and 20 at full resolution, halved).
    """
    return boxes[filter_mask(boxes, skip_ts_us, min_box_diag, min_box_side)]


def match_times(
    gt_t: np.ndarray, pred_t: np.ndarray, time_tol_us: int = 50_000
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Group one sequence's boxes into frames ("COCO images") as RVT's ``_match_times`` does, vectorised.

    Each unique ground-truth time ``ts`` is a frame; it holds the ground truth with ``t == ts`` and the predictions with
    ``ts - time_tol_us <= t <= ts + time_tol_us``. RVT walks both sorted arrays with monotone pointers, which is exactly
    ``searchsorted(left)`` / ``searchsorted(right)``: windows may overlap, so a prediction near two frames is copied
    into both, and a prediction near none is dropped.

    Args:
        gt_t: ground-truth times, sorted ascending.
        pred_t: prediction times, sorted ascending.
        time_tol_us: half width of the prediction window.

    Returns:
        (frame_ts, gt_frame, pred_index, pred_frame): the frame times; the frame of each ground-truth box; the indices
        into ``pred_t`` of the predictions in the frames, frame by frame (repeats possible); and their frame.
    """
    gt_t = np.asarray(gt_t).astype(np.int64)
    pred_t = np.asarray(pred_t).astype(np.int64)
    frame_ts, gt_frame = np.unique(gt_t, return_inverse=True)
    lo = np.searchsorted(pred_t, frame_ts - time_tol_us, side="left")
    hi = np.searchsorted(pred_t, frame_ts + time_tol_us, side="right")
    counts = hi - lo
    pred_frame = np.repeat(np.arange(len(frame_ts)), counts)
    first_slot = np.cumsum(counts) - counts  # where each frame's predictions start in the output
    pred_index = np.arange(counts.sum()) + np.repeat(lo - first_slot, counts)
    return frame_ts, gt_frame.reshape(-1), pred_index, pred_frame


def _iou_xywh(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix ``(len(a), len(b))`` of boxes with ``x, y, w, h`` fields."""
    ax0, ay0 = a["x"][:, None].astype(np.float64), a["y"][:, None].astype(np.float64)
    ax1, ay1 = ax0 + a["w"][:, None], ay0 + a["h"][:, None]
    bx0, by0 = b["x"][None].astype(np.float64), b["y"][None].astype(np.float64)
    bx1, by1 = bx0 + b["w"][None], by0 + b["h"][None]
    inter = np.clip(np.minimum(ax1, bx1) - np.maximum(ax0, bx0), 0, None) * np.clip(
        np.minimum(ay1, by1) - np.maximum(ay0, by0), 0, None
    )
    union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def detections_of(
    objects: np.ndarray, object_image: np.ndarray, pred: np.ndarray, pred_image: np.ndarray, min_iou: float = 0.5
) -> np.ndarray:
    """Which predictions are detections of ``objects``: on the same image, IoU >= ``min_iou`` with one of them (any
    class: a misclassified detection of a left-out object is no false positive of the subset either).

    Used to score a ground-truth subset on its own: the objects left out and their detections go together. Unlike
    COCO's crowd regions, a detection of a left-out object stays out at every IoU threshold, so the subset's AP does
    not depend on how well the left-out objects are localised."""
    out = np.zeros(len(pred), bool)
    if not len(pred) or not len(objects):
        return out
    og = np.argsort(object_image, kind="stable")
    pg = np.argsort(pred_image, kind="stable")
    images = np.unique(pred_image)
    o_lo, o_hi = np.searchsorted(object_image[og], images), np.searchsorted(object_image[og], images, side="right")
    p_lo, p_hi = np.searchsorted(pred_image[pg], images), np.searchsorted(pred_image[pg], images, side="right")
    for a, b, c, d in zip(o_lo, o_hi, p_lo, p_hi):
        if a < b:
            pi = pg[c:d]
            out[pi] = _iou_xywh(pred[pi], objects[og[a:b]]).max(1) >= min_iou
    return out


def _sorted_by_time(boxes: np.ndarray) -> np.ndarray:
    """RVT asserts time-sorted input; we sort (stably, so sorted input is untouched and tie order is kept)."""
    t = boxes["t"]
    if len(t) > 1 and np.any(t[1:] < t[:-1]):
        return boxes[np.argsort(t, kind="stable")]
    return boxes


# ---------------------------------------------------------------------------------------------------------------------
# Evaluator
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class _Entry:
    """One added sequence, already filtered and time-matched: frame-local image indices."""

    name: str
    n_images: int
    gt: np.ndarray
    gt_image: np.ndarray
    pred: np.ndarray
    pred_image: np.ndarray
    n_gt: int
    n_gt_after_filter: int
    n_pred: int
    n_pred_after_filter: int
    gt_subsets: dict = field(default_factory=dict)


class PropheseeEvaluator:
    """Prophesee-protocol detection metrics (RVT's ``PropheseeEvaluator`` + ``evaluate_list``), with the eTraM fork's
    class-agnostic and per-class numbers and per-group AP.

    Each :meth:`add_sequence` call is one entry of RVT's buffer: boxes are filtered, then matched by time within that
    entry only. Calling it once per recording reproduces the Prophesee toolbox / RVT run on whole-sequence files.
    RVT's training-time validation buffers one entry per labeled frame, with predictions stamped at that frame's label
    time; the same images (up to the order of exactly tied scores) come from whole sequences with ``time_tol_us=0``,
    which also keeps 30 Hz label frames (33 ms apart, closer than 50 ms) from seeing each other's predictions.

    ``height``/``width`` only fill the COCO image records, like RVT's padded input size: bbox evaluation never reads
    them, so they do not change any number. Area ranges (small < 32², large > 96²) apply to the boxes as given, i.e.
    half-resolution pixels for gen4/eTraM.

    Args:
        classes: class names; ``class_id`` i is COCO category i + 1.
        height: image height written to the COCO records.
        width: image width written to the COCO records.
        skip_ts_us: boxes at ``t <= skip_ts_us`` are ignored.
        min_box_diag: boxes with a smaller diagonal are ignored.
        min_box_side: boxes with a smaller width or height are ignored.
        time_tol_us: predictions within this many µs of a labeled time belong to that frame.
        backend: ``'faster_coco_eval'`` (C++, fast) or ``'pycocotools'`` (the reference); they give the same numbers.

    Example:
        >>> evaluator = PropheseeEvaluator(["pedestrian", "two-wheeler", "car"], height=360, width=640)
        >>> for name in sequences:
        ...     evaluator.add_sequence(name, np.load(f"gt/{name}.npy"), np.load(f"pred/{name}.npy"))
        >>> result = evaluator.evaluate()
        >>> print(f"AP {result['AP']:.4f}  class-agnostic AP {result['AP_all']:.4f}")
    """

    def __init__(
        self,
        classes: Sequence[str],
        height: int,
        width: int,
        skip_ts_us: int = 500_000,
        min_box_diag: float = 30,
        min_box_side: float = 10,
        time_tol_us: int = 50_000,
        backend: str = "faster_coco_eval",
    ):
        if backend not in BACKENDS:
            raise ValueError(f"unknown COCO backend {backend!r}; choose one of {BACKENDS}")
        if not classes:
            raise ValueError("classes must name at least one class")
        self.classes = list(classes)
        self.height, self.width = int(height), int(width)
        self.skip_ts_us, self.time_tol_us = int(skip_ts_us), int(time_tol_us)
        self.min_box_diag, self.min_box_side = min_box_diag, min_box_side
        self.backend = backend
        self.entries: list[_Entry] = []

    def reset(self) -> None:
        """Forget all added sequences."""
        self.entries.clear()

    def add_sequence(
        self, name: str, gt: np.ndarray | None, pred: np.ndarray | None, gt_subsets: dict[str, np.ndarray] | None = None
    ) -> None:
        """Add one recording's ground truth and predictions (``EVAL_BBOX_DTYPE``, ``BBOX_DTYPE`` or same-named fields;
        time-sorted or not), in evaluation-space pixels, with the score in ``class_confidence``.

        ``gt_subsets`` (name -> bool mask over ``gt``'s rows, e.g. moving / stationary objects) adds, in
        :meth:`evaluate`, the AP of each subset scored on its own: on the same frames, the other ground truth is left
        out and so are the detections of it (see :func:`detections_of`), so it is neither missed nor a source of false
        positives. A subset counts only if every added sequence defines it."""
        gt, pred = as_eval_boxes(gt), as_eval_boxes(pred)
        subsets = {k: np.asarray(v, bool).reshape(-1) for k, v in (gt_subsets or {}).items()}
        for k, v in subsets.items():
            if len(v) != len(gt):
                raise ValueError(f"{name}: subset {k!r} has {len(v)} entries for {len(gt)} ground-truth boxes")
        for kind, boxes in (("ground truth", gt), ("predictions", pred)):
            if len(boxes) and int(boxes["class_id"].max()) >= len(self.classes):
                raise ValueError(
                    f"{name}: {kind} hold class_id {int(boxes['class_id'].max())}, "
                    f"but only {len(self.classes)} classes are defined ({self.classes})"
                )
        n_gt, n_pred = len(gt), len(pred)
        keep = filter_mask(gt, self.skip_ts_us, self.min_box_diag, self.min_box_side)
        order = np.argsort(gt["t"][keep], kind="stable")  # what _sorted_by_time does, applied to the masks too
        subsets = {k: v[keep][order] for k, v in subsets.items()}
        gt = _sorted_by_time(gt[keep])
        pred = _sorted_by_time(filter_eval_boxes(pred, self.skip_ts_us, self.min_box_diag, self.min_box_side))
        frame_ts, gt_image, pred_index, pred_image = match_times(gt["t"], pred["t"], self.time_tol_us)
        self.entries.append(
            _Entry(
                name=name,
                n_images=len(frame_ts),
                gt=gt,
                gt_image=gt_image,
                pred=pred[pred_index],
                pred_image=pred_image,
                n_gt=n_gt,
                n_gt_after_filter=len(gt),
                n_pred=n_pred,
                n_pred_after_filter=len(pred),
                gt_subsets=subsets,
            )
        )

    def counts(self) -> dict[str, int]:
        """Box and image counts: raw, after the filters, and in the COCO images (predictions counted per image)."""
        total = lambda field: int(sum(getattr(e, field) for e in self.entries))  # noqa: E731
        return {
            "n_sequences": len(self.entries),
            "n_gt": total("n_gt"),
            "n_gt_after_filter": total("n_gt_after_filter"),
            "n_pred": total("n_pred"),
            "n_pred_after_filter": total("n_pred_after_filter"),
            "n_pred_in_images": int(sum(len(e.pred) for e in self.entries)),
            "n_images": total("n_images"),
        }

    def _gather(self) -> tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """All entries' boxes with global 0-based image indices, entries in the order they were added."""
        offsets = np.cumsum([0] + [e.n_images for e in self.entries])
        cat = lambda arrays, dtype: np.concatenate(arrays) if arrays else np.zeros(0, dtype)  # noqa: E731
        gt = cat([e.gt for e in self.entries], EVAL_BBOX_DTYPE)
        pred = cat([e.pred for e in self.entries], EVAL_BBOX_DTYPE)
        gt_image = cat([e.gt_image + o for e, o in zip(self.entries, offsets)], np.int64)
        pred_image = cat([e.pred_image + o for e, o in zip(self.entries, offsets)], np.int64)
        return int(offsets[-1]), gt, gt_image, pred, pred_image

    def evaluate(
        self,
        class_agnostic: bool = True,
        per_class: bool = True,
        groups: dict[str, Sequence[int]] | None = None,
        curves: bool = False,
        subsets: bool = True,
    ) -> dict[str, Any]:
        """Score everything added so far.

        Args:
            class_agnostic: also run COCO with ``useCats=0`` (the eTraM fork's returned "overall", the paper's "All").
            per_class: add each class's AP (the eTraM fork's per-class ``params.catIds=[i]`` runs).
            groups: name -> class indices; adds the AP over those classes only (``params.catIds`` = the group).
            curves: add ``'curves'``, the precision-recall arrays :func:`plot_pr_curves` draws.
            subsets: add ``'subsets'`` {name: {AP, AP_50, ..., AP_all, n_gt}} for the ground-truth subsets every
                sequence defines (see :meth:`add_sequence`).

        Returns:
            ``AP, AP_50, AP_75, AP_S, AP_M, AP_L`` (RVT's numbers: class-aware COCO) and ``AR_1, AR_10, AR_100``;
            ``AP_all`` and ``agnostic`` (the same nine class-agnostic stats) when ``class_agnostic``; ``per_class``
            {name: AP} and ``per_class_AP50`` {name: AP at IoU 0.5} (the eTraM table's per-class columns; NaN for a
            class without ground truth) when ``per_class``; ``groups`` {name: AP}; the counts of
            :meth:`counts`. As in pycocotools an AP with nothing to average over (e.g. no small boxes) is -1. Like RVT,
            everything is 0 when no prediction falls into a COCO image.

        Per-class and group APs are computed on the same frames as ``AP`` (frames are defined by every class's ground
        truth), so a class's false positives on a frame holding only other classes count against it; evaluating a
        dataset cut down to those classes would drop such frames and give a higher number.
        """
        groups = {name: [int(i) for i in members] for name, members in (groups or {}).items()}
        for name, members in groups.items():
            if not members or min(members) < 0 or max(members) >= len(self.classes):
                raise ValueError(f"group {name!r} must list class indices in [0, {len(self.classes)}), got {members}")

        n_images, gt, gt_image, pred, pred_image = self._gather()
        result: dict[str, Any] = dict.fromkeys(STAT_KEYS, 0.0)
        if class_agnostic:
            result["AP_all"] = 0.0
            result["agnostic"] = dict.fromkeys(STAT_KEYS, 0.0)
        if per_class:
            result["per_class"] = dict.fromkeys(self.classes, 0.0)
            result["per_class_AP50"] = dict.fromkeys(self.classes, 0.0)
        if groups:
            result["groups"] = dict.fromkeys(groups, 0.0)
        subset_names = self._subset_names() if subsets else []
        if subset_names:
            result["subsets"] = {k: {**dict.fromkeys(STAT_KEYS, 0.0), "AP_all": 0.0, "n_gt": 0} for k in subset_names}
        result.update(self.counts())

        if len(pred) == 0:  # RVT: "no detections for evaluation found", all metrics 0
            if curves:
                result["curves"] = self._empty_curves(class_agnostic)
            return result

        gt_dataset, pred_dataset = coco_datasets(
            self.classes, self.height, self.width, n_images, gt, gt_image, pred, pred_image
        )
        backend = CocoBackend(self.backend, gt_dataset, pred_dataset)
        aware = backend.run(use_cats=True)
        result.update(summary(aware))
        if per_class:
            result["per_class"] = {
                name: _nan_if_missing(average_precision(aware, cat_index=[k])) for k, name in enumerate(self.classes)
            }
            result["per_class_AP50"] = {
                name: _nan_if_missing(average_precision(aware, cat_index=[k], iou=0.5))
                for k, name in enumerate(self.classes)
            }
        if groups:
            result["groups"] = {name: average_precision(aware, cat_index=sorted(m)) for name, m in groups.items()}
        if class_agnostic:
            agnostic = backend.run(use_cats=False)
            result["agnostic"] = summary(agnostic)
            result["AP_all"] = result["agnostic"]["AP"]
        for name in subset_names:
            member = np.concatenate([e.gt_subsets[name] for e in self.entries])
            keep = ~detections_of(gt[~member], gt_image[~member], pred, pred_image)
            sub = CocoBackend(
                self.backend,
                *coco_datasets(
                    self.classes,
                    self.height,
                    self.width,
                    n_images,
                    gt[member],
                    gt_image[member],
                    pred[keep],
                    pred_image[keep],
                ),
            )
            result["subsets"][name] = {
                **summary(sub.run(use_cats=True)),
                "AP_all": summary(sub.run(False))["AP"],
                "n_gt": int(member.sum()),
            }
        if curves:
            result["curves"] = {"classes": list(self.classes), **pr_curves(aware)}
            if class_agnostic:
                result["curves"]["precision_agnostic"] = pr_curves(agnostic)["precision"][:, :, 0]
        return result

    def _subset_names(self) -> list[str]:
        """The ground-truth subsets every added sequence defines, in the first sequence's order."""
        if not self.entries:
            return []
        return [k for k in self.entries[0].gt_subsets if all(k in e.gt_subsets for e in self.entries)]

    def _empty_curves(self, class_agnostic: bool) -> dict[str, Any]:
        """All-zero curves in the default COCO shapes, for the no-detection case."""
        iou_thresholds = np.linspace(0.5, 0.95, 10)
        recall = np.linspace(0.0, 1.0, 101)
        zeros = np.zeros((len(iou_thresholds), len(recall), len(self.classes)))
        out = {"classes": list(self.classes), "iou_thresholds": iou_thresholds, "recall": recall}
        out.update(precision=zeros, scores=zeros.copy())
        if class_agnostic:
            out["precision_agnostic"] = zeros[:, :, 0].copy()
        return out


def _nan_if_missing(ap: float) -> float:
    """COCO's -1 ("no ground truth of this class") as NaN, so it cannot be mistaken for an AP."""
    return float("nan") if ap == -1 else ap


# ---------------------------------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------------------------------


def save_sequence_npy(folder: str | Path, name: str, gt: np.ndarray, pred: np.ndarray) -> tuple[Path, Path]:
    """Write ``<folder>/<name>_gt.npy`` and ``<folder>/<name>_pred.npy`` in ``EVAL_BBOX_DTYPE`` (atomically), for
    :func:`evaluate_folder` or RVT-style tools. Returns the two paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = folder / f"{name}_gt.npy", folder / f"{name}_pred.npy"
    for path, boxes in zip(paths, (gt, pred)):
        save_npy_atomic(path, as_eval_boxes(boxes))
    return paths


def _find_sequences(folder: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """Ground-truth and prediction files by sequence name, in either layout: ``<name>_gt.npy`` + ``<name>_pred.npy``,
    or ``gt/<name>.npy`` + ``pred/<name>.npy``."""
    gt = {p.name[: -len("_gt.npy")]: p for p in folder.glob("*_gt.npy")}
    pred = {p.name[: -len("_pred.npy")]: p for p in folder.glob("*_pred.npy")}
    if (folder / "gt").is_dir():
        gt.update({p.stem: p for p in (folder / "gt").glob("*.npy")})
        pred.update({p.stem: p for p in (folder / "pred").glob("*.npy")} if (folder / "pred").is_dir() else {})
    return dict(sorted(gt.items())), dict(sorted(pred.items()))


def evaluate_folder(
    folder: str | Path,
    classes: Sequence[str] | None = None,
    height: int | None = None,
    width: int | None = None,
    skip_ts_us: int = 500_000,
    min_box_diag: float = 30,
    min_box_side: float = 10,
    time_tol_us: int = 50_000,
    backend: str = "faster_coco_eval",
    **evaluate_kwargs: Any,
) -> dict[str, Any]:
    """Score saved sequences (see :func:`save_sequence_npy`, or ``gt/<name>.npy`` + ``pred/<name>.npy``), one
    :meth:`PropheseeEvaluator.add_sequence` per sequence, in name order.

    ``classes`` defaults to ``'0'..'N-1'`` for the largest class id found; ``height``/``width`` (which change no number)
    default to the extent of the ground truth. A sequence without a prediction file counts as having no predictions.
    The result also lists ``sequences``, ``missing_predictions`` and ``unused_prediction_files``.
    """
    folder = Path(folder)
    gt_files, pred_files = _find_sequences(folder)
    if not gt_files:
        raise FileNotFoundError(f"{folder}: no ground truth found (<name>_gt.npy or gt/<name>.npy)")
    data = {
        name: (as_eval_boxes(np.load(path)), as_eval_boxes(np.load(pred_files[name]) if name in pred_files else None))
        for name, path in gt_files.items()
    }
    if classes is None:
        max_id = max((int(b["class_id"].max()) for pair in data.values() for b in pair if len(b)), default=0)
        classes = [str(i) for i in range(max_id + 1)]
    if height is None or width is None:
        boxes = np.concatenate([gt for gt, _ in data.values()])
        height = height if height is not None else int(np.ceil((boxes["y"] + boxes["h"]).max(initial=0)))
        width = width if width is not None else int(np.ceil((boxes["x"] + boxes["w"]).max(initial=0)))

    evaluator = PropheseeEvaluator(
        classes, height, width, skip_ts_us, min_box_diag, min_box_side, time_tol_us, backend=backend
    )
    for name, (gt, pred) in data.items():
        evaluator.add_sequence(name, gt, pred)
    result = evaluator.evaluate(**evaluate_kwargs)
    result["sequences"] = list(data)
    result["missing_predictions"] = [name for name in data if name not in pred_files]
    result["unused_prediction_files"] = [str(p) for name, p in pred_files.items() if name not in data]
    return result
