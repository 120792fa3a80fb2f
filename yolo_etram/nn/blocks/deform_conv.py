"""Modulated deformable convolution (DCNv2, Zhu et al., CVPR 2019) with BatchNorm and SiLU, as a ``Conv`` row.

A plain ``k x k`` convolution predicts, per output pixel, ``2 k^2`` sampling offsets and ``k^2`` modulation masks
(mmcv's ``ModulatedDeformConv2dPack`` layout: two offset halves, then the mask logits through a sigmoid); torchvision's
``deform_conv2d`` samples the input there (bilinear) and applies the weights. The offset branch starts at zero, so a
fresh layer is an ordinary convolution at half gain (mask ``sigmoid(0) = 0.5``, which the BatchNorm absorbs). Offsets
are clamped to the map's size and NaN offsets set to 0 before sampling: torchvision's kernel crashes the process on
them (a NaN input, or the uninitialised tensor Ultralytics' FLOPs count feeds), where a clamped sample only reads
zero padding.

Export: TorchScript and OpenVINO (whose PyTorch converter translates it) carry ``torchvision::deform_conv2d``;
torchvision registers no ONNX exporter for it, so a model with this layer is refused by ``format=onnx`` in one line
(:data:`EXPORT_FORMATS`).

Usage (model YAML, arguments as a ``Conv`` row: ``[c2, k, s]``):
    - [16, 1, DeformConv, [32, 3]]          # a 3x3 deformable conv on the stride-4 output of rvt-t's neck
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torchvision.ops import deform_conv2d
from ultralytics.nn.modules import Conv

from .parsed_as import parsed_as

EXPORT_FORMATS = ("torchscript", "openvino")


class DeformConv(nn.Module, metaclass=parsed_as(Conv)):
    """``SiLU(BN(deform_conv2d(x, offsets(x), W, mask=sigmoid(masks(x)))))``.

    Args:
        c1: input channels (from ``parse_model``).
        c2: output channels.
        k: kernel size, odd (default 3).
        s: stride (default 1).
    """

    export_formats = EXPORT_FORMATS

    def __init__(self, c1: int, c2: int, k: int = 3, s: int = 1):
        super().__init__()
        if k < 1 or k % 2 == 0:
            raise ValueError(f"DeformConv kernel must be odd and positive, got {k}")
        self.k, self.s = k, s
        self.weight = nn.Parameter(torch.empty(c2, c1, k, k))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)  # nn.Conv2d's default
        self.offset = nn.Conv2d(c1, 3 * k * k, k, s, k // 2)
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)
        self.bn = nn.BatchNorm2d(c2)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dy_dx, mask = self.offset(x).split((2 * self.k * self.k, self.k * self.k), 1)
        lim = float(max(x.shape[-2:]))  # torchvision's kernel crashes on NaN or huge offsets (e.g. from a NaN input)
        dy_dx = torch.where(dy_dx.isnan(), torch.zeros_like(dy_dx), dy_dx).clamp(-lim, lim)
        y = deform_conv2d(x, dy_dx, self.weight, None, self.s, self.k // 2, mask=mask.sigmoid())
        return self.act(self.bn(y))
