"""RVT's recurrent MaxViT backbone: 4 stages of (downsample conv -> MaxViT attention -> ConvLSTM).

Reference: Gehrig & Scaramuzza, "Recurrent Vision Transformers for Object Detection with Event Cameras",
CVPR 2023 (github.com/uzh-rpg/RVT, ``models/detection/recurrent_backbone/maxvit_rnn.py``). Weights load from RVT
checkpoints with :func:`recurrent.rvt_checkpoint.load_rvt_backbone`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn as nn
from einops import rearrange
from timm.layers import to_2tuple

from .layers import ConvDownsample, ConvLSTMCell, LstmState, MaxViTAttentionPair
from .state import LstmStates, RecurrentStateMixin, StateShape
from .temporal_attention import TemporalAttention, TemporalAttentionCfg, build_temporal_attention

__all__ = [
    "RecurrentMaxViTCfg",
    "RecurrentMaxViTStage",
    "RecurrentMaxViT",
    "RVT_CFGS",
    "rvt_tiny",
    "rvt_small",
    "rvt_base",
]


@dataclass(frozen=True)
class RecurrentMaxViTCfg:
    """Configuration of :class:`RecurrentMaxViT` (defaults: RVT-T on 20-channel stacked histograms)."""

    in_channels: int = 20
    embed_dim: int = 32
    dim_multiplier: tuple[int, ...] = (1, 2, 4, 8)
    num_blocks: tuple[int, ...] = (1, 1, 1, 1)  # MaxViT (window, grid) pairs per stage
    dim_head: int = 32
    partition_size: tuple[int, int] = (6, 10)  # window size = grid size, same for all stages
    mlp_ratio: float = 4.0
    drop_path: float = 0.0
    lstm_kernel: int = 1  # 1: RVT's 1x1 ConvLSTM; 3: adds RVT's depthwise 3x3 conv on h (dws_conv)
    stem_stride: int = 4
    temporal_attention: TemporalAttentionCfg | None = None  # not in RVT: attention over the last K windows


RVT_CFGS = {
    "tiny": RecurrentMaxViTCfg(embed_dim=32, dim_head=32),
    "small": RecurrentMaxViTCfg(embed_dim=48, dim_head=24),
    "base": RecurrentMaxViTCfg(embed_dim=64, dim_head=32),
}


class RecurrentMaxViTStage(nn.Module):
    """One stage: ``ConvDownsample`` -> ``num_blocks`` MaxViT pairs -> ``ConvLSTMCell`` [-> ``TemporalAttention``].

    Downsampling and attention run on all ``B * T`` frames at once; only the LSTM recurrence (and the temporal
    attention's memory) loops over T. Its state is a list of ``(h, c)`` pairs: the LSTM's, then the memory's.
    """

    def __init__(
        self,
        in_channels: int,
        dim: int,
        downsample_factor: int,
        num_blocks: int = 1,
        dim_head: int = 32,
        partition_size: tuple[int, int] = (6, 10),
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        lstm_kernel: int = 1,
        temporal_attention: TemporalAttention | None = None,
    ) -> None:
        super().__init__()
        self.downsample = ConvDownsample(in_channels, dim, downsample_factor)
        self.blocks = nn.Sequential(
            *[
                MaxViTAttentionPair(
                    dim,
                    dim_head=dim_head,
                    partition_size=partition_size,
                    mlp_ratio=mlp_ratio,
                    drop_path=drop_path,
                    skip_first_norm=i == 0,  # the downsample output is already LayerNorm-ed
                )
                for i in range(num_blocks)
            ]
        )
        self.lstm = ConvLSTMCell(dim, kernel_size=lstm_kernel)
        # None is a plain attribute, not an empty module slot (torch's load_state_dict would swallow a checkpoint's
        # temporal_attention.* keys into an empty slot instead of reporting them)
        self.temporal_attention = temporal_attention

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        if "temporal_attention" not in self._modules:  # stages pickled before temporal attention existed
            self.__dict__.setdefault("temporal_attention", None)

    @property
    def num_states(self) -> int:
        """How many ``(h, c)`` pairs this stage carries: the LSTM's, and the temporal attention's memory."""
        return 1 if self.temporal_attention is None else 2

    def state_shapes(self, batch_size: int, height: int, width: int) -> list[StateShape]:
        """Per pair, the shape of h and c (one shape) or of h and of c (a pair), for a stage map ``height x width``."""
        shapes: list[StateShape] = [(batch_size, self.lstm.dim, height, width)]
        if self.temporal_attention is not None:
            shapes.append(self.temporal_attention.state_shapes(batch_size, height, width))
        return shapes

    def set_partition_size(self, partition_size: tuple[int, int]) -> None:
        for block in self.blocks:
            block.set_partition_size(partition_size)

    def forward(
        self,
        x: torch.Tensor,
        batch_size: int,
        states: Sequence[LstmState | None] | None = None,
    ) -> tuple[torch.Tensor, LstmStates]:
        """``x``: ``(B * T, C_in, H, W)`` frames ordered ``b * T + t``; ``states``: :attr:`num_states` pairs (None:
        zeros). Returns ``(B * T, C, H', W')`` and the pairs after the last step."""
        states = list(states) if states is not None else [None] * self.num_states
        x = self.blocks(self.downsample(x))  # channels-last frames
        hidden, lstm_state = self.lstm.forward_sequence(
            rearrange(x, "(b t) h w c -> b t c h w", b=batch_size), states[0]
        )
        new_states = [lstm_state]
        if self.temporal_attention is not None:
            hidden, memory = self.temporal_attention.forward_sequence(hidden, states[1])
            new_states.append(memory)
        return rearrange(hidden, "b t c h w -> (b t) c h w").to(x.dtype), new_states


class RecurrentMaxViT(RecurrentStateMixin, nn.Module):
    """Recurrent MaxViT backbone of RVT, with its LSTM state kept between calls.

    Input ``(N, C, H, W)`` is one time step; ``(B, T, C, H, W)`` runs T steps. Returns the list of the 4 stage
    maps (the LSTM hidden states, strides 4, 8, 16, 32), each ``(B * T, C_s, H / s, W / s)`` with frame index
    ``b * T + t``. H and W must be multiples of ``32 * partition_size`` (pad bottom/right).

    State protocol (see :mod:`recurrent.state`): ``reset(mask)``, implicit reset on batch/shape/device/dtype
    change, always detached between calls, never pickled or deep-copied, float32 under autocast.
    :meth:`forward_with_states` is the side-effect-free functional form (used for ONNX export).

    Example::

        model = rvt_tiny(partition_size=(6, 10)).eval()
        feats = model(torch.rand(2, 5, 20, 384, 640))  # B=2 clips of T=5 windows -> 4 maps (10, C_s, H_s, W_s)
        model.reset(torch.tensor([True, False]))       # slot 0 starts a new sequence
        x = torch.rand(2, 20, 384, 640)
        feats = model(x)                               # one more step; slot 1 continues its sequence
        feats, states = model.forward_with_states(x, model.states)  # functional: model.states untouched
    """

    def __init__(
        self,
        in_channels: int = 20,
        embed_dim: int = 32,
        dim_multiplier: Sequence[int] = (1, 2, 4, 8),
        num_blocks: Sequence[int] = (1, 1, 1, 1),
        dim_head: int = 32,
        partition_size: tuple[int, int] = (6, 10),
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        lstm_kernel: int = 1,
        stem_stride: int = 4,
        temporal_attention: TemporalAttentionCfg | dict | None = None,
    ) -> None:
        super().__init__()
        temporal_attention = TemporalAttentionCfg.parse(temporal_attention)
        if len(dim_multiplier) != len(num_blocks):
            raise ValueError(f"dim_multiplier {dim_multiplier} and num_blocks {num_blocks} differ in length")
        self.cfg = RecurrentMaxViTCfg(
            in_channels=in_channels,
            embed_dim=embed_dim,
            dim_multiplier=tuple(dim_multiplier),
            num_blocks=tuple(num_blocks),
            dim_head=dim_head,
            partition_size=to_2tuple(partition_size),
            mlp_ratio=mlp_ratio,
            drop_path=drop_path,
            lstm_kernel=lstm_kernel,
            stem_stride=stem_stride,
            temporal_attention=temporal_attention,
        )
        self.out_channels: list[int] = [embed_dim * m for m in dim_multiplier]
        self.strides: list[int] = [stem_stride * 2**i for i in range(len(self.out_channels))]
        self._partition_size: tuple[int, int] = to_2tuple(partition_size)

        stages = []
        stage_in = in_channels
        attention = build_temporal_attention(temporal_attention, self.out_channels, dim_head)
        for i, (dim, depth, temporal) in enumerate(zip(self.out_channels, num_blocks, attention)):
            stages.append(
                RecurrentMaxViTStage(
                    stage_in,
                    dim,
                    downsample_factor=stem_stride if i == 0 else 2,
                    num_blocks=depth,
                    dim_head=dim_head,
                    partition_size=self._partition_size,
                    mlp_ratio=mlp_ratio,
                    drop_path=drop_path,
                    lstm_kernel=lstm_kernel,
                    temporal_attention=temporal,
                )
            )
            stage_in = dim
        self.stages = nn.ModuleList(stages)
        self.time_batching = "auto"  # see _steps_one_by_one
        self._init_recurrent_state()

    @classmethod
    def from_cfg(cls, cfg: RecurrentMaxViTCfg, **overrides) -> RecurrentMaxViT:
        return cls(**asdict(replace(cfg, **overrides)))

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    @property
    def partition_size(self) -> tuple[int, int]:
        return self._partition_size

    def set_partition_size(self, partition_size: tuple[int, int]) -> None:
        """Change the window/grid partition of every attention block (partitions hold no weights)."""
        self._partition_size = to_2tuple(partition_size)
        self.cfg = replace(self.cfg, partition_size=self._partition_size)
        for stage in self.stages:
            stage.set_partition_size(self._partition_size)

    @property
    def input_multiple(self) -> tuple[int, int]:
        """Input H and W must be multiples of these: the last stride times the partition size."""
        stride = self.strides[-1]
        return stride * self._partition_size[0], stride * self._partition_size[1]

    def check_input_size(self, height: int, width: int) -> None:
        """Raise ValueError unless every stage map of an ``height x width`` input divides by the partition."""
        mh, mw = self.input_multiple
        if height % mh or width % mw:
            fit_h, fit_w = -(-height // mh) * mh, -(-width // mw) * mw
            raise ValueError(
                f"RecurrentMaxViT: input {height}x{width} does not fit partition size {self._partition_size}: "
                f"H and W must be multiples of {mh}x{mw} (stride {self.strides[-1]} x partition); "
                f"zero-pad bottom/right to {fit_h}x{fit_w}"
            )

    def state_shapes(self, batch_size: int, height: int, width: int) -> list[StateShape]:
        """The shape of every state pair for a ``batch_size x height x width`` input, stage by stage: the LSTM's h
        (and c), then, on a stage with temporal attention, its memory's h and c shapes."""
        return [
            shape
            for stage, s in zip(self.stages, self.strides)
            for shape in stage.state_shapes(batch_size, height // s, width // s)
        ]

    @property
    def num_states(self) -> int:
        """The number of ``(h, c)`` pairs: one per stage, plus one per stage with temporal attention."""
        return sum(stage.num_states for stage in self.stages)

    @staticmethod
    def _split_time(x: torch.Tensor) -> tuple[torch.Tensor, int]:
        """``(N, C, H, W)`` (T=1) or ``(B, T, C, H, W)`` -> frames ``(B * T, C, H, W)`` and B."""
        if x.ndim == 4:
            return x, x.shape[0]
        if x.ndim == 5:
            return rearrange(x, "b t c h w -> (b t) c h w"), x.shape[0]
        raise ValueError(f"RecurrentMaxViT: expected (N, C, H, W) or (B, T, C, H, W) input, got {tuple(x.shape)}")

    def forward_with_states(
        self,
        x: torch.Tensor,
        states: Sequence[LstmState | None] | None = None,
    ) -> tuple[list[torch.Tensor], LstmStates]:
        """Functional forward without side effects.

        Args:
            x: ``(N, C, H, W)`` (one step) or ``(B, T, C, H, W)``.
            states: the :attr:`num_states` ``(h, c)`` pairs in :meth:`state_shapes` order (per stage the LSTM's
                ``(B, C_s, H_s, W_s)``, then a temporal attention's memory), or None for zeros.

        Returns:
            The 4 stage maps ``(B * T, C_s, H_s, W_s)`` and the state pairs after the last step.
        """
        frames, batch_size = self._split_time(x)
        self.check_input_size(frames.shape[-2], frames.shape[-1])
        if states is None:
            states = [None] * self.num_states
        elif len(states) != self.num_states:
            raise ValueError(f"RecurrentMaxViT: expected {self.num_states} state pairs, got {len(states)}")

        steps = frames.shape[0] // batch_size
        if steps == 1 or not self._steps_one_by_one(frames):
            return self._run_stages(frames, batch_size, states)
        # RVT's order: every stage on one time step, then the next step; outputs back in frame order b * T + t
        per_step = []
        for step in rearrange(frames, "(b t) c h w -> t b c h w", b=batch_size):
            features, states = self._run_stages(step, batch_size, states)
            per_step.append(features)
        features = [rearrange(torch.stack(maps, 1), "b t c h w -> (b t) c h w") for maps in zip(*per_step)]
        return features, states

    def _steps_one_by_one(self, frames: torch.Tensor) -> bool:
        """Whether T steps run one after the other (every stage per step) or batched over ``B * T`` frames.

        Same results either way. On CPU, step by step is measured faster (``benchmarks/bench_vs_rvt.py``: rvt-t
        384x640 T=5, 1.3-1.5x): one frame's activations stay in cache through a block, T frames' do not. On CUDA the
        batched form gives the GPU more parallel work. ``time_batching`` (``"auto"``, ``"steps"``, ``"batched"``)
        overrides."""
        mode = getattr(self, "time_batching", "auto")
        return mode == "steps" or (mode == "auto" and frames.device.type == "cpu")

    def _run_stages(
        self, frames: torch.Tensor, batch_size: int, states: Sequence[LstmState | None]
    ) -> tuple[list[torch.Tensor], LstmStates]:
        features, new_states, states = [], [], list(states)
        for stage in self.stages:
            frames, stage_states = stage(frames, batch_size, states[: stage.num_states])
            del states[: stage.num_states]
            features.append(frames)
            new_states += stage_states
        return features, new_states

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Stateful forward: continues from the stored state (if it fits ``x``) and stores the new one, detached."""
        frames, batch_size = self._split_time(x)
        height, width = frames.shape[-2:]
        self.check_input_size(height, width)
        states = self._matching_states(self.state_shapes(batch_size, height, width), x.device, x.dtype)
        features, new_states = self.forward_with_states(x, states)
        self._store_states(new_states, x.dtype)
        return features


def _rvt(size: str, **overrides) -> RecurrentMaxViT:
    return RecurrentMaxViT.from_cfg(RVT_CFGS[size], **overrides)


def rvt_tiny(**overrides) -> RecurrentMaxViT:
    """RVT-T backbone: embed 32, dim_head 32, 3.220 M parameters."""
    return _rvt("tiny", **overrides)


def rvt_small(**overrides) -> RecurrentMaxViT:
    """RVT-S backbone: embed 48, dim_head 24, 7.209 M parameters."""
    return _rvt("small", **overrides)


def rvt_base(**overrides) -> RecurrentMaxViT:
    """RVT-B backbone: embed 64, dim_head 32, 12.785 M parameters."""
    return _rvt("base", **overrides)
