"""Load the backbone of an RVT (PyTorch Lightning) checkpoint into :class:`RecurrentMaxViT`.

RVT checkpoints hold ``{'state_dict': {'mdl.backbone.stages.{s}....': tensor, 'mdl.fpn....', ...}, ...}``.
Only the name differs between RVT's layers and ours; no tensor needs reshaping: RVT's qkv is the
head-interleaved layout (``[q_h, k_h, v_h]`` per head) that timm's ``AttentionCl(head_first=True)`` uses, and the
LSTM 1x1 conv keeps RVT's input order ``cat[x, h]`` and gate order f, i, o, g.

Usage::

    model = rvt_base(partition_size=(6, 10))
    report = load_rvt_backbone(model, 'rvt-b.ckpt')
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from .maxvit_rnn import RVT_CFGS, RecurrentMaxViTCfg

__all__ = [
    "LIGHTNING_PREFIX",
    "RVT_BACKBONE_PREFIXES",
    "LoadReport",
    "strip_lightning_prefix",
    "read_rvt_state_dict",
    "rvt_backbone_state_dict",
    "convert_rvt_backbone_state_dict",
    "infer_rvt_backbone_cfg",
    "load_rvt_backbone",
]

LIGHTNING_PREFIX = "mdl."  # RVT's Lightning module holds the detector as ``self.mdl``
RVT_BACKBONE_PREFIXES = (LIGHTNING_PREFIX + "backbone.", "backbone.")

# (RVT name regex, our name template), applied in order to the key with the backbone prefix removed.
_KEY_RULES: tuple[tuple[str, str], ...] = (
    (r"^stages\.(\d+)\.downsample_cf2cl\.(conv|norm)\.", r"stages.\1.downsample.\2."),
    (r"^stages\.(\d+)\.att_blocks\.(\d+)\.att_window\.", r"stages.\1.blocks.\2.window."),
    (r"^stages\.(\d+)\.att_blocks\.(\d+)\.att_grid\.", r"stages.\1.blocks.\2.grid."),
    (r"\.self_attn\.(qkv|proj)\.", r".attn.\1."),
    (r"\.mlp\.net\.0\.0\.", r".mlp.fc1."),
    (r"\.mlp\.net\.2\.", r".mlp.fc2."),
    (r"^stages\.(\d+)\.lstm\.conv3x3_dws\.", r"stages.\1.lstm.dws_conv."),
)

StateDict = dict[str, torch.Tensor]

NOT_IN_RVT = re.compile(r"\.temporal_attention\.")
"""Backbone tensors of layers that RVT does not have: a checkpoint never holds them, they start fresh (a fresh temporal
attention is an exact no-op: its LayerScale starts at 0)."""


@dataclass
class LoadReport:
    """Outcome of :func:`load_rvt_backbone` (key names are ours, i.e. after conversion)."""

    loaded: list[str] = field(default_factory=list)
    missing_keys: list[str] = field(default_factory=list)
    fresh_keys: list[str] = field(default_factory=list)  # layers RVT does not have (temporal attention): new by design
    unexpected_keys: list[str] = field(default_factory=list)
    shape_mismatches: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(
        default_factory=list
    )  # name, ckpt, model

    @property
    def ok(self) -> bool:
        return not (self.missing_keys or self.unexpected_keys or self.shape_mismatches)

    def __str__(self) -> str:
        lines = [f"loaded {len(self.loaded)} tensors"]
        if self.missing_keys:
            lines.append(f"missing ({len(self.missing_keys)}): {', '.join(self.missing_keys)}")
        if self.fresh_keys:
            lines.append(f"starting fresh (not in RVT): {len(self.fresh_keys)} temporal-attention tensors")
        if self.unexpected_keys:
            lines.append(f"unexpected ({len(self.unexpected_keys)}): {', '.join(self.unexpected_keys)}")
        for name, ckpt_shape, model_shape in self.shape_mismatches:
            lines.append(f"shape mismatch {name}: checkpoint {ckpt_shape} vs model {model_shape}")
        return "; ".join(lines)


def read_rvt_state_dict(path: str | Path, allow_unsafe_pickle: bool = False) -> StateDict:
    """Read the full ``state_dict`` of an RVT ``.ckpt`` (or of a plain saved state dict).

    Uses ``torch.load(weights_only=True)``, which refuses Lightning checkpoints whose extra entries name other classes
    (omegaconf's ``DictConfig`` in ``hyper_parameters``); ``yolo_etram.nn.lightning_checkpoint`` reads those without
    running anything. ``allow_unsafe_pickle=True`` unpickles fully, which runs code from the file: trusted files only.
    """
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if not allow_unsafe_pickle:
            reason = next((line.strip() for line in str(e).splitlines() if "Unsupported global" in line), "see above")
            raise RuntimeError(
                f"{path}: cannot be read with torch.load(weights_only=True) ({reason}); read it with "
                "yolo_etram.nn.lightning_checkpoint.read_lightning_checkpoint, which runs nothing from the file, or, "
                "only if you trust it, pass allow_unsafe_pickle=True (full unpickling can run arbitrary code)"
            ) from e
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(ckpt, Mapping) and "state_dict" in ckpt:
        ckpt = ckpt["state_dict"]
    if not isinstance(ckpt, Mapping):
        raise ValueError(f"{path}: expected a checkpoint dict with a state_dict, got {type(ckpt).__name__}")
    return dict(ckpt)


def strip_lightning_prefix(sd: Mapping[str, torch.Tensor]) -> StateDict:
    """An RVT state dict with the Lightning module's ``mdl.`` prefix removed (keys without it are kept as they are)."""
    return {k[len(LIGHTNING_PREFIX) :] if k.startswith(LIGHTNING_PREFIX) else k: v for k, v in sd.items()}


def rvt_backbone_state_dict(sd: Mapping[str, torch.Tensor]) -> StateDict:
    """The backbone entries of an RVT state dict, with the ``mdl.backbone.`` (or ``backbone.``) prefix removed.

    Keys that already start with ``stages.`` (a bare backbone state dict) are kept as they are.
    """
    for prefix in RVT_BACKBONE_PREFIXES:
        found = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
        if found:
            return found
    return {k: v for k, v in sd.items() if k.startswith("stages.")}


def _convert_key(key: str) -> str:
    for pattern, template in _KEY_RULES:
        key = re.sub(pattern, template, key)
    return key


def convert_rvt_backbone_state_dict(sd: Mapping[str, torch.Tensor]) -> StateDict:
    """Map RVT backbone weights (full RVT state dict or backbone-only) to :class:`RecurrentMaxViT` names.

    Tensors are returned unchanged (no layout permutation is needed). Keys without a rule (e.g. RVT's unused
    ``mask_token``) keep their RVT name, so loading reports them as unexpected.
    """
    return {_convert_key(k): v for k, v in rvt_backbone_state_dict(sd).items()}


def infer_rvt_backbone_cfg(
    sd: Mapping[str, torch.Tensor],
    dim_head: int | None = None,
    partition_size: tuple[int, int] = (6, 10),
) -> RecurrentMaxViTCfg:
    """Infer the backbone configuration from RVT weights.

    ``dim_head`` does not show in any shape (qkv is ``(3C, C)`` for any head count). When None, it is taken from
    the RVT size preset with the same ``embed_dim`` (T: 32, S: 24, B: 32).
    """
    sd = convert_rvt_backbone_state_dict(sd)
    stage_ids = sorted({int(m.group(1)) for k in sd if (m := re.match(r"stages\.(\d+)\.", k))})
    if not stage_ids:
        raise ValueError("no RVT backbone weights (stages.*) found in the state dict")
    stem = sd["stages.0.downsample.conv.weight"]
    embed_dim, in_channels, kernel = stem.shape[0], stem.shape[1], stem.shape[-1]
    dims = [sd[f"stages.{s}.downsample.conv.weight"].shape[0] for s in stage_ids]
    num_blocks = tuple(
        len({int(m.group(1)) for k in sd if (m := re.match(rf"stages\.{s}\.blocks\.(\d+)\.", k))}) for s in stage_ids
    )
    mlp_hidden = sd["stages.0.blocks.0.window.mlp.fc1.weight"].shape[0]
    if dim_head is None:
        presets = {cfg.embed_dim: cfg.dim_head for cfg in RVT_CFGS.values()}
        if embed_dim not in presets:
            raise ValueError(f"embed_dim {embed_dim} matches no RVT preset: pass dim_head explicitly")
        dim_head = presets[embed_dim]
    return RecurrentMaxViTCfg(
        in_channels=in_channels,
        embed_dim=embed_dim,
        dim_multiplier=tuple(d // embed_dim for d in dims),
        num_blocks=num_blocks,
        dim_head=dim_head,
        partition_size=tuple(partition_size),
        mlp_ratio=mlp_hidden / embed_dim,
        lstm_kernel=3 if "stages.0.lstm.dws_conv.weight" in sd else 1,
        stem_stride=(kernel - 1) // 2 + 1,
    )


def load_rvt_backbone(
    model: nn.Module,
    path_or_sd: str | Path | Mapping[str, torch.Tensor],
    strict: bool = True,
    allow_unsafe_pickle: bool = False,
) -> LoadReport:
    """Copy RVT backbone weights into ``model`` (a :class:`RecurrentMaxViT`).

    Args:
        model: the backbone to load into.
        path_or_sd: an RVT ``.ckpt`` path, or an RVT state dict (full with ``mdl.`` prefix, or backbone-only).
        strict: raise ``RuntimeError`` on missing, unexpected or mis-shaped tensors (nothing is loaded then).
        allow_unsafe_pickle: see :func:`read_rvt_state_dict`.

    Returns:
        A :class:`LoadReport`. With ``strict=False`` every tensor that matches by name and shape is loaded.
    """
    if isinstance(path_or_sd, (str, Path)):
        path_or_sd = read_rvt_state_dict(path_or_sd, allow_unsafe_pickle=allow_unsafe_pickle)
    converted = convert_rvt_backbone_state_dict(path_or_sd)
    own = model.state_dict()

    report = LoadReport()
    report.fresh_keys = [k for k in own if k not in converted and NOT_IN_RVT.search(k)]
    report.missing_keys = [k for k in own if k not in converted and not NOT_IN_RVT.search(k)]
    report.unexpected_keys = [k for k in converted if k not in own]
    to_load = {}
    for name, tensor in converted.items():
        if name not in own:
            continue
        if tuple(tensor.shape) != tuple(own[name].shape):
            report.shape_mismatches.append((name, tuple(tensor.shape), tuple(own[name].shape)))
            continue
        to_load[name] = tensor
    if strict and not report.ok:
        raise RuntimeError(f"RVT backbone weights do not match the model: {report}")
    model.load_state_dict(to_load, strict=False)
    report.loaded = sorted(to_load)
    return report
