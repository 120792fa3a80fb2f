"""Import RVT Lightning checkpoints (``mdl.backbone.*``, ``mdl.fpn.*``) into our recurrent detection models.

The backbone maps onto ``model.model[0]`` (:func:`recurrent.load_rvt_backbone`). RVT's YOLOX PAFPN maps onto the
stock-layer neck of the ``rvt-*-3scale.yaml`` models, whose YAML key ``rvt_pafpn`` names the row of each RVT layer:
RVT's ``BaseConv`` and Ultralytics' ``Conv`` share their inner names (``conv``, ``bn``), and RVT's ``CSPLayer``
(``conv1, conv2, conv3, m.j.conv1, m.j.conv2``) is Ultralytics' ``C3`` (``cv1, cv2, cv3, m.j.cv1, m.j.cv2``). RVT's
BatchNorms use PyTorch's eps 1e-5 (Ultralytics sets 1e-3), so imported neck BNs get RVT's eps. RVT's YOLOX head
(``mdl.yolox_head.*``) has no counterpart in the ``Detect`` head: it is reported as not loaded.

Usage:
    >>> from yolo_etram import EventYOLO
    >>> model = EventYOLO("rvt-b-3scale.yaml")
    >>> print(model.load_rvt("rvt-b.ckpt"))
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from recurrent import load_rvt_backbone, read_rvt_state_dict

_CSP_NAMES = ((r"\.conv1\.", ".cv1."), (r"\.conv2\.", ".cv2."), (r"\.conv3\.", ".cv3."))


@dataclass
class RVTImportReport:
    """What :func:`load_rvt_checkpoint` loaded and what it could not place."""

    backbone: int = 0
    neck: int = 0
    not_loaded: list[str] = field(default_factory=list)  # RVT keys with no place in this model
    missing: list[str] = field(default_factory=list)  # our neck keys the checkpoint did not provide

    def __str__(self) -> str:
        heads = [k for k in self.not_loaded if ".yolox_head." in k or k.startswith("yolox_head.")]
        other = [k for k in self.not_loaded if k not in heads]
        s = f"RVT import: {self.backbone} backbone and {self.neck} neck tensors loaded"
        if heads:
            s += f"; {len(heads)} YOLOX head tensors not loaded (this model's Detect head is trained anew)"
        if other:
            s += f"; {len(other)} other tensors not loaded: {', '.join(other[:8])}{' ...' if len(other) > 8 else ''}"
        if self.missing:
            s += f"; {len(self.missing)} neck tensors missing from the checkpoint: {', '.join(self.missing[:8])}"
        return s


def _strip(sd: dict) -> dict:
    return {k[4:] if k.startswith("mdl.") else k: v for k, v in sd.items()}


def rvt_pafpn_state_dict(sd: dict, rows: dict[str, int]) -> dict[str, torch.Tensor]:
    """RVT ``fpn.*`` tensors renamed to ``model.<row>.*`` keys of our neck."""
    out = {}
    for key, tensor in sd.items():
        if not key.startswith("fpn."):
            continue
        name, rest = key[4:].split(".", 1)
        if name not in rows:
            continue
        rest = "." + rest
        if name.startswith("C3_"):
            for pattern, repl in _CSP_NAMES:
                rest = re.sub(pattern, repl, rest)
        out[f"model.{rows[name]}{rest}"] = tensor
    return out


def load_rvt_checkpoint(model: nn.Module, path_or_sd: str | Path | dict, allow_unsafe_pickle: bool = False) -> RVTImportReport:
    """Load an RVT checkpoint's backbone (and PAFPN where the YAML maps it) into a ``RecurrentDetectionModel``.

    Shapes are checked; a backbone that does not match (another size, another class count) raises ``RuntimeError``.
    """
    sd = read_rvt_state_dict(path_or_sd, allow_unsafe_pickle) if isinstance(path_or_sd, (str, Path)) else path_or_sd
    sd = _strip(dict(sd))
    report = RVTImportReport()
    report.backbone = len(load_rvt_backbone(model.model[0], {f"backbone.{k[9:]}": v for k, v in sd.items()
                                                             if k.startswith("backbone.")}, strict=True).loaded)
    rows = (getattr(model, "yaml", None) or {}).get("rvt_pafpn") or {}
    neck = rvt_pafpn_state_dict(sd, rows)
    own = model.state_dict()
    bad = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in neck.items() if k in own and v.shape != own[k].shape]
    if bad or any(k not in own for k in neck):
        raise RuntimeError(f"RVT PAFPN weights do not fit this model: shape mismatches {bad[:4]}, "
                           f"unknown keys {[k for k in neck if k not in own][:4]}")
    model.load_state_dict(neck, strict=False)
    report.neck = len(neck)
    prefixes = {f"model.{r}." for r in rows.values()}
    report.missing = [k for k in own if any(k.startswith(p) for p in prefixes) and k not in neck]
    for r in rows.values():
        for m in model.model[r].modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eps, m.momentum = 1e-5, 0.1  # RVT's (PyTorch default) BatchNorm settings
    used_fpn = {f"fpn.{n}." for n in rows}
    report.not_loaded = [k for k in sd if not k.startswith("backbone.") and not any(k.startswith(p) for p in used_fpn)]
    return report
