"""Small-object attention: CBAM's spatial attention (Woo et al., ECCV 2018, with a BatchNorm) for the high-resolution
levels, where to look. (Ultralytics' own `SpatialAttention` has no BatchNorm and is not a YAML layer.)

``y = x * sigmoid(bn(conv_k([mean_c(x), max_c(x)])))``: a ``k x k`` convolution (no bias, then BatchNorm) over the
channel mean and channel maximum gives one gate per pixel, shared by all channels. It suits the stride-4 and stride-8
levels, where a small object is a few cells among many of background. The channels are unchanged.

Usage (model YAML; the row gets its input channels like a ``Conv`` row, and ``c2`` must equal them):
    - [16, 1, SmallObjectAttention, [32]]       # stride 4 of rvt-t's neck
    - [19, 1, SmallObjectAttention, [64, 7]]    # stride 8, a 7x7 kernel (the default)
"""

from __future__ import annotations

import torch
import torch.nn as nn
from ultralytics.nn.modules import Conv

from .parsed_as import parsed_as


class SmallObjectAttention(nn.Module, metaclass=parsed_as(Conv)):
    """Per-pixel gates from the channel mean and maximum.

    Args:
        c1: input channels (from ``parse_model``).
        c2: output channels, which must equal ``c1``.
        k: kernel size, odd (default 7, as CBAM).
    """

    def __init__(self, c1: int, c2: int | None = None, k: int = 7):
        super().__init__()
        if c2 not in (None, c1):
            raise ValueError(
                f"SmallObjectAttention keeps its channels: its YAML width {c2} must equal its input's {c1}"
            )
        if k < 1 or k % 2 == 0:
            raise ValueError(f"SmallObjectAttention kernel must be odd and positive, got {k}")
        self.conv = nn.Conv2d(2, 1, k, padding=k // 2, bias=False)
        self.bn = nn.BatchNorm2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat((x.mean(1, keepdim=True), x.amax(1, keepdim=True)), 1)
        return x * self.bn(self.conv(pooled)).sigmoid()
