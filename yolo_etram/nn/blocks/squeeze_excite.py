"""Squeeze-and-excitation (Hu et al., CVPR 2018), as timm's ``SEModule``: channel gates from global context.

``y = x * sigmoid(fc2(relu(fc1(mean_hw(x)))))`` with 1x1 convolutions (with bias) for the two fully connected layers
and ``rd_channels = make_divisible(c * rd_ratio, 8)`` hidden channels (timm's rounding, ``round_limit=0``). The
channels are unchanged. At initialisation the gates are near 0.5 everywhere, so a block starts as a scaled identity.

Usage (model YAML; the row gets its input channels like a ``Conv`` row, and ``c2`` must equal them):
    - [16, 1, SqueezeExcite, [32]]          # on the stride-4 output of rvt-t's neck (32 channels)
    - [19, 1, SqueezeExcite, [64, 0.25]]    # rd_ratio 1/4
"""

from __future__ import annotations

import torch
import torch.nn as nn
from timm.layers import make_divisible
from ultralytics.nn.modules import Conv

from .parsed_as import parsed_as


class SqueezeExcite(nn.Module, metaclass=parsed_as(Conv)):
    """Channel attention: ``x * sigmoid(fc2(relu(fc1(avgpool(x)))))``.

    Args:
        c1: input channels (from ``parse_model``).
        c2: output channels, which must equal ``c1`` (the YAML states the width, as for a ``Conv``).
        rd_ratio: hidden channels per input channel (default 1/16, as timm and the paper).
    """

    def __init__(self, c1: int, c2: int | None = None, rd_ratio: float = 1 / 16):
        super().__init__()
        if c2 not in (None, c1):
            raise ValueError(f"SqueezeExcite keeps its channels: its YAML width {c2} must equal its input's {c1}")
        if not 0 < rd_ratio <= 1:
            raise ValueError(f"SqueezeExcite rd_ratio must lie in (0, 1], got {rd_ratio}")
        rd = make_divisible(c1 * rd_ratio, 8, round_limit=0.0)
        self.fc1 = nn.Conv2d(c1, rd, 1)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(rd, c1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True)))).sigmoid()
