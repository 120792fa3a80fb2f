"""Size-aware detection loss: small boxes weigh more, ``w = 1 + a * exp(-area / tau)``, normalised so that the loss
scale is unchanged; v2 adds per-size-bucket weights that adapt from each validation ("with feedback").

Ultralytics' detection loss weights every foreground anchor by its assigned target score, in the box, DFL and class
terms alike, and divides by the sum of the target scores. Multiplying each target score by its ground-truth box's
weight, with the weights of a batch's boxes normalised to mean 1, therefore weights the box's anchors by ``w`` and
leaves a batch of equal-size boxes exactly as it was. Off by default; switched on by a ``size_aware`` entry in the
model or data YAML (``a``: extra weight of a vanishing box, ``tau``: area scale in input pixels squared).

Both heads honour it: Ultralytics' ``Detect`` through the assigner (:func:`make_size_aware`; an end-to-end head's
one-to-many and one-to-one losses both), RVT's YOLOX head in :class:`~yolo_etram.nn.yolox_loss.YOLOXLoss`, where a
positive anchor's IoU, objectness and class terms are multiplied by its ground truth's weight. A loss with no
assigner to weight is refused in one line.

**v2, with feedback** (``feedback: {...}``): a box's weight is also multiplied by the weight ``w_b`` of its COCO size
bucket ``b`` (S: area < 32², M: < 96², L: the rest, in input pixels, which are the evaluation's when frames are not
resized). After every validation, with ``AP_b`` the Prophesee AP of bucket ``b`` (buckets without ground truth keep
their weight) and ``m`` the mean of those APs::

    target_b = clip(((m + eps) / (AP_b + eps)) ** gamma, 1 / max, max)     eps = 0.01
    w_b <- (1 - momentum) * w_b + momentum * target_b

so a bucket that scores below the mean gains weight, bounded by ``[1 / max, max]`` (``w_b`` starts at 1). The weights
are part of the model's YAML (``size_aware.bucket_weights``): every checkpoint carries them, a resumed run continues
from them exactly, ``results.csv`` logs them per epoch (``size_aware/w_S, w_M, w_L``) and the experiment record's
``model_yaml`` holds the final ones.

Usage (data or model YAML):
    size_aware: {a: 1.0, tau: 1024}   # a 32x32 box weighs 1 + e^-1 = 1.37 before normalisation, a tiny one 2
    size_aware: {a: 1.0, tau: 256, feedback: {gamma: 1.0, momentum: 0.5, max: 4.0}}   # v2 (needs val=True)
"""

from __future__ import annotations

import math

import torch

from yolo_etram.utils.errors import UnsupportedOptionError

DEFAULTS = {"a": 1.0, "tau": 1024.0}
FEEDBACK_DEFAULTS = {"gamma": 1.0, "momentum": 0.5, "max": 4.0}
BUCKETS = ("S", "M", "L")
BUCKET_AREAS = (32.0**2, 96.0**2)
"""COCO's area bounds of small, medium and large (``AP_S, AP_M, AP_L``)."""
FEEDBACK_EPS = 0.01


def size_weights(area: torch.Tensor, a: float = DEFAULTS["a"], tau: float = DEFAULTS["tau"]) -> torch.Tensor:
    """``1 + a * exp(-area / tau)``: monotone, falling from ``1 + a`` at area 0 towards 1 for large boxes."""
    return 1 + a * torch.exp(-area.clamp(min=0) / tau)


def size_config(cfg: dict | bool | None) -> dict | None:
    """The checked ``size_aware`` entry of a YAML: ``{a, tau, feedback, bucket_weights}`` (True: the defaults;
    None/False/{}: off). ``feedback`` is None (v1) or ``{gamma, momentum, max}``; ``bucket_weights`` is None or the
    current ``[w_S, w_M, w_L]`` (``[1, 1, 1]`` when feedback starts)."""
    if not cfg:
        return None
    cfg = {**DEFAULTS, **(cfg if isinstance(cfg, dict) else {})}
    unknown = sorted(set(cfg) - {*DEFAULTS, "feedback", "bucket_weights"})
    if unknown or cfg["a"] < 0 or cfg["tau"] <= 0:
        raise ValueError(f"size_aware: takes a >= 0 and tau > 0 (and feedback, bucket_weights) only, got {cfg}")
    out = {k: float(cfg[k]) for k in DEFAULTS}
    fb = cfg.get("feedback")
    if fb:
        fb = {**FEEDBACK_DEFAULTS, **(fb if isinstance(fb, dict) else {})}
        bad = sorted(set(fb) - set(FEEDBACK_DEFAULTS))
        if bad or fb["gamma"] < 0 or not 0 < fb["momentum"] <= 1 or fb["max"] < 1:
            raise ValueError(f"size_aware feedback: takes gamma >= 0, 0 < momentum <= 1 and max >= 1 only, got {fb}")
        fb = {k: float(v) for k, v in fb.items()}
    out["feedback"] = fb or None
    weights = cfg.get("bucket_weights") or ([1.0] * len(BUCKETS) if fb else None)
    if weights is not None and (len(weights) != len(BUCKETS) or any(not w > 0 for w in weights)):
        raise ValueError(f"size_aware bucket_weights: {len(BUCKETS)} positive weights (S, M, L), got {weights}")
    out["bucket_weights"] = [float(w) for w in weights] if weights is not None else None
    return out


