"""Pure-PyTorch recurrent layers for event-camera detection (RVT's MaxViT-LSTM backbone).

Imports only torch, timm, einops, numpy and the standard library.
"""

from .layers import ConvDownsample, ConvLSTMCell, LstmState, MaxViTAttentionPair
from .maxvit_rnn import (
    RVT_CFGS,
    RecurrentMaxViT,
    RecurrentMaxViTCfg,
    RecurrentMaxViTStage,
    rvt_base,
    rvt_small,
    rvt_tiny,
)
from .rvt_checkpoint import (
    LoadReport,
    convert_rvt_backbone_state_dict,
    infer_rvt_backbone_cfg,
    load_rvt_backbone,
    read_rvt_state_dict,
    strip_lightning_prefix,
)
from .state import LstmStates, RecurrentStateMixin, StateShape, pair_shapes, state_bank, stateful_layers
from .temporal_attention import TemporalAttention, TemporalAttentionCfg

__all__ = [
    "ConvDownsample",
    "ConvLSTMCell",
    "MaxViTAttentionPair",
    "LstmState",
    "LstmStates",
    "StateShape",
    "pair_shapes",
    "TemporalAttention",
    "TemporalAttentionCfg",
    "RecurrentStateMixin",
    "state_bank",
    "stateful_layers",
    "RecurrentMaxViT",
    "RecurrentMaxViTCfg",
    "RecurrentMaxViTStage",
    "RVT_CFGS",
    "rvt_tiny",
    "rvt_small",
    "rvt_base",
    "LoadReport",
    "convert_rvt_backbone_state_dict",
    "infer_rvt_backbone_cfg",
    "load_rvt_backbone",
    "read_rvt_state_dict",
    "strip_lightning_prefix",
]
