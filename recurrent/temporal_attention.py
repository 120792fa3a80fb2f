"""Temporal attention over a stage's recurrent features: each pixel attends to its own last K windows.

After a stage's ConvLSTM, the hidden map ``h_t`` is the query; the keys and values are ``h_t`` itself and the
stage's hidden maps of the last ``K`` windows at the same pixel, each with a learned embedding of its lag (0 = now,
``j`` = ``j`` windows ago). Multi-head scaled dot-product attention over those ``K + 1`` tokens, a projection, and a
LayerScale add the result to ``h_t``::

    y_t = h_t + gamma * W_o attn(q = W_q LN(h_t), k_j = W_k LN(h_{t-j}) + e_j, v_j = W_v LN(h_{t-j})),  j = 0..K

Slots of the memory not yet filled since the last reset are masked out (the current window always attends to
itself, so no row is empty). ``gamma`` starts at ``layer_scale_init`` (0 by default: a fresh or RVT-imported model
predicts exactly as without the attention until training moves it). The LSTM's own state is untouched: the
attention reads the memory, it does not feed the recurrence.

The memory is a recurrent state under the protocol of :mod:`recurrent.state`, one ``(h, c)`` pair per attended
stage: ``h`` the last K hidden maps stacked on channels ``(B, K * C, H, W)``, newest first; ``c`` the slots'
validity ``(B, K, 1, 1)`` (1 = filled). A reset zeroes both, so a new sequence never sees the previous one's
windows. Both stay float32 under autocast.

Example::

    attn = TemporalAttention(dim=64, memory=4)
    mem = None                                       # zeros: a new sequence
    y, mem = attn.forward_sequence(torch.rand(2, 5, 64, 48, 80), mem)  # B=2 clips of T=5 windows
    h, valid = mem                                   # (2, 256, 48, 80), (2, 4, 1, 1): the last 4 windows
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import lstm_compute_dtype

__all__ = ["TemporalAttentionCfg", "TemporalAttention", "MemoryState"]

MemoryState = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class TemporalAttentionCfg:
    """Where and how far back the backbone attends: ``memory`` K past windows, on ``stages`` (1-based, as RVT's
    ``in_stages``: 1 is stride 4), ``dim_head`` channels per head (default: the backbone's), ``layer_scale_init``."""

    memory: int = 4
    stages: tuple[int, ...] = (1, 2, 3, 4)
    dim_head: int | None = None
    layer_scale_init: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(int(s) for s in self.stages))
        if int(self.memory) < 1:
            raise ValueError(f"temporal_attention: memory must be >= 1 past window, got {self.memory}")
        if not self.stages or len(set(self.stages)) != len(self.stages):
            raise ValueError(f"temporal_attention: stages must be distinct stage numbers, got {list(self.stages)}")

    @classmethod
    def parse(cls, value: TemporalAttentionCfg | dict | None) -> TemporalAttentionCfg | None:
        """A config from a model YAML's ``temporal_attention`` mapping (unknown keys: one-line error), or None."""
        if value is None or isinstance(value, cls):
            return value
        if not isinstance(value, dict):
            raise TypeError(
                f"temporal_attention: expected a mapping such as {{memory: 4, stages: [1, 2]}}, got {value!r}"
            )
        unknown = set(value) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(
                f"temporal_attention: unknown key(s) {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}"
            )
        return cls(**value)


