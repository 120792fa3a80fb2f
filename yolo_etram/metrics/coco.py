"""COCO bbox evaluation as pycocotools computes it, on either backend (faster-coco-eval, fast; pycocotools, the
reference: they give the same numbers), from box arrays already grouped into images.

Usage:
    >>> gt, dt = coco_datasets(classes, height, width, n_images, gt, gt_image, pred, pred_image)
    >>> result = summary(CocoBackend("faster_coco_eval", gt, dt).run(use_cats=True))  # {"AP": ..., "AR_100": ...}
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

BACKENDS = ("faster_coco_eval", "pycocotools")
STAT_KEYS = ("AP", "AP_50", "AP_75", "AP_S", "AP_M", "AP_L", "AR_1", "AR_10", "AR_100")
"""``COCOeval.stats[0:9]`` under our names."""


@dataclass
class CocoEval:
    """What one COCOeval run leaves behind: ``precision`` (T, R, K, A, M), ``recall`` (T, K, A, M), ``scores`` like
    ``precision``, and the parameters that index them."""

    precision: np.ndarray
    recall: np.ndarray
    scores: np.ndarray
    iou_thresholds: np.ndarray
    recall_thresholds: np.ndarray
    area_labels: list[str]
    max_dets: list[int]
    cat_ids: list[int]


def coco_datasets(
    classes: Sequence[str],
    height: int,
    width: int,
    n_images: int,
    gt: np.ndarray,
    gt_image: np.ndarray,
    pred: np.ndarray,
    pred_image: np.ndarray,
) -> tuple[dict, dict]:
    """Ground-truth and detection COCO datasets, as RVT's ``_to_coco_format`` + ``loadRes`` make them.

    Image ids are 1-based frame numbers; annotation ids are 1-based and in frame order; areas are ``w * h`` in float32
    for both sides (RVT's ``float(w * h)`` for ground truth and ``loadRes``'s product of the float32 bbox entries for
    detections). Detections are built directly instead of through ``loadRes`` so that no polygon is made for each box.
    """
    categories = [{"id": i + 1, "name": name, "supercategory": "none"} for i, name in enumerate(classes)]
    images = [{"id": i, "height": height, "width": width} for i in range(1, n_images + 1)]

    def annotations(boxes: np.ndarray, image: np.ndarray, with_score: bool) -> list[dict]:
        xywh = np.stack([boxes["x"], boxes["y"], boxes["w"], boxes["h"]], axis=1).astype(np.float32)
        columns = [
            range(1, len(boxes) + 1),
            (image + 1).tolist(),
            (boxes["class_id"].astype(np.int64) + 1).tolist(),
            xywh.tolist(),
            (xywh[:, 2] * xywh[:, 3]).tolist(),
        ]
        if with_score:
            columns.append(boxes["class_confidence"].astype(np.float32).tolist())
            return [
                {"id": i, "image_id": im, "category_id": c, "bbox": b, "area": a, "iscrowd": 0, "score": s}
                for i, im, c, b, a, s in zip(*columns)
            ]
        return [
            {"id": i, "image_id": im, "category_id": c, "bbox": b, "area": a, "iscrowd": 0}
            for i, im, c, b, a in zip(*columns)
        ]

    gt_dataset = {"images": images, "annotations": annotations(gt, gt_image, False), "categories": categories}
    pred_dataset = {"images": images, "annotations": annotations(pred, pred_image, True), "categories": categories}
    return gt_dataset, pred_dataset


class CocoBackend:
    """One pair of COCO objects (ground truth, detections) and a way to run COCOeval on them."""

    def __init__(self, name: str, gt_dataset: dict, pred_dataset: dict):
        if name not in BACKENDS:
            raise ValueError(f"unknown COCO backend {name!r}; choose one of {BACKENDS}")
        self.name = name
        if name == "faster_coco_eval":
            from faster_coco_eval import COCO

            self.coco_gt = COCO(gt_dataset, print_function=_silent)
            self.coco_pred = COCO(pred_dataset, print_function=_silent)
        else:
            from pycocotools.coco import COCO

            self.coco_gt, self.coco_pred = COCO(), COCO()
            self.coco_gt.dataset, self.coco_pred.dataset = gt_dataset, pred_dataset
            with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress on stdout
                self.coco_gt.createIndex()
                self.coco_pred.createIndex()
        self.n_images = len(gt_dataset["images"])

    def run(self, use_cats: bool) -> CocoEval:
        """``COCOeval(gt, dt, 'bbox')`` with default parameters, all images, all categories; ``useCats`` as given."""
        if self.name == "faster_coco_eval":
            from faster_coco_eval import COCOeval_faster

            coco_eval = COCOeval_faster(self.coco_gt, self.coco_pred, iouType="bbox", print_function=_silent)
        else:
            from pycocotools.cocoeval import COCOeval

            coco_eval = COCOeval(self.coco_gt, self.coco_pred, "bbox")
        p = coco_eval.params
        p.imgIds = list(range(1, self.n_images + 1))
        p.catIds = sorted(self.coco_gt.getCatIds())
        p.useCats = int(use_cats)
        with contextlib.redirect_stdout(io.StringIO()):
            coco_eval.evaluate()
            coco_eval.accumulate()
        e, p = coco_eval.eval, coco_eval.params
        return CocoEval(
            precision=np.asarray(e["precision"], dtype=np.float64),
            recall=np.asarray(e["recall"], dtype=np.float64),
            scores=np.asarray(e["scores"], dtype=np.float64),
            iou_thresholds=np.asarray(p.iouThrs),
            recall_thresholds=np.asarray(p.recThrs),
            area_labels=list(p.areaRngLbl),
            max_dets=list(p.maxDets),
            cat_ids=list(p.catIds) if p.useCats else [-1],
        )


def _silent(*args: Any, **kwargs: Any) -> None:
    """A print function that prints nothing (faster-coco-eval takes one)."""


def _mean_valid(s: np.ndarray) -> float:
    """pycocotools' ``_summarize`` reduction: mean over the entries > -1, or -1 when there are none."""
    valid = s[s > -1]
    return float(np.mean(valid)) if len(valid) else -1.0


