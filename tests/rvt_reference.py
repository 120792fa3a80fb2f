"""A straightforward per-window re-statement of RVT's preprocessing, with torch, used as the reference in tests and
in ``benchmarks/bench_prepare.py``. It follows ``RVT:scripts/genx/preprocess_dataset.py`` and
``RVT:data/utils/representations.py`` operation by operation (uint8 accumulation that wraps, float32 time bins,
``nearest-exact`` downsampling of the full-resolution histogram), loading the whole recording like RVT does.

It also restates RVT's YOLOX head, decoding, postprocess and training loss (SimOTA, IoU/obj/cls losses) from
``RVT:models/detection/yolox/`` (rvt_spec 4.4), the reference of ``tests/test_yolox.py``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def rvt_histogram(x, y, p, t, height, width, nbins=10, cutoff=10, downsample=1) -> np.ndarray:
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
    if downsample == 2:
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


def rvt_prepare_events(x, y, p, t, window_t, height, width, window_us=50_000, downsample=1, nbins=10, cutoff=10):
    """All histograms of one recording, window by window, as RVT computes them (in-frame events assumed)."""
    t = correct_time(np.asarray(t, np.int64))
    p = np.clip(np.asarray(p, np.int64), 0, None)
    starts, ends = rvt_windows(t, window_t, window_us)
    return np.stack(
        [
            rvt_histogram(x[s:e], y[s:e], p[s:e], t[s:e], height, width, nbins, cutoff, downsample)
            for s, e in zip(starts, ends)
        ]
    )


def rvt_loader_labels(boxes: np.ndarray, full_hw, downsample_factor=None) -> np.ndarray:
    """RVT's ObjectLabelFactory + ``__getitem__``: float32 (N, 7) [t, x, y, w, h, class_id, confidence] at load
    resolution (clamp at full resolution, then ``scale_(1/downsample)`` and flat-box removal)."""
    lab = torch.from_numpy(
        np.stack([boxes[k].astype("float32") for k in ("t", "x", "y", "w", "h", "class_id", "class_confidence")], 1)
    )
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


# ---------------------------------------------------------------------------------------------------- YOLOX head
# RVT's YOLOXHead (RVT:models/detection/yolox/models/yolo_head.py; rvt_spec 4.4), restated with plain torch layers and
# RVT's module names, so its state_dict is the checkpoint's ``mdl.yolox_head.*`` layout.


class BaseConv(torch.nn.Module):
    """YOLOX BaseConv: Conv2d(bias=False, pad (k-1)//2) + BatchNorm2d (PyTorch defaults) + SiLU."""

    def __init__(self, c1, c2, k, s=1):
        super().__init__()
        self.conv = torch.nn.Conv2d(c1, c2, k, s, (k - 1) // 2, bias=False)
        self.bn = torch.nn.BatchNorm2d(c2)
        self.act = torch.nn.SiLU()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class RVTYoloXHead(torch.nn.Module):
    """RVT's head: per level a 1x1 stem, 2x3x3 cls and reg branches, 1x1 cls/reg/obj predictions (obj from reg)."""

    def __init__(self, num_classes, strides=(8, 16, 32), in_channels=(256, 512, 1024)):
        super().__init__()
        self.num_classes, self.strides = num_classes, list(strides)
        hidden = int(256 * in_channels[-1] / 1024)
        nn = torch.nn
        self.stems = nn.ModuleList(BaseConv(c, hidden, 1) for c in in_channels)
        self.cls_convs = nn.ModuleList(
            nn.Sequential(BaseConv(hidden, hidden, 3), BaseConv(hidden, hidden, 3)) for _ in in_channels
        )
        self.reg_convs = nn.ModuleList(
            nn.Sequential(BaseConv(hidden, hidden, 3), BaseConv(hidden, hidden, 3)) for _ in in_channels
        )
        self.cls_preds = nn.ModuleList(nn.Conv2d(hidden, num_classes, 1) for _ in in_channels)
        self.reg_preds = nn.ModuleList(nn.Conv2d(hidden, 4, 1) for _ in in_channels)
        self.obj_preds = nn.ModuleList(nn.Conv2d(hidden, 1, 1) for _ in in_channels)

    def raw_outputs(self, xin):
        """Per level ``cat[reg(4), obj(1), cls(C)]`` maps (B, 5 + C, h, w), before any activation."""
        outs = []
        for k, x in enumerate(xin):
            x = self.stems[k](x)
            cls_feat, reg_feat = self.cls_convs[k](x), self.reg_convs[k](x)
            outs.append(
                torch.cat([self.reg_preds[k](reg_feat), self.obj_preds[k](reg_feat), self.cls_preds[k](cls_feat)], 1)
            )
        return outs

    def grids(self, outs):
        """RVT's ``get_output_and_grid`` grids: (1, A, 2) ``(gx, gy)`` without +0.5 and (1, A, 1) strides."""
        grids, strides = [], []
        for out, s in zip(outs, self.strides):
            h, w = out.shape[-2:]
            yv, xv = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
            grids.append(torch.stack((xv, yv), 2).view(1, -1, 2))
            strides.append(torch.full((1, h * w, 1), s))
        return torch.cat(grids, 1).float(), torch.cat(strides, 1).float()

    def decode(self, outs, sigmoid=True):
        """(B, A, 5 + C): ``cx, cy = (p + g) * s``, ``w, h = exp(p) * s``; obj and cls through sigmoid if asked."""
        flat = torch.cat([o.flatten(start_dim=2) for o in outs], 2).permute(0, 2, 1)
        grid, stride = self.grids(outs)
        xy = (flat[..., :2] + grid) * stride
        wh = torch.exp(flat[..., 2:4]) * stride
        rest = flat[..., 4:].sigmoid() if sigmoid else flat[..., 4:]
        return torch.cat([xy, wh, rest], -1)

    def forward(self, xin):
        """Eval output: decoded ``[cx, cy, w, h, obj, cls...]`` per anchor."""
        return self.decode(self.raw_outputs(xin))


def rvt_yolox_postprocess(prediction, num_classes, conf_thre=0.7, nms_thre=0.45):
    """RVT's ``postprocess`` (boxes.py#L32-76): xyxy, best class, keep obj*class_conf >= thr, class-aware NMS."""
    import torchvision

    box_corner = prediction.new(prediction.shape)
    box_corner[:, :, 0] = prediction[:, :, 0] - prediction[:, :, 2] / 2
    box_corner[:, :, 1] = prediction[:, :, 1] - prediction[:, :, 3] / 2
    box_corner[:, :, 2] = prediction[:, :, 0] + prediction[:, :, 2] / 2
    box_corner[:, :, 3] = prediction[:, :, 1] + prediction[:, :, 3] / 2
    prediction = prediction.clone()
    prediction[:, :, :4] = box_corner[:, :, :4]
    output = [None for _ in range(len(prediction))]
    for i, image_pred in enumerate(prediction):
        if not image_pred.size(0):
            continue
        class_conf, class_pred = torch.max(image_pred[:, 5 : 5 + num_classes], 1, keepdim=True)
        conf_mask = (image_pred[:, 4] * class_conf.squeeze() >= conf_thre).squeeze()
        detections = torch.cat((image_pred[:, :5], class_conf, class_pred.float()), 1)
        detections = detections[conf_mask]
        if not detections.size(0):
            continue
        nms_out_index = torchvision.ops.batched_nms(
            detections[:, :4], detections[:, 4] * detections[:, 5], detections[:, 6], nms_thre
        )
        output[i] = detections[nms_out_index]
    return output


def yolox_bboxes_iou(bboxes_a, bboxes_b):
    """YOLOX ``bboxes_iou(xyxy=False)``."""
    tl = torch.max(bboxes_a[:, None, :2] - bboxes_a[:, None, 2:] / 2, bboxes_b[:, :2] - bboxes_b[:, 2:] / 2)
    br = torch.min(bboxes_a[:, None, :2] + bboxes_a[:, None, 2:] / 2, bboxes_b[:, :2] + bboxes_b[:, 2:] / 2)
    area_a = torch.prod(bboxes_a[:, 2:], 1)
    area_b = torch.prod(bboxes_b[:, 2:], 1)
    en = (tl < br).type(tl.type()).prod(dim=2)
    area_i = torch.prod(br - tl, 2) * en
    return area_i / (area_a[:, None] + area_b - area_i)


def yolox_iou_loss(pred, target):
    """YOLOX ``IOUloss(reduction='none', loss_type='iou')``: 1 - IoU**2."""
    pred, target = pred.view(-1, 4), target.view(-1, 4)
    tl = torch.max(pred[:, :2] - pred[:, 2:] / 2, target[:, :2] - target[:, 2:] / 2)
    br = torch.min(pred[:, :2] + pred[:, 2:] / 2, target[:, :2] + target[:, 2:] / 2)
    area_p, area_g = torch.prod(pred[:, 2:], 1), torch.prod(target[:, 2:], 1)
    en = (tl < br).type(tl.type()).prod(dim=1)
    area_i = torch.prod(br - tl, 1) * en
    iou = area_i / (area_p + area_g - area_i + 1e-16)
    return 1 - iou**2


@torch.no_grad()
def yolox_get_assignments(
    num_gt, gt_bboxes, gt_classes, bboxes_preds, expanded_strides, x_shifts, y_shifts, cls_preds, obj_preds, num_classes
):
    """YOLOX >= 0.3 ``get_assignments`` (geometry constraint + SimOTA) for one image, literally."""
    import torch.nn.functional as F

    # get_geometry_constraint
    expanded_strides_per_image = expanded_strides[0]
    x_centers = ((x_shifts[0] + 0.5) * expanded_strides_per_image).unsqueeze(0)
    y_centers = ((y_shifts[0] + 0.5) * expanded_strides_per_image).unsqueeze(0)
    center_dist = expanded_strides_per_image.unsqueeze(0) * 1.5
    gt_l, gt_r = gt_bboxes[:, 0:1] - center_dist, gt_bboxes[:, 0:1] + center_dist
    gt_t, gt_b = gt_bboxes[:, 1:2] - center_dist, gt_bboxes[:, 1:2] + center_dist
    center_deltas = torch.stack([x_centers - gt_l, y_centers - gt_t, gt_r - x_centers, gt_b - y_centers], 2)
    is_in_centers = center_deltas.min(dim=-1).values > 0.0
    fg_mask = is_in_centers.sum(dim=0) > 0
    geometry_relation = is_in_centers[:, fg_mask]

    bboxes_preds = bboxes_preds[fg_mask]
    cls_preds_, obj_preds_ = cls_preds[fg_mask], obj_preds[fg_mask]
    num_in_boxes_anchor = bboxes_preds.shape[0]
    pair_wise_ious = yolox_bboxes_iou(gt_bboxes, bboxes_preds)
    gt_cls_per_image = F.one_hot(gt_classes.to(torch.int64), num_classes).float()
    pair_wise_ious_loss = -torch.log(pair_wise_ious + 1e-8)
    cls_preds_ = (cls_preds_.float().sigmoid_() * obj_preds_.float().sigmoid_()).sqrt()
    pair_wise_cls_loss = F.binary_cross_entropy(
        cls_preds_.unsqueeze(0).repeat(num_gt, 1, 1),
        gt_cls_per_image.unsqueeze(1).repeat(1, num_in_boxes_anchor, 1),
        reduction="none",
    ).sum(-1)
    cost = pair_wise_cls_loss + 3.0 * pair_wise_ious_loss + 1e6 * (~geometry_relation)

    # simota_matching
    matching_matrix = torch.zeros_like(cost, dtype=torch.uint8)
    n_candidate_k = min(10, pair_wise_ious.size(1))
    topk_ious, _ = torch.topk(pair_wise_ious, n_candidate_k, dim=1)
    dynamic_ks = torch.clamp(topk_ious.sum(1).int(), min=1)
    for gt_idx in range(num_gt):
        _, pos_idx = torch.topk(cost[gt_idx], k=int(dynamic_ks[gt_idx]), largest=False)
        matching_matrix[gt_idx][pos_idx] = 1
    anchor_matching_gt = matching_matrix.sum(0)
    if anchor_matching_gt.max() > 1:
        multiple_match_mask = anchor_matching_gt > 1
        _, cost_argmin = torch.min(cost[:, multiple_match_mask], dim=0)
        matching_matrix[:, multiple_match_mask] *= 0
        matching_matrix[cost_argmin, multiple_match_mask] = 1
    fg_mask_inboxes = anchor_matching_gt > 0
    num_fg = fg_mask_inboxes.sum().item()
    fg_mask[fg_mask.clone()] = fg_mask_inboxes
    matched_gt_inds = matching_matrix[:, fg_mask_inboxes].argmax(0)
    gt_matched_classes = gt_classes[matched_gt_inds]
    pred_ious_this_matching = (matching_matrix * pair_wise_ious).sum(0)[fg_mask_inboxes]
    return gt_matched_classes, fg_mask, pred_ious_this_matching, matched_gt_inds, num_fg


def yolox_losses(head: RVTYoloXHead, outs, labels):
    """RVT's training ``get_losses`` on raw level outputs ``outs`` and ``labels`` (B, maxN, 5) ``[cls, cx, cy, w, h]``
    pixels, zero-padded. Returns ``(loss, 5 * iou_loss, conf_loss, cls_loss, num_fg)``."""
    import torch.nn.functional as F

    outputs = head.decode(outs, sigmoid=False)  # training: boxes decoded, obj/cls logits
    grid, stride = head.grids(outs)
    x_shifts, y_shifts, expanded_strides = grid[..., 0], grid[..., 1], stride[..., 0]
    bbox_preds, obj_preds, cls_preds = outputs[:, :, :4], outputs[:, :, 4:5], outputs[:, :, 5:]
    nlabel = (labels.sum(dim=2) > 0).sum(dim=1)
    total_num_anchors = outputs.shape[1]
    cls_targets, reg_targets, obj_targets, fg_masks = [], [], [], []
    num_fg = 0.0
    for batch_idx in range(outputs.shape[0]):
        num_gt = int(nlabel[batch_idx])
        if num_gt == 0:
            cls_target = outputs.new_zeros((0, head.num_classes))
            reg_target = outputs.new_zeros((0, 4))
            obj_target = outputs.new_zeros((total_num_anchors, 1))
            fg_mask = outputs.new_zeros(total_num_anchors).bool()
        else:
            gt_bboxes = labels[batch_idx, :num_gt, 1:5]
            gt_classes = labels[batch_idx, :num_gt, 0]
            gt_matched_classes, fg_mask, pred_ious, matched_gt_inds, num_fg_img = yolox_get_assignments(
                num_gt,
                gt_bboxes,
                gt_classes,
                bbox_preds[batch_idx],
                expanded_strides,
                x_shifts,
                y_shifts,
                cls_preds[batch_idx],
                obj_preds[batch_idx],
                head.num_classes,
            )
            num_fg += num_fg_img
            cls_target = F.one_hot(gt_matched_classes.to(torch.int64), head.num_classes) * pred_ious.unsqueeze(-1)
            obj_target = fg_mask.unsqueeze(-1)
            reg_target = gt_bboxes[matched_gt_inds]
        cls_targets.append(cls_target)
        reg_targets.append(reg_target)
        obj_targets.append(obj_target.to(outputs.dtype))
        fg_masks.append(fg_mask)
    cls_targets, reg_targets = torch.cat(cls_targets, 0), torch.cat(reg_targets, 0)
    obj_targets, fg_masks = torch.cat(obj_targets, 0), torch.cat(fg_masks, 0)
    num_fg = max(num_fg, 1)
    bce = torch.nn.BCEWithLogitsLoss(reduction="none")
    loss_iou = yolox_iou_loss(bbox_preds.view(-1, 4)[fg_masks], reg_targets).sum() / num_fg
    loss_obj = bce(obj_preds.view(-1, 1), obj_targets).sum() / num_fg
    loss_cls = bce(cls_preds.view(-1, head.num_classes)[fg_masks], cls_targets).sum() / num_fg
    return 5.0 * loss_iou + loss_obj + loss_cls, 5.0 * loss_iou, loss_obj, loss_cls, num_fg
