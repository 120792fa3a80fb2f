"""Building blocks of the recurrent MaxViT backbone (RVT).

* :class:`ConvDownsample`: overlapping strided conv + LayerNorm, NCHW in, NHWC out.
* :class:`MaxViTAttentionPair`: window attention then grid attention, timm's ``PartitionAttentionCl``.
* :class:`ConvLSTMCell`: RVT's 1x1 convolutional LSTM (gate order f, i, o, g), computed in float32.

Everything here is plain PyTorch + timm; none of it knows about recurrent state storage.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from timm.layers import to_2tuple
from timm.models.maxxvit import MaxxVitTransformerCfg, PartitionAttentionCl

__all__ = ["ConvDownsample", "MaxViTAttentionPair", "ConvLSTMCell", "LstmState", "lstm_compute_dtype"]

LstmState = tuple[torch.Tensor, torch.Tensor]


class ConvDownsample(nn.Module):
    """Strided overlapping conv followed by a channels-last LayerNorm (RVT's ``ConvDownsampling_Cf2Cl``).

    The kernel is ``2 * (factor - 1) + 1`` (7 for the stride-4 stem, 3 for stride 2), padding ``kernel // 2``,
    no conv bias. Input ``(N, C_in, H, W)``, output ``(N, H / factor, W / factor, C_out)``.
    """

    def __init__(self, in_channels: int, out_channels: int, factor: int, norm_eps: float = 1e-5) -> None:
        super().__init__()
        kernel_size = 2 * (factor - 1) + 1
        self.factor = factor
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size=kernel_size, stride=factor, padding=kernel_size // 2, bias=False
        )
        self.norm = nn.LayerNorm(out_channels, eps=norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x).permute(0, 2, 3, 1))


class MaxViTAttentionPair(nn.Module):
    """Window (local) attention followed by grid (dilated global) attention, channels-last ``(N, H, W, C)``.

    Both sub-blocks are timm's pre-norm ``PartitionAttentionCl`` (attention + LayerScale, MLP + LayerScale)
    configured like RVT: qkv and proj biases, no relative position bias, LayerNorm eps 1e-5, exact GELU.
    ``skip_first_norm`` replaces the window block's first LayerNorm by Identity (RVT does this for the first
    pair of a stage, whose input is already normalised by the downsampling layer).
    Partitions hold no weights, so :meth:`set_partition_size` can change them at any time.
    """

    def __init__(
        self,
        dim: int,
        dim_head: int = 32,
        partition_size: tuple[int, int] = (6, 10),
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        layer_scale_init: float = 1e-5,
        skip_first_norm: bool = False,
    ) -> None:
        super().__init__()
        partition_size = to_2tuple(partition_size)
        cfg = MaxxVitTransformerCfg(
            dim_head=dim_head,
            expand_ratio=mlp_ratio,
            attn_bias=True,
            head_first=True,  # qkv features interleaved per head: [q_h, k_h, v_h] for h in heads, as in RVT
            rel_pos_type="",
            init_values=layer_scale_init,
            act_layer="gelu",
            norm_layer_cl="layernorm",
            norm_eps=1e-5,
            window_size=partition_size,
            grid_size=partition_size,
        )
        self.window = PartitionAttentionCl(dim, partition_type="block", cfg=cfg, drop_path=drop_path)
        self.grid = PartitionAttentionCl(dim, partition_type="grid", cfg=cfg, drop_path=drop_path)
        if skip_first_norm:
            self.window.norm1 = nn.Identity()
        for block in (self.window, self.grid):
            # timm turns SDPA off under its `exportable` flag or TIMM_FUSED_ATTN=0; we always want the fused kernel
            # (torch's ONNX exporters handle scaled_dot_product_attention). No rel-pos bias, so the default
            # SDPA scale dim_head ** -0.5 is the right one.
            block.attn.fused_attn = True

    @property
    def partition_size(self) -> tuple[int, int]:
        return tuple(self.window.partition_size)

    def set_partition_size(self, partition_size: tuple[int, int]) -> None:
        self.window.set_partition_size(to_2tuple(partition_size))
        self.grid.set_partition_size(to_2tuple(partition_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.grid(self.window(x))


def lstm_compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """dtype of the LSTM math and state for an input dtype: at least float32 (fp16/bf16 are promoted)."""
    return torch.promote_types(dtype, torch.float32)


class ConvLSTMCell(nn.Module):
    """RVT's convolutional LSTM cell (``DWSConvLSTM2d`` with ``dws_conv_only_hidden=True``), NCHW.

    ``z = conv1x1(cat[x, dws(h)])`` with ``2C -> 4C`` channels and bias, split into gates in the order
    **f, i, o, g** (not ``nn.LSTM``'s i, f, g, o)::

        c_t = sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(g)
        h_t = sigmoid(o) * tanh(c_t)

    ``kernel_size=3`` adds RVT's optional depthwise 3x3 conv (with bias) on ``h_{t-1}``; the default 1 omits it.

    The math and the returned ``(h, c)`` are at least float32 and run with autocast disabled, so the recurrent
    state never accumulates fp16/bf16 rounding over long sequences.
    """

    def __init__(self, dim: int, kernel_size: int = 1) -> None:
        super().__init__()
        if kernel_size not in (1, 3):
            raise ValueError(f"ConvLSTMCell: kernel_size must be 1 or 3 (RVT dws_conv), got {kernel_size}")
        self.dim = dim
        self.dws_conv = (
            nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim) if kernel_size > 1 else nn.Identity()
        )
        self.conv1x1 = nn.Conv2d(2 * dim, 4 * dim, kernel_size=1)

    def _weights(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """1x1 weight split into its x and h halves (cat[x, h] order), and the bias, in ``dtype``."""
        weight = self.conv1x1.weight.to(dtype)
        return weight[:, : self.dim], weight[:, self.dim :], self.conv1x1.bias.to(dtype)

    def _recurrent_input(self, h: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if isinstance(self.dws_conv, nn.Identity):
            return h
        return F.conv2d(
            h,
            self.dws_conv.weight.to(dtype),
            self.dws_conv.bias.to(dtype),
            padding=self.dws_conv.padding,
            groups=self.dim,
        )

    def _gate_step(self, x_gates: torch.Tensor, h: torch.Tensor, c: torch.Tensor, w_h: torch.Tensor) -> LstmState:
        z = x_gates + F.conv2d(self._recurrent_input(h, x_gates.dtype), w_h)
        f, i, o, g = z.chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c

    def forward_sequence(
        self,
        x: torch.Tensor,
        state: LstmState | None = None,
    ) -> tuple[torch.Tensor, LstmState]:
        """Run ``T`` steps on ``x`` of shape ``(B, T, C, H, W)``.

        The input half of the 1x1 conv runs once, batched over all ``B * T`` frames; only the recurrent half
        loops over time. Returns the hidden states of all steps ``(B, T, C, H, W)`` and the last ``(h, c)``.
        """
        B, T, C, H, W = x.shape
        dtype = lstm_compute_dtype(x.dtype)
        with torch.autocast(device_type=x.device.type, enabled=False):
            w_x, w_h, bias = self._weights(dtype)
            frames = rearrange(x, "b t c h w -> (b t) c h w").to(dtype)
            x_gates = rearrange(F.conv2d(frames, w_x, bias), "(b t) c h w -> b t c h w", b=B)
            if state is None:
                h = c = x.new_zeros((B, C, H, W), dtype=dtype)
            else:
                h, c = state[0].to(dtype), state[1].to(dtype)
            hidden = []
            for t in range(T):
                h, c = self._gate_step(x_gates[:, t], h, c, w_h)
                hidden.append(h)
        return torch.stack(hidden, dim=1), (h, c)

    def forward(self, x: torch.Tensor, state: LstmState | None = None) -> LstmState:
        """One step on ``x`` of shape ``(N, C, H, W)``; ``state`` None means zeros. Returns ``(h, c)``."""
        _, (h, c) = self.forward_sequence(x.unsqueeze(1), state)
        return h, c