def box_weights(area: torch.Tensor, cfg: dict, real: torch.Tensor | None = None) -> torch.Tensor:
    """Per box weights for ``area`` under a :func:`size_config`: ``size_weights`` times the box's bucket weight (v2),
    divided by their mean over the ``real`` boxes (all when None); 1 elsewhere."""
    w = size_weights(area, cfg["a"], cfg["tau"])
    if cfg.get("bucket_weights"):
        bounds = torch.tensor(BUCKET_AREAS, device=area.device, dtype=area.dtype)
        w = (
            w
            * torch.tensor(cfg["bucket_weights"], device=w.device, dtype=w.dtype)[
                torch.bucketize(area, bounds, right=True)
            ]
        )
    real = torch.ones_like(w, dtype=torch.bool) if real is None else real.reshape(w.shape).bool()
    if real.any():
        w = w / w[real].mean()
    return torch.where(real, w, torch.ones_like(w))


def normalised_box_weights(
    gt_bboxes: torch.Tensor, mask_gt: torch.Tensor, a: float, tau: float, bucket_weights: list | None = None
) -> torch.Tensor:
    """Per ground-truth box weights ``(B, N)`` for padded ``xyxy`` boxes ``(B, N, 4)``, mean 1 over the real boxes."""
    area = (gt_bboxes[..., 2] - gt_bboxes[..., 0]) * (gt_bboxes[..., 3] - gt_bboxes[..., 1])
    return box_weights(area, {"a": a, "tau": tau, "bucket_weights": bucket_weights}, mask_gt)


def feedback_update(weights: list[float], ap: dict, feedback: dict) -> list[float]:
    """The v2 rule (module docstring): new ``[w_S, w_M, w_L]`` from the current ones and a validation's
    ``{"S": AP_S, "M": AP_M, "L": AP_L}`` (None or negative: no ground truth in that bucket, weight kept)."""
    scores = {b: ap.get(b) for b in BUCKETS}
    known = {b: float(v) for b, v in scores.items() if v is not None and v >= 0 and math.isfinite(v)}
    if not known:
        return list(weights)
    mean, g, m, hi = sum(known.values()) / len(known), feedback["gamma"], feedback["momentum"], feedback["max"]
    out = []
    for b, w in zip(BUCKETS, weights):
        if b in known:
            target = min(max(((mean + FEEDBACK_EPS) / (known[b] + FEEDBACK_EPS)) ** g, 1 / hi), hi)
            w = (1 - m) * w + m * target
        out.append(float(w))
    return out


class SizeWeightedAssigner(torch.nn.Module):
    """Wraps Ultralytics' ``TaskAlignedAssigner``: same assignment, target scores scaled by the box weights."""

    def __init__(self, assigner, a: float = DEFAULTS["a"], tau: float = DEFAULTS["tau"], bucket_weights=None):
        super().__init__()
        if a < 0 or tau <= 0:
            raise ValueError(f"size_aware: need a >= 0 and tau > 0, got a={a}, tau={tau}")
        self.assigner, self.a, self.tau = assigner, float(a), float(tau)
        self.bucket_weights = list(bucket_weights) if bucket_weights else None

    def forward(self, pd_scores, pd_bboxes, anc_points, gt_labels, gt_bboxes, mask_gt, **kwargs):
        labels, bboxes, scores, fg_mask, gt_idx = self.assigner(
            pd_scores, pd_bboxes, anc_points, gt_labels, gt_bboxes, mask_gt, **kwargs
        )
        if gt_bboxes.shape[1] == 0:
            return labels, bboxes, scores, fg_mask, gt_idx
        w = normalised_box_weights(gt_bboxes, mask_gt, self.a, self.tau, self.bucket_weights)
        per_anchor = torch.gather(w, 1, gt_idx.long()) * fg_mask
        return labels, bboxes, scores * per_anchor.unsqueeze(-1).to(scores.dtype), fg_mask, gt_idx

    def __getattr__(self, name):  # attributes the loss reads from the assigner (topk, num_classes, ...)
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("assigner"), name)


def _loss_parts(criterion) -> list:
    """The losses inside ``criterion`` that weight boxes: itself, or an end-to-end loss's two."""
    return [getattr(criterion, k) for k in ("one2many", "one2one") if hasattr(criterion, k)] or [criterion]


def make_size_aware(criterion, cfg: dict | bool | None):
    """Switch an Ultralytics detection loss to size-aware weighting per ``cfg`` (``{a, tau}``; True for defaults).

    An end-to-end loss (``one2many`` + ``one2one``, YOLOv10/YOLO26 heads) gets both of its assigners weighted; a loss
    without an assigner is refused (:class:`UnsupportedOptionError`), never left silently unweighted."""
    cfg = size_config(cfg)
    if cfg is None:
        return criterion
    for part in _loss_parts(criterion):
        if not isinstance(getattr(part, "assigner", None), torch.nn.Module):
            raise UnsupportedOptionError(
                f"size_aware: {type(criterion).__name__} has no assigner whose targets could be weighted; "
                "remove size_aware or use a Detect or YOLOXDetect head"
            )
        if not isinstance(part.assigner, SizeWeightedAssigner):
            part.assigner = SizeWeightedAssigner(part.assigner, cfg["a"], cfg["tau"], cfg["bucket_weights"])
    return criterion


def set_bucket_weights(criterion, weights: list[float]) -> None:
    """Give a size-aware criterion (either head's) new bucket weights in place (the loss keeps its other state)."""
    if isinstance(getattr(criterion, "size_aware", None), dict):  # YOLOXLoss
        criterion.size_aware["bucket_weights"] = list(weights)
        return
    for part in _loss_parts(criterion):
        if isinstance(getattr(part, "assigner", None), SizeWeightedAssigner):
            part.assigner.bucket_weights = list(weights)
