"""``rvt_eval=True``: validate as RVT's ``validation.py`` does.

RVT's evaluation (``RVT:models/detection/yolox_extension/models/detector.py`` and ``utils/boxes.py``) keeps a box
when ``obj * max(cls)`` reaches ``conf_thre`` 0.001, runs class-aware NMS at IoU 0.45 ranked by that product, keeps
every box (no ``max_det`` cap) and reports ``class_conf`` as the score (``to_prophesee``; rvt_spec 10.5). The preset
sets ``conf=0.001``, ``iou=0.45`` and lifts ``max_det``; the Prophesee protocol already filters predictions and
ground truth by the data YAML's ``eval`` settings (RVT's box filter: the first 0.5 s skipped, minimum diagonal and
side).

On RVT's YOLOX head the stock NMS would rank a ``score: cls`` head (``import-rvt --score cls``, RVT's COCO score)
by ``cls``; the preset runs RVT's own postprocess on the raw head outputs instead (:func:`rvt_detections`), ranking
by ``obj * cls`` and reporting the head's score, so an imported RVT checkpoint gives RVT's boxes. An export has no
raw outputs: a ``score: cls`` export is refused in one line (its NMS could not rank as RVT's); an ``obj_cls`` one is
RVT's already (tested box for box). Other heads get the thresholds.

Example:
    >>> EventYOLO("rvt_t_imported.pt").val(data="gen4.yaml", rvt_eval=True)   # yolo val ... rvt_eval=True
"""

from __future__ import annotations

import torch
from ultralytics.utils import LOGGER

from yolo_etram.nn.yolox_head import YOLOXDetect, rvt_postprocess
from yolo_etram.utils.errors import UnsupportedOptionError

CONF, IOU = 0.001, 0.45
NO_CAP = 1_000_000
"""``max_det`` under the preset: more than any head has anchors (RVT caps nothing)."""


def apply_preset(args) -> None:
    """Set RVT's thresholds on validation arguments (``conf``, ``iou``, ``max_det``) and say so in one line (once: a
    training run validates with the same arguments every epoch)."""
    if (args.conf, args.iou, args.max_det) == (CONF, IOU, NO_CAP):
        return
    args.conf, args.iou, args.max_det = CONF, IOU, NO_CAP
    LOGGER.info(f"rvt_eval: RVT's evaluation: conf {CONF} on obj*cls, class-aware NMS IoU {IOU}, no max_det cap")


def yolox_head(model) -> YOLOXDetect | None:
    """The YOLOX head of a PyTorch event model, if it has one."""
    head = model.model[-1] if model is not None else None
    return head if isinstance(head, YOLOXDetect) else None


def check_export(metadata: dict | None, name) -> None:
    """Refuse ``rvt_eval`` on an export of a ``score: cls`` YOLOX head (its NMS cannot rank by ``obj * cls``)."""
    score = str((metadata or {}).get("yolox_score", ""))
    if score == "cls":
        raise UnsupportedOptionError(
            f"{name}: rvt_eval needs the raw head outputs to rank by obj*cls, which a score=cls export lacks;"
            " validate the .pt, or export with score obj_cls (RVT's NMS ranking and score)"
        )


def rvt_detections(head: YOLOXDetect, raw: dict, conf: float = CONF, iou: float = IOU) -> list[dict]:
    """RVT's postprocess on ``raw`` head outputs, as Ultralytics' per-image detections (``bboxes`` xyxy input pixels,
    ``conf``: the head's score, ``sigmoid(cls)`` for ``score: cls`` else ``obj * cls``; ``cls``; empty ``extra``)."""
    out = []
    for det in rvt_postprocess(head.decode_rvt(raw), conf_thre=conf, nms_thre=iou):
        if det is None:
            det = raw["scores"].new_zeros(0, 7)
        score = det[:, 5] if head.score == "cls" else det[:, 4] * det[:, 5]
        out.append({"bboxes": det[:, :4], "conf": score, "cls": det[:, 6], "extra": det.new_zeros(len(det), 0)})
    return out


def split_raw(preds) -> tuple[torch.Tensor, dict | None]:
    """``(y, raw)`` of a YOLOX head's eval output, ``(y, None)`` of anything else."""
    if isinstance(preds, (tuple, list)) and len(preds) == 2 and isinstance(preds[1], dict) and "obj" in preds[1]:
        return preds[0], preds[1]
    return (preds[0] if isinstance(preds, (tuple, list)) else preds), None
