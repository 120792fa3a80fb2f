"""Temporal consistency loss: the detector's confidence in one tracked object should not flicker between consecutive
labeled windows of a clip.

Prophesee and eTraM boxes carry a ``track_id``; ``prepare`` keeps it (as RVT does) and the loader hands it to the loss
as ``track`` (a dense id per sequence, -1 where the labels have none). For every ground-truth box ``g`` let ``q_g`` be
the mean predicted score of its class over the anchors the assigner gave it (``σ(cls)`` for Ultralytics' ``Detect``,
``σ(obj)·σ(cls)`` for RVT's YOLOX head). For every pair of boxes ``(a, b)`` of one track in consecutive labeled
windows ``t < t'`` of one clip (no labeled window between them), the loss is

    L_tc = mean over pairs of (q_a - q_b)^2,   added as ``tc_loss`` with the gain ``temporal_consistency``.

Both sides receive gradient. It asks for what a recurrent detector's memory is for: an object that stops moving
fades from the events, not from the scene, and should keep its score. Pairs span the windows of one clip (a batch);
a box without assigned anchors makes no pair.

Train argument: ``temporal_consistency`` (the gain; 0, the default, is off).

Example:
    >>> pairs = track_pairs(batch_idx, track, frames, windows=5)  # (P, 2) rows of GT boxes
    >>> yolo train model=rvt-t.yaml data=etram.yaml temporal_consistency=1.0
"""

from __future__ import annotations

import math

import torch

from yolo_etram.utils.errors import UnsupportedOptionError

LOSS_NAME = "tc_loss"


def gain_from_args(args) -> float:
    """The ``temporal_consistency`` train argument (0: off), checked."""
    args = args if isinstance(args, dict) else vars(args) if args is not None else {}
    gain = float(args.get("temporal_consistency") or 0)
    if gain < 0 or not math.isfinite(gain):
        raise UnsupportedOptionError(f"temporal_consistency={gain:g}: give a loss gain >= 0 (0 is off)")
    return gain


def track_pairs(batch_idx: torch.Tensor, track: torch.Tensor, frames: torch.Tensor, windows: int):
    """``(P, 2)`` row pairs of ground-truth boxes of one track in consecutive labeled windows of one clip.

    Args:
        batch_idx: ``(G,)`` the image (of the loss batch) of each box.
        track: ``(G,)`` each box's track (-1: unknown, never paired).
        frames: ``(I,)`` the clip frame ``b * T + t`` of each image of the loss batch, increasing.
        windows: ``T``, windows per clip.
    """
    image = batch_idx.long()
    # the next labeled image of the same clip: images are in frame order, so it is the next one if its slot matches
    img_slot = frames.long() // windows
    next_image = torch.arange(1, len(frames) + 1, device=frames.device)
    has_next = torch.cat([img_slot[1:] == img_slot[:-1], img_slot.new_zeros(1, dtype=torch.bool)])
    want = torch.where(has_next[image], next_image[image.clamp(max=len(frames) - 1)], -1)
    known = track.long() >= 0
    a, b = torch.nonzero(
        (want[:, None] == image[None, :]) & (track.long()[:, None] == track.long()[None, :]) & known[:, None],
        as_tuple=True,
    )
    return torch.stack([a, b], 1)


def consistency(q: torch.Tensor, has: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """``mean (q_a - q_b)^2`` over the pairs whose boxes both have anchors (``has``); a graph-keeping 0 without."""
    ok = has[pairs[:, 0]] & has[pairs[:, 1]] if len(pairs) else has.new_zeros(0)
    if not ok.any():
        return q.sum() * 0.0
    p = pairs[ok]
    return (q[p[:, 0]] - q[p[:, 1]]).pow(2).mean()


def temporal_loss(batch: dict, rows: torch.Tensor, scores: torch.Tensor, n_boxes: int, like: torch.Tensor):
    """``L_tc`` of a batch from its positive anchors, whichever head: ``rows`` ``(P,)`` the ground-truth box of each
    positive, ``scores`` ``(P,)`` its predicted score of that box's class; a box's ``q`` is the mean over its
    positives. A graph-keeping 0 (from ``like``) without positives, tracks or clip frames (``frames``, ``windows``)."""
    if not len(rows) or "track" not in batch or "frames" not in batch:
        return like.sum() * 0.0
    device = scores.device
    total = torch.zeros(n_boxes, device=device).index_add(0, rows, scores.float())
    count = torch.zeros(n_boxes, device=device).index_add(0, rows, torch.ones_like(scores, dtype=torch.float32))
    idx = batch["batch_idx"].to(device).long().view(-1)
    pairs = track_pairs(idx, batch["track"].to(device), batch["frames"].to(device), batch["windows"])
    return consistency(total / count.clamp(min=1), count > 0, pairs)


class TemporalConsistency:
    """Wraps Ultralytics' detection loss (``Detect``): its three terms plus ``tc_loss``, from the same assignment.

    ``batch`` needs ``track``, ``frames`` (the clip frame of each image) and ``windows`` (T), which the model's
    labeled-frame loss sets; without them the term is 0."""

    def __init__(self, criterion, gain: float):
        if hasattr(criterion, "one2many") or not hasattr(criterion, "get_assigned_targets_and_loss"):
            raise UnsupportedOptionError(
                f"temporal_consistency: {type(criterion).__name__} is not supported; use a Detect or YOLOXDetect head"
            )
        self.criterion, self.gain = criterion, float(gain)
        self.loss_names = (*criterion.loss_names, LOSS_NAME)

    def __getattr__(self, name):  # everything else is the wrapped loss's (parse_output, stride, bce, ...)
        if name.startswith("__") or "criterion" not in self.__dict__:  # copy and pickle protocols: ours
            raise AttributeError(name)
        return getattr(self.__dict__["criterion"], name)

    def __call__(self, preds, batch: dict):
        return self.loss(self.parse_output(preds), batch)

    def loss(self, preds: dict, batch: dict):
        (fg, gt_index, *_), loss, _ = self.criterion.get_assigned_targets_and_loss(preds, batch)
        tc = temporal_term(preds, batch, fg, gt_index) * self.gain
        loss = torch.cat([loss, tc.view(1)])
        return loss * preds["boxes"].shape[0], dict(zip(self.loss_names, loss.detach()))


def temporal_term(preds: dict, batch: dict, fg: torch.Tensor, gt_index: torch.Tensor) -> torch.Tensor:
    """``L_tc`` under Ultralytics' assignment: ``fg`` ``(N, A)`` positives, ``gt_index`` ``(N, A)`` the box of each
    anchor within its image (boxes are in image order, so a box's row is its image's first row plus that index)."""
    scores = preds["scores"]  # (N, nc, A) logits
    idx = batch["batch_idx"].to(scores.device).long().view(-1)
    first = torch.zeros(scores.shape[0] + 1, dtype=torch.long, device=scores.device)
    first = first.index_add(0, idx + 1, torch.ones_like(idx)).cumsum(0)[:-1]
    image, anchor = fg.nonzero(as_tuple=True)
    rows = first[image] + gt_index[image, anchor].long()
    cls = batch["cls"].to(scores.device).long().view(-1)[rows]
    return temporal_loss(batch, rows, scores[image, cls, anchor].sigmoid(), len(idx), scores)


def make_temporal_consistency(criterion, gain: float):
    """Ultralytics' detection loss with the temporal term (``gain`` > 0), or ``criterion`` itself (0)."""
    return TemporalConsistency(criterion, gain) if gain > 0 else criterion
