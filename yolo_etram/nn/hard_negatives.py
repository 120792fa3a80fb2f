"""Hard-negative mining for small objects: the hardest background anchors of the fine levels weigh more.

Formulation (online hard-example mining, Shrivastava et al. 2016, as a re-weighting rather than a selection): per
image, among the *negative* anchors of the levels of stride <= 8 (the stride-4 and stride-8 maps, where small objects
are detected), the ``k = ceil(ratio * max(P, 1))`` anchors with the largest classification loss, ``P`` the image's
positives on those levels, have that loss multiplied by ``weight``; every other anchor keeps weight 1 and the loss
keeps its normaliser. The selection is made on detached losses, so it only re-weights the gradient. Easy negatives
are kept (a dense detector's calibration needs them), unlike the original OHEM's 3:1 sampling.

What the negatives' classification loss is depends on the head:

- Ultralytics' ``Detect``: the per-anchor class BCE against a zero target (an anchor whose class targets are all zero
  is a negative); the BCE of the loss is swapped for :class:`MinedBCE`.
- RVT's YOLOX head: negatives learn background only through objectness (its class loss is on positives), so the
  objectness BCE of the negatives is mined (:class:`~yolo_etram.nn.yolox_loss.YOLOXLoss`).

Train arguments: ``hard_negatives`` (the ratio; 0, the default, is off) and ``hard_negative_weight`` (default 2).

Example:
    >>> w = hard_negative_weights(loss, negative, small, ratio=3, weight=2)  # (N, A), 1 or 2
    >>> yolo train model=rvt-t.yaml data=etram.yaml hard_negatives=3 hard_negative_weight=2
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from yolo_etram.utils.errors import UnsupportedOptionError

MAX_STRIDE = 8
"""Levels of stride up to this are mined: the stride-4 and stride-8 maps (stride 8 only in a 3-scale model)."""


@dataclass(frozen=True)
class HardNegatives:
    """``ratio`` hard negatives per positive, each weighing ``weight``."""

    ratio: float
    weight: float = 2.0

    @classmethod
    def from_args(cls, args) -> HardNegatives | None:
        """From the train arguments ``hard_negatives`` and ``hard_negative_weight``; None when off."""
        args = args if isinstance(args, dict) else vars(args) if args is not None else {}
        ratio = float(args.get("hard_negatives") or 0)
        weight = float(args.get("hard_negative_weight", 2.0))
        if ratio == 0:
            return None
        if ratio < 0 or not math.isfinite(ratio):
            raise UnsupportedOptionError(f"hard_negatives={ratio:g}: give the hard negatives per positive (> 0), or 0")
        if weight < 1 or not math.isfinite(weight):
            raise UnsupportedOptionError(f"hard_negative_weight={weight:g}: must be >= 1 (1 would mine nothing)")
        return cls(ratio, weight)


def fine_anchors(feats: list[torch.Tensor], strides: torch.Tensor) -> torch.Tensor:
    """``(A,)`` bool: the anchors of the levels of stride <= :data:`MAX_STRIDE`, in the head's anchor order."""
    sizes = [f.shape[2] * f.shape[3] for f in feats]
    fine = [torch.full((n,), float(s) <= MAX_STRIDE, dtype=torch.bool) for n, s in zip(sizes, strides.tolist())]
    return torch.cat(fine).to(feats[0].device)


@torch.no_grad()
def hard_negative_weights(
    loss: torch.Tensor, negative: torch.Tensor, fine: torch.Tensor, ratio: float, weight: float
) -> torch.Tensor:
    """Per-anchor weights ``(N, A)``: ``weight`` on each image's ``ceil(ratio * max(P, 1))`` largest-loss negatives of
    the ``fine`` levels (``P``: its positives there), 1 elsewhere.

    Args:
        loss: ``(N, A)`` each anchor's classification loss (detached inside).
        negative: ``(N, A)`` bool, the negative anchors.
        fine: ``(A,)`` bool, the anchors of the mined levels.
        ratio: hard negatives per positive.
        weight: the weight of a hard negative.
    """
    candidates = negative & fine.view(1, -1)
    positives = (~negative & fine.view(1, -1)).sum(1)
    k = torch.ceil(ratio * positives.clamp(min=1).float()).long().clamp(max=candidates.sum(1))  # (N,)
    out = torch.ones_like(loss, dtype=torch.float32)
    if not k.numel() or int(k.max()) == 0:
        return out
    scores = torch.where(candidates, loss.detach().float(), torch.full_like(loss, -torch.inf, dtype=torch.float32))
    order = scores.argsort(1, descending=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    hard = (rank < k.view(-1, 1)) & candidates
    return torch.where(hard, torch.full_like(out, weight), out)


class MinedBCE(nn.Module):
    """``BCEWithLogitsLoss(reduction="none")`` whose per-anchor sums are re-weighted by :func:`hard_negative_weights`.

    Ultralytics' detection loss calls its ``bce`` once per step, on the class logits and targets ``(N, A, nc)``; the
    anchors' levels come from :meth:`set_levels` (called before each loss, see :func:`make_hard_negative`)."""

    def __init__(self, spec: HardNegatives):
        super().__init__()
        self.spec, self.fine = spec, None

    def set_levels(self, fine: torch.Tensor) -> None:
        self.fine = fine

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        bce = nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
        if self.fine is None or self.fine.numel() != bce.shape[1]:
            raise RuntimeError("hard negatives: the loss ran without the anchors' levels (call the wrapped loss)")
        negative = target.sum(-1) == 0
        w = hard_negative_weights(bce.sum(-1), negative, self.fine, self.spec.ratio, self.spec.weight)
        return bce * w.unsqueeze(-1).to(bce.dtype)


def make_hard_negative(criterion, spec: HardNegatives | None):
    """Mine hard negatives in an Ultralytics detection loss (``Detect``; an end-to-end loss's both parts): its class
    BCE becomes a :class:`MinedBCE`, told the anchors' levels before each assignment. None: ``criterion`` unchanged."""
    if spec is None:
        return criterion
    parts = [getattr(criterion, k) for k in ("one2many", "one2one") if hasattr(criterion, k)] or [criterion]
    for part in parts:
        if not isinstance(getattr(part, "bce", None), nn.BCEWithLogitsLoss | MinedBCE):
            raise UnsupportedOptionError(
                f"hard_negatives: {type(part).__name__} has no class BCE to mine; use a Detect or YOLOXDetect head"
            )
        part.bce = MinedBCE(spec)
        part.get_assigned_targets_and_loss = _ToldLevels(part, part.get_assigned_targets_and_loss)
    criterion.hard_negatives = spec
    return criterion


class _ToldLevels:
    """``part.get_assigned_targets_and_loss`` (every detection loss of Ultralytics' goes through it), first telling
    the part's :class:`MinedBCE` the anchors' levels of ``preds``. A class, not a closure: it copies and pickles."""

    def __init__(self, part, assign_and_loss):
        self.part, self.assign_and_loss = part, assign_and_loss

    def __call__(self, preds: dict, batch: dict, **kwargs):
        self.part.bce.set_levels(fine_anchors(preds["feats"], self.part.stride))
        return self.assign_and_loss(preds, batch, **kwargs)