class TemporalAttention(nn.Module):
    """Per-pixel multi-head attention from the current window's features to the same pixel's last K windows.

    Args:
        dim: channels of the stage's features.
        memory: K, the number of past windows kept.
        dim_head: channels per head (``dim`` must divide by it).
        layer_scale_init: the initial LayerScale ``gamma`` (0: an exact no-op at initialisation).
    """

    def __init__(self, dim: int, memory: int = 4, dim_head: int = 32, layer_scale_init: float = 0.0) -> None:
        super().__init__()
        dim_head = min(dim_head, dim)
        if dim % dim_head:
            raise ValueError(f"TemporalAttention: dim {dim} does not divide into heads of {dim_head} channels")
        self.dim, self.memory, self.num_heads = dim, int(memory), dim // dim_head
        self.norm = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.lag = nn.Parameter(torch.zeros(self.memory + 1, dim))  # key embedding of lag 0 (now) .. K
        self.proj = nn.Linear(dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), float(layer_scale_init)))
        nn.init.trunc_normal_(self.lag, std=0.02)

    def state_shapes(self, batch_size: int, height: int, width: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Shapes of the memory ``h`` (the last K maps) and ``c`` (their validity) for a stage map of that size."""
        return (batch_size, self.memory * self.dim, height, width), (batch_size, self.memory, 1, 1)

    def _attend(self, x: torch.Tensor, past: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """``x`` (B, C, H, W), ``past`` (B, K, C, H, W), ``valid`` (B, K) -> ``x`` plus the attended read-out."""
        B, C, H, W = x.shape
        tokens = torch.cat([x.unsqueeze(1), past.to(x.dtype)], 1)  # (B, K+1, C, H, W)
        tokens = self.norm(tokens.permute(0, 3, 4, 1, 2).reshape(B * H * W, self.memory + 1, C))  # a sequence per pixel
        q = self.q(tokens[:, :1])  # (BHW, 1, C)
        k, v = self.kv(tokens).chunk(2, dim=-1)
        k = k + self.lag.to(k.dtype)
        q, k, v = (t.unflatten(-1, (self.num_heads, -1)).transpose(1, 2) for t in (q, k, v))  # (BHW, heads, n, d)
        mask = torch.cat([valid.new_ones(B, 1), valid], 1).bool()  # the current window always attends to itself
        mask = mask.view(B, 1, 1, 1, -1).expand(B, H * W, 1, 1, self.memory + 1).reshape(B * H * W, 1, 1, -1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (BHW, heads, 1, d)
        out = self.proj(out.transpose(1, 2).reshape(B, H, W, C))
        return x + (self.gamma.to(out.dtype) * out).permute(0, 3, 1, 2)

    def forward_sequence(self, x: torch.Tensor, state: MemoryState | None = None) -> tuple[torch.Tensor, MemoryState]:
        """Run ``T`` windows ``(B, T, C, H, W)`` from ``state`` (None: an empty memory). Returns the attended
        features ``(B, T, C, H, W)`` and the memory after the last window."""
        B, T, C, H, W = x.shape
        dtype = lstm_compute_dtype(x.dtype)
        if state is None:
            past = x.new_zeros((B, self.memory, C, H, W), dtype=dtype)
            valid = x.new_zeros((B, self.memory), dtype=dtype)
        else:
            past = state[0].to(dtype).unflatten(1, (self.memory, C))
            valid = state[1].to(dtype).flatten(1)
        out = []
        for t in range(T):
            out.append(self._attend(x[:, t], past, valid))
            past = torch.cat([x[:, t].to(dtype).unsqueeze(1), past[:, :-1]], 1)  # newest first, oldest dropped
            valid = torch.cat([valid.new_ones(B, 1), valid[:, :-1]], 1)
        return torch.stack(out, 1), (past.flatten(1, 2), valid.view(B, self.memory, 1, 1))


def build_temporal_attention(
    cfg: TemporalAttentionCfg | None, dims: Sequence[int], dim_head: int
) -> list[TemporalAttention | None]:
    """One :class:`TemporalAttention` per backbone stage where ``cfg`` asks for it, else None."""
    if cfg is None:
        return [None] * len(dims)
    bad = [s for s in cfg.stages if not 1 <= s <= len(dims)]
    if bad:
        raise ValueError(f"temporal_attention: stages {bad} out of range; the backbone has stages 1-{len(dims)}")
    return [
        TemporalAttention(d, cfg.memory, cfg.dim_head or dim_head, cfg.layer_scale_init)
        if i + 1 in cfg.stages
        else None
        for i, d in enumerate(dims)
    ]
