"""Size-aware detection loss: small boxes weigh more, ``w = 1 + a * exp(-area / tau)``, normalised so that the loss
scale is unchanged.

Ultralytics' detection loss weights every foreground anchor by its assigned target score, in the box, DFL and class
terms alike, and divides by the sum of the target scores. Multiplying each target score by its ground-truth box's
weight, with the weights of a batch's boxes normalised to mean 1, therefore weights the box's anchors by ``w`` and
leaves a batch of equal-size boxes exactly as it was. Off by default; switched on by a ``size_aware`` entry in the
model or data YAML (``a``: extra weight of a vanishing box, ``tau``: area scale in input pixels squared).

Usage (data or model YAML):
    size_aware: {a: 1.0, tau: 1024}   # a 32x32 box weighs 1 + e^-1 = 1.37 before normalisation, a tiny one 2
"""

from __future__ import annotations

import torch

DEFAULTS = {"a": 1.0, "tau": 1024.0}


def size_weights(area: torch.Tensor, a: float = DEFAULTS["a"], tau: float = DEFAULTS["tau"]) -> torch.Tensor:
    """``1 + a * exp(-area / tau)``: monotone, falling from ``1 + a`` at area 0 towards 1 for large boxes."""
    return 1 + a * torch.exp(-area.clamp(min=0) / tau)


def normalised_box_weights(gt_bboxes: torch.Tensor, mask_gt: torch.Tensor, a: float, tau: float) -> torch.Tensor:
    """Per ground-truth box weights ``(B, N)`` for padded ``xyxy`` boxes ``(B, N, 4)``, mean 1 over the real boxes."""
    area = (gt_bboxes[..., 2] - gt_bboxes[..., 0]) * (gt_bboxes[..., 3] - gt_bboxes[..., 1])
    w = size_weights(area, a, tau)
    real = mask_gt.reshape(w.shape).bool()
    if real.any():
        w = w / w[real].mean()
    return torch.where(real, w, torch.ones_like(w))


class SizeWeightedAssigner(torch.nn.Module):
    """Wraps Ultralytics' ``TaskAlignedAssigner``: same assignment, target scores scaled by the box weights."""

    def __init__(self, assigner, a: float = DEFAULTS["a"], tau: float = DEFAULTS["tau"]):
        super().__init__()
        if a < 0 or tau <= 0:
            raise ValueError(f"size_aware: need a >= 0 and tau > 0, got a={a}, tau={tau}")
        self.assigner, self.a, self.tau = assigner, float(a), float(tau)

    def forward(self, pd_scores, pd_bboxes, anc_points, gt_labels, gt_bboxes, mask_gt, **kwargs):
        labels, bboxes, scores, fg_mask, gt_idx = self.assigner(
            pd_scores, pd_bboxes, anc_points, gt_labels, gt_bboxes, mask_gt, **kwargs
        )
        if gt_bboxes.shape[1] == 0:
            return labels, bboxes, scores, fg_mask, gt_idx
        w = normalised_box_weights(gt_bboxes, mask_gt, self.a, self.tau)
        per_anchor = torch.gather(w, 1, gt_idx.long()) * fg_mask
        return labels, bboxes, scores * per_anchor.unsqueeze(-1).to(scores.dtype), fg_mask, gt_idx

    def __getattr__(self, name):  # attributes the loss reads from the assigner (topk, num_classes, ...)
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("assigner"), name)


def make_size_aware(criterion, cfg: dict | bool | None):
    """Switch an Ultralytics detection loss to size-aware weighting per ``cfg`` (``{a, tau}``; True for defaults)."""
    if not cfg:
        return criterion
    cfg = {**DEFAULTS, **(cfg if isinstance(cfg, dict) else {})}
    criterion.assigner = SizeWeightedAssigner(criterion.assigner, cfg["a"], cfg["tau"])
    return criterion
