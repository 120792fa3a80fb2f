"""RVT's YOLOX training loss for :class:`~yolo_etram.nn.yolox_head.YOLOXDetect`, with v8DetectionLoss's interface.

RVT (``yolo_head.py#L291-606``, YOLOX >= 0.3): SimOTA assigns anchors to ground truth per image (candidates: anchor
centres ``(g + 0.5) * s`` within 1.5 strides of a GT centre; cost ``BCE(sqrt(σcls·σobj), onehot) + 3·(-log IoU)
+ 1e6·outside``; dynamic k = clamp(int(sum of the top-10 IoUs), 1); an anchor claimed twice keeps its cheapest GT).
Then, over the whole batch, each loss summed and divided by the number of positives:
``5 · (1 - IoU²)`` on positives, BCE objectness on every anchor (target: positive), BCE class on positives (target:
one-hot × IoU of the prediction with its GT). No L1 loss (RVT never switches it on).

With ``size_aware`` (``{a, tau}``, :mod:`yolo_etram.nn.size_aware_loss`) every ground-truth box weighs
``1 + a * exp(-area / tau)`` (times its size bucket's weight in v2), normalised to mean 1 over the batch's boxes,
and each positive anchor's IoU, objectness and class terms are multiplied by its box's weight (negative anchors keep
weight 1; the divisor stays the number of positives). A batch of equal-size boxes gives RVT's loss exactly.

With ``hard_negatives`` (:mod:`yolo_etram.nn.hard_negatives`) the objectness BCE of the hardest negative anchors of
the stride <= 8 levels weighs ``weight``: the YOLOX head learns background through objectness only. With
``temporal_consistency`` (:mod:`yolo_etram.nn.temporal_consistency`) a fourth term, ``tc_loss``, asks a track's score
``σ(obj)·σ(cls)`` to agree between consecutive labeled windows.

Usage:
    >>> criterion = YOLOXLoss(model)  # model.model[-1] is a YOLOXDetect
    >>> loss, items = criterion(model(batch["img"]), batch)  # loss: (iou, obj, cls) x batch size
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from ultralytics.utils.tal import make_anchors

from yolo_etram.nn.hard_negatives import HardNegatives, fine_anchors, hard_negative_weights
from yolo_etram.nn.size_aware_loss import box_weights, size_config
from yolo_etram.nn.temporal_consistency import LOSS_NAME, temporal_loss
from yolo_etram.nn.yolox_head import decode_boxes

__all__ = ["YOLOXLoss", "iou_cxcywh", "simota_assign"]


def iou_cxcywh(a: torch.Tensor, b: torch.Tensor, pairwise: bool = True) -> torch.Tensor:
    """IoU of ``cx, cy, w, h`` boxes: ``(N, M)`` for every pair, or ``(N,)`` row by row (YOLOX's ``bboxes_iou`` and
    ``IOUloss``; no epsilon in the pairwise form, 1e-16 in the row-wise one, as there)."""
    if pairwise:
        a = a[:, None]
    tl = torch.max(a[..., :2] - a[..., 2:] / 2, b[..., :2] - b[..., 2:] / 2)
    br = torch.min(a[..., :2] + a[..., 2:] / 2, b[..., :2] + b[..., 2:] / 2)
    inter = (br - tl).prod(-1) * (tl < br).all(-1)
    union = a[..., 2:].prod(-1) + b[..., 2:].prod(-1) - inter
    return inter / union if pairwise else inter / (union + 1e-16)


@torch.no_grad()
def simota_assign(gt_boxes, gt_cls, boxes, obj, cls, centers, strides, radius: float = 1.5, topk: int = 10):
    """SimOTA for one image.

    Args:
        gt_boxes: ``(G, 4)`` ground truth, ``cx, cy, w, h`` pixels.
        gt_cls: ``(G,)`` class ids.
        boxes: ``(A, 4)`` decoded predictions.
        obj: ``(A, 1)`` objectness logits.
        cls: ``(A, nc)`` class logits.
        centers: ``(A, 2)`` anchor cell centres in pixels.
        strides: ``(A, 1)`` anchor strides.
        radius: candidates lie within this many strides of a GT centre.
        topk: the dynamic k sums the top-k IoUs.

    Returns:
        fg (A,) bool positives, gt_index (P,) the GT of each positive, iou (P,) its IoU with that GT.
    """
    nc = cls.shape[1]
    r = radius * strides.view(1, -1)  # (1, A)
    cx, cy = centers[:, 0].view(1, -1), centers[:, 1].view(1, -1)
    gx, gy = gt_boxes[:, 0:1], gt_boxes[:, 1:2]
    deltas = torch.stack((cx - (gx - r), cy - (gy - r), (gx + r) - cx, (gy + r) - cy), 2)  # (G, A, 4)
    in_center = deltas.min(-1).values > 0.0
    cand = in_center.any(0)
    fg = torch.zeros_like(cand)
    if not cand.any():
        return fg, gt_cls.new_zeros(0, dtype=torch.long), boxes.new_zeros(0)
    geometry = in_center[:, cand]  # (G, M)
    ious = iou_cxcywh(gt_boxes, boxes[cand])  # (G, M)
    p = (cls[cand].float().sigmoid() * obj[cand].float().sigmoid()).sqrt()  # (M, nc)
    onehot = F.one_hot(gt_cls.long(), nc).float()
    g, m = ious.shape
    cls_cost = F.binary_cross_entropy(
        p.unsqueeze(0).expand(g, m, nc), onehot.unsqueeze(1).expand(g, m, nc), reduction="none"
    ).sum(-1)
    cost = cls_cost + 3.0 * -torch.log(ious + 1e-8) + 1e6 * (~geometry)

    dynamic_k = ious.topk(min(topk, m), 1).values.sum(1).int().clamp(min=1)
    match = torch.zeros_like(cost, dtype=torch.bool)
    for i in range(g):
        match[i, cost[i].topk(int(dynamic_k[i]), largest=False).indices] = True
    shared = match.sum(0) > 1
    if shared.any():  # an anchor claimed by several GTs keeps the cheapest
        cols = shared.nonzero().squeeze(1)
        match[:, cols] = False
        match[cost[:, cols].argmin(0), cols] = True
    pos = match.any(0)
    fg[cand.nonzero().squeeze(1)[pos]] = True
    gt_index = match[:, pos].float().argmax(0)
    return fg, gt_index, (match * ious).sum(0)[pos]


class YOLOXLoss:
    """RVT's YOLOX loss with v8DetectionLoss's interface (``parse_output``, ``loss``, ``loss_names``).

    ``loss(preds, batch)`` returns ``(torch.stack([5·L_iou, L_obj, L_cls]) * N, detached items)`` for ``N`` images,
    the losses normalised by the batch's number of positives as in RVT. ``batch``: ``batch_idx`` (image of each box),
    ``cls``, ``bboxes`` (normalised ``x, y, w, h`` of the input image).

    Example:
        >>> criterion = YOLOXLoss(model)  # size-aware: YOLOXLoss(model, size_aware={"a": 1.0, "tau": 256})
        >>> loss, items = criterion.loss(criterion.parse_output(model(img)), batch)
        >>> items  # {'iou_loss': ..., 'obj_loss': ..., 'cls_loss': ...}
    """

    loss_names = ("iou_loss", "obj_loss", "cls_loss")
    iou_weight = 5.0
    center_radius = 1.5
    topk = 10

    def __init__(
        self,
        model: nn.Module,
        size_aware: dict | bool | None = None,
        hard_negatives: HardNegatives | None = None,
        temporal_consistency: float = 0.0,
    ):
        head = model.model[-1]
        self.hard_negatives, self.tc_gain = hard_negatives, float(temporal_consistency)
        if self.tc_gain > 0:
            self.loss_names = (*type(self).loss_names, LOSS_NAME)
        self.nc = head.nc
        self.stride = head.stride
        self.bce = nn.BCEWithLogitsLoss(reduction="none")
        self.size_aware = size_config(size_aware)

    @staticmethod
    def parse_output(preds) -> dict:
        """The raw output dict, also from an eval-mode ``(inference, raw)`` tuple."""
        return preds[1] if isinstance(preds, tuple) else preds

    def __call__(self, preds, batch: dict):
        return self.loss(self.parse_output(preds), batch)

    def loss(self, preds: dict, batch: dict) -> tuple[torch.Tensor, dict]:
        feats = preds["feats"]
        device = preds["scores"].device
        stride = self.stride.to(device)
        anchors, strides = make_anchors(feats, stride, 0.0)  # (A, 2) grid cells, (A, 1)
        anchors, strides = anchors.float(), strides.float()
        boxes = decode_boxes(preds["boxes"].float(), anchors.T, strides.T).transpose(1, 2)  # (N, A, 4) pixels
        obj = preds["obj"].float().transpose(1, 2)  # (N, A, 1) logits
        cls = preds["scores"].float().transpose(1, 2)  # (N, A, nc) logits
        n = boxes.shape[0]
        h, w = (torch.tensor(feats[0].shape[2:], device=device, dtype=torch.float32) * stride[0]).tolist()
        idx = batch["batch_idx"].to(device).long().view(-1)
        gt_cls = batch["cls"].to(device).view(-1)
        gt_box = batch["bboxes"].to(device).float().view(-1, 4) * torch.tensor([w, h, w, h], device=device)
        centers = (anchors + 0.5) * strides
        box_w = (
            box_weights(gt_box[:, 2] * gt_box[:, 3], self.size_aware)
            if self.size_aware
            else torch.ones_like(gt_cls, dtype=torch.float32)
        )

        fg = torch.zeros(n, boxes.shape[1], dtype=torch.bool, device=device)
        reg_targets, cls_targets, pos_w, pos_rows, pos_q = [], [], [], [], []
        for i in range(n):
            sel = idx == i
            if not sel.any():
                continue
            pos, gt_index, iou = simota_assign(
                gt_box[sel],
                gt_cls[sel],
                boxes[i].detach(),
                obj[i].detach(),
                cls[i].detach(),
                centers,
                strides,
                self.center_radius,
                self.topk,
            )
            fg[i] = pos
            reg_targets.append(gt_box[sel][gt_index])
            cls_targets.append(F.one_hot(gt_cls[sel][gt_index].long(), self.nc).float() * iou.unsqueeze(-1))
            pos_w.append(box_w[sel][gt_index])
            if self.tc_gain > 0:  # each positive's score of its box's class, for the box's mean score
                pos_rows.append(sel.nonzero().squeeze(1)[gt_index])
                c = gt_cls[sel][gt_index].long().view(-1, 1)
                pos_q.append(obj[i][pos].sigmoid().squeeze(-1) * cls[i][pos].sigmoid().gather(1, c).squeeze(1))
        num_fg = max(int(fg.sum()), 1)
        reg_t = torch.cat(reg_targets) if reg_targets else boxes.new_zeros(0, 4)
        cls_t = torch.cat(cls_targets) if cls_targets else boxes.new_zeros(0, self.nc)
        loss_iou = 1.0 - iou_cxcywh(boxes[fg], reg_t, pairwise=False) ** 2
        loss_obj = self.bce(obj.reshape(-1, 1), fg.reshape(-1, 1).float())
        loss_cls = self.bce(cls[fg], cls_t).sum(-1)
        if self.size_aware and pos_w:  # a positive anchor's terms weigh as its ground-truth box
            w, w_obj = torch.cat(pos_w), torch.ones_like(fg, dtype=torch.float32)
            w_obj[fg] = w
            loss_iou, loss_cls, loss_obj = loss_iou * w, loss_cls * w, loss_obj * w_obj.reshape(-1, 1)
        if self.hard_negatives is not None:  # the hardest background anchors of the fine levels weigh more
            hn, fine = self.hard_negatives, fine_anchors(feats, stride)
            w_neg = hard_negative_weights(loss_obj.view(n, -1), ~fg, fine, hn.ratio, hn.weight)
            loss_obj = loss_obj * w_neg.reshape(-1, 1)
        loss_iou, loss_obj, loss_cls = (t.sum() / num_fg for t in (loss_iou, loss_obj, loss_cls))
        terms = [self.iou_weight * loss_iou, loss_obj, loss_cls]
        if self.tc_gain > 0:
            rows, q = (torch.cat(t) if t else cls.new_zeros(0) for t in (pos_rows, pos_q))
            terms.append(self.tc_gain * temporal_loss(batch, rows.long(), q, len(gt_cls), cls))
        loss = torch.stack(terms)
        return loss * n, dict(zip(self.loss_names, loss.detach()))
