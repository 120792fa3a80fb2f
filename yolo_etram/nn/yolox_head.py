"""RVT's YOLOX head as an Ultralytics head: ``YOLOXDetect``, usable in model YAMLs, and RVT's postprocess.

The head is RVT's ``YOLOXHead`` (``RVT:models/detection/yolox/models/yolo_head.py``), with RVT's module names so RVT
checkpoints load by prefix: per level ``stems`` (1x1 Conv), decoupled ``cls_convs`` and ``reg_convs`` (2x 3x3 Conv
each), and 1x1 ``cls_preds`` (nc), ``reg_preds`` (4) and ``obj_preds`` (1, on the reg branch). Boxes decode without
YOLOv8's +0.5 cell offset: ``cx, cy = (p + grid) * s``, ``w, h = exp(p) * s``.

In eval mode it returns Ultralytics' Detect format ``(B, 4 + nc, anchors)`` (``cx, cy, w, h`` in input pixels, then
one score column per class), so the stock NMS, validator, predictor and exporter use it unchanged. The scores are
RVT's (one class per box, the argmax of sigmoid(cls)), and ``score`` chooses what the column holds:

- ``"obj_cls"`` (default): ``sigmoid(obj) * sigmoid(cls)``, which RVT thresholds and NMSes on. Thresholding, NMS and
  ranking all use it, so Ultralytics' NMS returns exactly RVT's postprocess boxes (class-aware, IoU 0.45).
- ``"cls"``: ``sigmoid(cls)``, RVT's COCO score (``to_prophesee`` keeps ``class_conf``; rvt_spec 10.5), on the boxes
  whose ``obj * cls`` reaches ``gate`` (RVT's ``conf_thre``: 0.001 in its evaluation command, 0.1 during training).
  NMS then ranks by ``cls`` instead of ``obj * cls``, the one step that differs from RVT.

Registering: ``parse_model`` gives Detect-like heads their input channels through an identity test
(``m in frozenset({Detect, ...})``), which a subclass does not pass; the metaclass (:func:`parsed_as`) makes the class
compare equal to ``Detect`` there, so the YAML row is parsed like a ``Detect`` row (args ``[nc, hidden, score]`` +
channels).

Usage:
    >>> head = YOLOXDetect(nc=3, ch=(64, 128, 256))  # hidden = 256 * ch[-1] / 1024 = 64, as RVT
    >>> # YAML: - [[12, 15, 18], 1, YOLOXDetect, [nc, 64, obj_cls]]
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from ultralytics.nn.modules import Conv, Detect
from ultralytics.utils.tal import make_anchors

from yolo_etram.nn.blocks.parsed_as import parsed_as

__all__ = ["YOLOXDetect", "decode_boxes", "rvt_postprocess", "SCORES"]

SCORES = ("obj_cls", "cls")


def decode_boxes(raw: torch.Tensor, anchors: torch.Tensor, strides: torch.Tensor) -> torch.Tensor:
    """RVT's YOLOX decoding of ``raw (B, 4, A)`` with grid ``anchors (2, A)`` (no +0.5) and ``strides (1, A)``:
    ``(B, 4, A)`` ``cx, cy, w, h`` in input pixels."""
    return torch.cat(((raw[:, :2] + anchors) * strides, raw[:, 2:4].exp() * strides), 1)


class YOLOXDetect(Detect, metaclass=parsed_as(Detect)):
    """RVT's decoupled YOLOX head (anchor-free, objectness) with Ultralytics' Detect interface.

    Args:
        nc: number of classes.
        hidden: branch width; 0/None gives RVT's ``int(256 * ch[-1] / 1024)`` (T 64, S 96, B 128).
        score: ``"obj_cls"`` or ``"cls"``, the eval-output score (see the module docstring).
        ch: input channels per level (parse_model appends ``reg_max, end2end, ch`` to the YAML args).

    Training mode returns ``{"boxes": (B, 4, A) raw reg, "obj": (B, 1, A) and "scores": (B, nc, A) logits, "feats"}``.

    Example:
        >>> head = YOLOXDetect(3, ch=(64, 128, 256)).eval()
        >>> head.stride = torch.tensor([8.0, 16.0, 32.0])
        >>> y, raw = head([torch.zeros(1, c, 64 // s, 64 // s) for c, s in ((64, 8), (128, 16), (256, 32))])
        >>> y.shape  # (1, 4 + 3, 64 + 16 + 4)
    """

    cv2 = ()  # no Detect branches: BaseModel.load() compares cv2 of source and target heads
    gate = 0.001  # "cls" score: RVT's conf_thre on obj * cls
    single_label = True  # RVT keeps one class per box (the argmax)
    loss_names = ("iou_loss", "obj_loss", "cls_loss")  # YOLOXLoss's, for trainers that need them before a step

    def __init__(self, nc: int = 80, *args, hidden: int | None = None, score: str = "obj_cls", ch=()):
        nn.Module.__init__(self)
        if args and isinstance(args[-1], (list, tuple)):  # from parse_model: [*yaml_args, reg_max, end2end, ch]
            *args, _reg_max, _end2end, ch = args
        if len(args) > 2:
            raise TypeError(f"YOLOXDetect YAML args are [nc, hidden, score], got extra {args[2:]}")
        hidden = (args[0] if args else hidden) or int(256 * ch[-1] / 1024)
        score = args[1] if len(args) > 1 else score
        if score not in SCORES:
            raise ValueError(f"YOLOXDetect score must be one of {SCORES}, got {score!r}")
        self.nc, self.nl, self.hidden, self.score = nc, len(ch), hidden, score
        self.reg_max, self.no = 1, nc + 5
        self.stride = torch.zeros(self.nl)
        self.stems = nn.ModuleList(Conv(c, hidden, 1) for c in ch)
        self.cls_convs = nn.ModuleList(nn.Sequential(Conv(hidden, hidden, 3), Conv(hidden, hidden, 3)) for _ in ch)
        self.reg_convs = nn.ModuleList(nn.Sequential(Conv(hidden, hidden, 3), Conv(hidden, hidden, 3)) for _ in ch)
        self.cls_preds = nn.ModuleList(nn.Conv2d(hidden, nc, 1) for _ in ch)
        self.reg_preds = nn.ModuleList(nn.Conv2d(hidden, 4, 1) for _ in ch)
        self.obj_preds = nn.ModuleList(nn.Conv2d(hidden, 1, 1) for _ in ch)

    def forward_head(self, x: list[torch.Tensor], **_) -> dict:
        """Raw per-anchor outputs of every level, flattened row-major and concatenated (RVT's anchor order)."""
        bs = x[0].shape[0]
        boxes, obj, cls = [], [], []
        for k in range(self.nl):
            stem = self.stems[k](x[k])
            reg = self.reg_convs[k](stem)
            cls.append(self.cls_preds[k](self.cls_convs[k](stem)).view(bs, self.nc, -1))
            boxes.append(self.reg_preds[k](reg).view(bs, 4, -1))
            obj.append(self.obj_preds[k](reg).view(bs, 1, -1))
        return {"boxes": torch.cat(boxes, 2), "obj": torch.cat(obj, 2), "scores": torch.cat(cls, 2), "feats": x}

    def forward(self, x: list[torch.Tensor]):
        preds = self.forward_head(x)
        if self.training:
            return preds
        y = self._inference(preds)
        return y if self.export else (y, preds)

    def _get_decode_boxes(self, x: dict) -> torch.Tensor:
        shape = x["feats"][0].shape
        if self.dynamic or self.shape != shape:
            self.anchors, self.strides = (a.transpose(0, 1) for a in make_anchors(x["feats"], self.stride, 0.0))
            self.shape = shape
        return decode_boxes(x["boxes"], self.anchors, self.strides)

    def _inference(self, x: dict) -> torch.Tensor:
        """Detect's eval format ``(B, 4 + nc, A)``: boxes (``cx, cy, w, h``, or ``xyxy`` for NMS exports), scores."""
        box = self._get_decode_boxes(x)
        if self.xyxy:
            box = torch.cat((box[:, :2] - box[:, 2:] / 2, box[:, :2] + box[:, 2:] / 2), 1)
        obj, cls = x["obj"].sigmoid(), x["scores"].sigmoid()
        conf = obj * cls
        keep = cls == cls.amax(1, keepdim=True) if self.single_label else torch.ones_like(cls, dtype=torch.bool)
        if self.score == "cls":
            keep = keep & (conf >= self.gate)
            conf = cls
        return torch.cat((box, conf * keep), 1)

    def decode_rvt(self, x: dict) -> torch.Tensor:
        """RVT's eval output ``(B, A, 5 + nc)``: ``cx, cy, w, h, sigmoid(obj), sigmoid(cls)...`` in input pixels."""
        return torch.cat((self._get_decode_boxes(x), x["obj"].sigmoid(), x["scores"].sigmoid()), 1).transpose(1, 2)

    def bias_init(self, prior_prob: float = 0.01) -> None:
        """RVT's ``initialize_biases``: cls and obj biases at -log((1 - p) / p) = -4.595."""
        b = -math.log((1 - prior_prob) / prior_prob)
        for conv in (*self.cls_preds, *self.obj_preds):
            nn.init.constant_(conv.bias, b)


def rvt_postprocess(
    pred: torch.Tensor, conf_thre: float = 0.1, nms_thre: float = 0.45, class_agnostic: bool = False
) -> list[torch.Tensor | None]:
    """RVT's ``postprocess`` (``RVT:models/detection/yolox/utils/boxes.py``) on ``(B, A, 5 + nc)`` decoded outputs.

    Keeps boxes whose ``obj * max(cls)`` reaches ``conf_thre``, then class-aware NMS by that score (no max-det cap).
    Returns per image ``(n, 7)`` rows ``x1, y1, x2, y2, obj, class_conf, class_pred`` (None where nothing is left).

    Example:
        >>> dets = rvt_postprocess(model.model[-1].decode_rvt(raw), conf_thre=0.001)
    """
    import torchvision

    box = torch.cat((pred[..., :2] - pred[..., 2:4] / 2, pred[..., :2] + pred[..., 2:4] / 2), -1)
    out = []
    for b, p in zip(box, pred):
        class_conf, class_pred = p[:, 5:].max(1, keepdim=True)
        keep = (p[:, 4] * class_conf.squeeze(1)) >= conf_thre
        det = torch.cat((b, p[:, 4:5], class_conf, class_pred.float()), 1)[keep]
        if not det.shape[0]:
            out.append(None)
            continue
        score = det[:, 4] * det[:, 5]
        i = (
            torchvision.ops.nms(det[:, :4], score, nms_thre)
            if class_agnostic
            else torchvision.ops.batched_nms(det[:, :4], score, det[:, 6], nms_thre)
        )
        out.append(det[i])
    return out