def average_precision(
    e: CocoEval,
    cat_index: Sequence[int] | None = None,
    iou: float | None = None,
    area: str = "all",
    max_dets: int = 100,
) -> float:
    """AP as pycocotools' ``summarize`` computes it, optionally restricted to some category indices.

    Restricting to ``cat_index`` gives bit for bit what a run with ``params.catIds`` set to those categories gives
    (categories are evaluated independently when ``useCats=1``, and the slice keeps pycocotools' element order).
    """
    s = e.precision if cat_index is None else e.precision[:, :, list(cat_index)]
    if iou is not None:
        s = s[np.where(iou == e.iou_thresholds)[0]]
    aind = [i for i, label in enumerate(e.area_labels) if label == area]
    mind = [i for i, m in enumerate(e.max_dets) if m == max_dets]
    return _mean_valid(s[:, :, :, aind, mind])


def average_recall(e: CocoEval, area: str = "all", max_dets: int = 100) -> float:
    """AR as pycocotools' ``summarize`` computes it."""
    aind = [i for i, label in enumerate(e.area_labels) if label == area]
    mind = [i for i, m in enumerate(e.max_dets) if m == max_dets]
    return _mean_valid(e.recall[:, :, aind, mind])


def summary(e: CocoEval) -> dict[str, float]:
    """``COCOeval.stats[0:9]`` under our key names (pycocotools' ``_summarizeDets`` formulas)."""
    m_lo, m_mid, m_hi = e.max_dets
    return {
        "AP": average_precision(e, max_dets=m_hi),
        "AP_50": average_precision(e, iou=0.5, max_dets=m_hi),
        "AP_75": average_precision(e, iou=0.75, max_dets=m_hi),
        "AP_S": average_precision(e, area="small", max_dets=m_hi),
        "AP_M": average_precision(e, area="medium", max_dets=m_hi),
        "AP_L": average_precision(e, area="large", max_dets=m_hi),
        "AR_1": average_recall(e, max_dets=m_lo),
        "AR_10": average_recall(e, max_dets=m_mid),
        "AR_100": average_recall(e, max_dets=m_hi),
    }


def pr_curves(e: CocoEval) -> dict[str, np.ndarray]:
    """Precision and score at each recall threshold, area 'all', the largest maxDets: (T, R, K) arrays."""
    a = e.area_labels.index("all")
    return {
        "iou_thresholds": e.iou_thresholds,
        "recall": e.recall_thresholds,
        "precision": e.precision[:, :, :, a, -1],
        "scores": e.scores[:, :, :, a, -1],
    }
